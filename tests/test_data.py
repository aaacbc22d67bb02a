"""Tests for hwnas.data: dataset sources, cache, augmentation and batching."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hwnas.data import BatchIterator, Dataset, augment_batch, calibration_subset, load_dataset
from hwnas.data import sources
from hwnas.errors import DataError, UserError

SHARED_CIFAR = Path("/work/shared/datasets/cifar10-small")


# --------------------------------------------------------------------------- helpers


def _rand_img(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_image_folder(
    root: Path,
    classes: dict[str, tuple[int, int]] | None = None,
    size: int | tuple[int, int] = 6,
    seed: int = 0,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Write train/<cls>/NN.png and val/<cls>/NN.png; return the pixel arrays in file order."""
    classes = classes or {"cat": (3, 2), "dog": (2, 2), "ant": (2, 1)}
    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    arrays: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "val": {}}
    for cls, (n_train, n_val) in classes.items():
        for split, n in (("train", n_train), ("val", n_val)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            arrays[split][cls] = []
            for i in range(n):
                a = _rand_img(rng, h, w)
                Image.fromarray(a).save(d / f"{i:02d}.png")
                arrays[split][cls].append(a)
    return arrays


def make_cifar_folder(root: Path, n_per_batch: int = 6, n_test: int = 4, meta: bool = True) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out: dict[str, np.ndarray] = {}
    for name, n in (("data_batch_1", n_per_batch), ("data_batch_2", n_per_batch), ("test_batch", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        labels[0], labels[1] = 0, 9  # make sure max label is 9
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2)
        out[name] = data
        out[name + "_labels"] = np.array(labels)
    if meta:
        names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return out


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _rows(x: torch.Tensor) -> list[bytes]:
    return sorted(bytes(r) for r in x.reshape(x.shape[0], -1).numpy())


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_classes(digits: Dataset) -> None:
    assert digits.name == "digits"
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.num_classes == 10 and digits.image_size == 8
    assert digits.train_x.shape == (1437, 3, 8, 8) and digits.val_x.shape == (360, 3, 8, 8)
    for t in (digits.train_x, digits.val_x):
        assert t.dtype == torch.uint8 and t.is_contiguous() and t.device.type == "cpu"
        assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 0], t[:, 2])  # gray replicated
    assert digits.train_y.dtype == torch.int64 and digits.val_y.dtype == torch.int64
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0  # 16 -> 255 scaling


def test_digits_split_is_stratified_partition(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    b = load_digits()
    full = np.clip(np.rint(b.images * 255 / 16), 0, 255).astype(np.uint8)
    full_x = torch.from_numpy(full).unsqueeze(1).expand(-1, 3, -1, -1)
    # Train + val is exactly the original multiset of images: nothing lost, nothing shared.
    both = torch.cat([digits.train_x, digits.val_x])
    assert _rows(both) == _rows(full_x)
    tr_counts = torch.bincount(digits.train_y, minlength=10).double()
    va_counts = torch.bincount(digits.val_y, minlength=10).double()
    frac = va_counts / (tr_counts + va_counts)
    assert torch.all((frac - 0.2).abs() < 0.02), frac


def test_digits_deterministic_and_stats(digits: Dataset) -> None:
    again = load_dataset("digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.val_y, digits.val_y)
    assert again.fingerprint == digits.fingerprint and len(digits.fingerprint) >= 16
    int(digits.fingerprint, 16)  # hex
    ref = digits.train_x.double() / 255
    mean = ref.mean(dim=(0, 2, 3))
    std = ref.std(dim=(0, 2, 3), unbiased=False)
    assert np.allclose(digits.mean, mean.numpy(), atol=1e-9)
    assert np.allclose(digits.std, std.numpy(), atol=1e-9)


def test_digits_store_size_resizes() -> None:
    ds = load_dataset(" Digits ", store_size=16)
    assert ds.image_size == 16 and ds.train_x.shape == (1437, 3, 16, 16)
    assert ds.fingerprint != load_dataset("digits").fingerprint


# --------------------------------------------------------------------------- ImageFolder


def test_image_folder_round_trip_exact_pixels(tmp_path: Path) -> None:
    arrays = make_image_folder(tmp_path / "ds")
    ds = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert ds.name == str((tmp_path / "ds").resolve())
    assert ds.classes == ["ant", "cat", "dog"]
    assert ds.image_size == 6 and ds.train_x.shape == (7, 3, 6, 6) and ds.val_x.shape == (5, 3, 6, 6)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("val", ds.val_x, ds.val_y)):
        expect = [a for c in ds.classes for a in arrays[split][c]]
        labels = [i for i, c in enumerate(ds.classes) for _ in arrays[split][c]]
        assert y.tolist() == labels
        for img, a in zip(x, expect):
            assert np.array_equal(img.permute(1, 2, 0).numpy(), a)
    ref = ds.train_x.double() / 255
    assert np.allclose(ds.mean, ref.mean(dim=(0, 2, 3)).numpy())


def test_image_folder_second_load_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image_folder(tmp_path / "ds")
    first = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(sources, "_decode_image", boom)
    monkeypatch.setattr(sources, "_probe_size", boom)
    second = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.val_y, second.val_y)
    assert first.fingerprint == second.fingerprint and first.mean == second.mean
    assert second.classes == first.classes and second.name == first.name


def test_image_folder_cache_invalidated_when_file_changes(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "ds")
    first = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    target = tmp_path / "ds" / "train" / "ant" / "00.png"
    new = np.full((6, 6, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # stale entry replaced, not accumulated
    assert np.array_equal(second.train_x[0].permute(1, 2, 0).numpy(), new)
    assert not torch.equal(first.train_x[0], second.train_x[0])
    assert second.fingerprint != first.fingerprint


def test_image_folder_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "ds")
    first = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(b"not a torch file" * 10)
    second = load_dataset(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert torch.equal(first.train_x, second.train_x) and first.fingerprint == second.fingerprint
    rebuilt = torch.load(cache_file, weights_only=True)  # the damaged file was replaced
    assert torch.equal(rebuilt["train_x"], first.train_x)


def test_image_folder_mixed_sizes_resized(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root, classes={"a": (1, 1), "b": (1, 1)}, size=(10, 20))
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "train" / "a" / "big.png")
    ds = load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.image_size == sources.DEFAULT_VARIABLE_STORE_SIZE
    small = load_dataset(str(root), cache_dir=tmp_path / "cache", store_size=5)
    assert small.train_x.shape == (3, 3, 5, 5) and small.val_x.shape == (2, 3, 5, 5)


def test_image_folder_centre_crop(tmp_path: Path) -> None:
    """A wide image keeps its centre: left third red, middle green, right third blue -> all green."""
    root = tmp_path / "ds"
    make_image_folder(root, classes={"a": (1, 1), "b": (1, 1)}, size=4)
    wide = np.zeros((4, 12, 3), np.uint8)
    wide[:, :4, 0] = 255
    wide[:, 4:8, 1] = 255
    wide[:, 8:, 2] = 255
    Image.fromarray(wide).save(root / "train" / "a" / "00.png")
    ds = load_dataset(str(root), cache_dir=tmp_path / "cache", store_size=4)
    img = ds.train_x[0]
    assert torch.all(img[1] == 255) and torch.all(img[0] == 0) and torch.all(img[2] == 0)


def test_image_folder_grayscale_and_rgba_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root, classes={"a": (1, 1), "b": (1, 1)}, size=4)
    Image.fromarray(np.full((4, 4), 100, np.uint8), mode="L").save(root / "train" / "a" / "00.png")
    Image.fromarray(np.full((4, 4, 4), 50, np.uint8), mode="RGBA").save(root / "train" / "b" / "00.png")
    ds = load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert torch.all(ds.train_x[0] == 100) and torch.all(ds.train_x[1] == 50)


# --------------------------------------------------------------------------- errors


def test_error_unknown_spec(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope") as ei:
        load_dataset(str(missing))
    msg = str(ei.value)
    assert "digits" in msg and "\n" not in msg
    assert isinstance(ei.value, UserError)


def test_error_folder_neither_format(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="neither") as ei:
        load_dataset(str(tmp_path / "junk"), cache_dir=tmp_path / "c")
    assert str((tmp_path / "junk").resolve()) in str(ei.value)
    assert "train/" in str(ei.value) and "data_batch" in str(ei.value)


def test_error_missing_val_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match=r"no val/"):
        load_dataset(str(root), cache_dir=tmp_path / "c")


@pytest.mark.parametrize("split", ["train", "val"])
def test_error_empty_split(tmp_path: Path, split: str) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    other = "val" if split == "train" else "train"
    shutil.rmtree(root / split)
    (root / split).mkdir()
    with pytest.raises(DataError, match=f"{split} split is empty") as ei:
        load_dataset(str(root), cache_dir=tmp_path / "c")
    assert str(root.resolve()) in str(ei.value)
    assert (root / other).is_dir()


def test_error_class_folder_without_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    (root / "val" / "owl").mkdir()
    (root / "train" / "owl").mkdir()
    (root / "train" / "owl" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="has no images") as ei:
        load_dataset(str(root), cache_dir=tmp_path / "c")
    assert "owl" in str(ei.value)


def test_error_fewer_than_two_classes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root, classes={"only": (2, 1)})
    with pytest.raises(DataError, match="needs at least 2 classes"):
        load_dataset(str(root), cache_dir=tmp_path / "c")


def test_error_val_class_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(DataError) as ei:
        load_dataset(str(root), cache_dir=tmp_path / "c")
    msg = str(ei.value)
    assert "missing class(es) dog" in msg and "extra class(es) wolf" in msg


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"hello world"])
def test_error_corrupt_image_names_file(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    bad = root / "train" / "dog" / "zz_bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="corrupt") as ei:
        load_dataset(str(root), cache_dir=tmp_path / "c")
    assert "zz_bad.png" in str(ei.value) and "\n" not in str(ei.value)


def test_error_truncated_png_names_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image_folder(root)
    good = (root / "train" / "cat" / "00.png").read_bytes()
    (root / "train" / "cat" / "00.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cat.00\.png"):
        load_dataset(str(root), cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- CIFAR python batches


def test_cifar_python_folder(tmp_path: Path) -> None:
    raw = make_cifar_folder(tmp_path / "cifar")
    ds = load_dataset(str(tmp_path / "cifar"))
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and ds.num_classes == 10
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.val_x.shape == (4, 3, 32, 32)
    assert torch.equal(ds.train_x[0], torch.from_numpy(raw["data_batch_1"][0].reshape(3, 32, 32)))
    assert torch.equal(ds.train_x[6], torch.from_numpy(raw["data_batch_2"][0].reshape(3, 32, 32)))
    assert ds.val_y.tolist() == raw["test_batch_labels"].tolist()
    assert ds.name == str((tmp_path / "cifar").resolve())


def test_cifar_without_meta_uses_numbers(tmp_path: Path) -> None:
    make_cifar_folder(tmp_path / "cifar", meta=False)
    ds = load_dataset(str(tmp_path / "cifar"), store_size=16)
    assert ds.classes == [str(i) for i in range(10)] and ds.image_size == 16


def test_cifar_bad_batch_names_file(tmp_path: Path) -> None:
    make_cifar_folder(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset(str(tmp_path / "cifar"))


def test_cifar_refuses_code_in_pickle(tmp_path: Path) -> None:
    make_cifar_folder(tmp_path / "cifar")

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(tmp_path / "cifar"))


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="shared cifar10-small not present")
def test_shared_cifar10_small(tmp_path: Path) -> None:
    ds = load_dataset(str(SHARED_CIFAR), cache_dir=tmp_path)
    assert ds.train_x.shape == (10000, 3, 32, 32) and ds.val_x.shape == (2000, 3, 32, 32)
    assert ds.num_classes == 10 and torch.bincount(ds.train_y).min() > 0
    assert all(0.2 < m < 0.7 for m in ds.mean) and all(0.1 < s < 0.4 for s in ds.std)


# --------------------------------------------------------------------------- augment_batch


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_augment_eval_constant_image_normalises() -> None:
    x = torch.empty(2, 3, 8, 8, dtype=torch.uint8)
    for c, v in enumerate((10, 128, 250)):
        x[:, c] = v
    out = augment_batch(x, 12, MEAN, STD, train=False)
    assert out.shape == (2, 3, 12, 12) and out.dtype == torch.float32
    for c, v in enumerate((10, 128, 250)):
        assert torch.allclose(out[:, c], torch.tensor((v / 255 - MEAN[c]) / STD[c]), atol=1e-5)


def test_augment_eval_same_resolution_is_exact_normalise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    out = augment_batch(x, 8, MEAN, STD, train=False)
    ref = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_augment_train_deterministic_with_generator() -> None:
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    a = augment_batch(x, 12, MEAN, STD, train=True, generator=torch.Generator().manual_seed(5))
    b = augment_batch(x, 12, MEAN, STD, train=True, generator=torch.Generator().manual_seed(5))
    c = augment_batch(x, 12, MEAN, STD, train=True, generator=torch.Generator().manual_seed(6))
    assert a.shape == (8, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def _ramp_batch(b: int = 64, size: int = 16) -> torch.Tensor:
    """Brightness strictly increasing left to right, constant down each column."""
    ramp = torch.arange(size, dtype=torch.float32) * 12 + 40
    return ramp.to(torch.uint8).view(1, 1, 1, size).expand(b, 3, size, size).contiguous()


def _centre_dx(out: torch.Tensor) -> torch.Tensor:
    """Horizontal differences in the centre, which translation by <= H//8 never pushes into padding."""
    centre = out[:, 0, 4:12, 4:12]
    return centre[:, :, 1:] - centre[:, :, :-1]


def test_augment_flip_false_never_flips() -> None:
    x = _ramp_batch()
    out = augment_batch(x, 16, MEAN, STD, train=True, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.all(_centre_dx(out) > 0)  # every image still brightens to the right


def test_augment_flip_true_flips_some() -> None:
    x = _ramp_batch()
    out = augment_batch(x, 16, MEAN, STD, train=True, generator=torch.Generator().manual_seed(0))
    dx = _centre_dx(out)
    flipped = torch.all(dx < 0, dim=(1, 2))
    kept = torch.all(dx > 0, dim=(1, 2))
    assert bool(torch.all(flipped | kept))  # each image is either mirrored or not, never smeared
    assert 0 < int(flipped.sum()) < 64


def test_augment_train_crops_differ_across_batch() -> None:
    one = torch.randint(0, 256, (1, 3, 16, 16), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    x = one.expand(16, -1, -1, -1).contiguous()
    out = augment_batch(x, 16, MEAN, STD, train=True, flip=False, generator=torch.Generator().manual_seed(0))
    distinct = {bytes(o.numpy().tobytes()) for o in out}
    assert len(distinct) > 4
    # Each output is exactly a whole-pixel crop of the image zero-padded by H//8 = 2.
    padded = torch.nn.functional.pad(one.float() / 255, (2, 2, 2, 2))
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    crops = [((padded[:, :, dy : dy + 16, dx : dx + 16] - m) / s)[0] for dy in range(5) for dx in range(5)]
    for o in out:
        assert any(torch.allclose(o, c, atol=1e-4) for c in crops)


def test_augment_autocast_and_channels_last() -> None:
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    ref = augment_batch(x, 10, MEAN, STD, train=True, generator=torch.Generator().manual_seed(1))
    cl = augment_batch(x.contiguous(memory_format=torch.channels_last), 10, MEAN, STD, train=True,
                       generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ref, cl, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ac = augment_batch(x, 10, MEAN, STD, train=True, generator=torch.Generator().manual_seed(1))
        ev = augment_batch(x, 10, MEAN, STD, train=False)
    assert ac.dtype == torch.float32 and ev.dtype == torch.float32
    assert torch.allclose(ref, ac, atol=1e-5)


def test_augment_rejects_float_input() -> None:
    with pytest.raises(TypeError):
        augment_batch(torch.zeros(1, 3, 4, 4), 4, MEAN, STD, train=False)


# --------------------------------------------------------------------------- BatchIterator


def _epoch(it: BatchIterator) -> tuple[list[int], list[int]]:
    xs, ys = [], []
    for xb, yb in it:
        assert xb.dtype == torch.uint8 and yb.dtype == torch.int64
        xs.append(xb)
        ys.extend(yb.tolist())
    return torch.cat(xs)[:, 0, 0, 0].tolist(), ys


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return x, torch.arange(n, dtype=torch.int64)


def test_batch_iterator_covers_every_index_once() -> None:
    x, y = _data(23)
    it = BatchIterator(x, y, 5, shuffle=True, seed=0, drop_last=False)
    assert len(it) == 5
    xs, ys = _epoch(it)
    assert sorted(ys) == list(range(23)) and xs == ys  # x and y stay paired
    assert ys != list(range(23))  # actually shuffled
    sizes = [len(b[1]) for b in it]
    assert sizes == [5, 5, 5, 5, 3]


def test_batch_iterator_drop_last() -> None:
    x, y = _data(23)
    it = BatchIterator(x, y, 5, shuffle=True, seed=0, drop_last=True)
    assert len(it) == 4 and [len(b[1]) for b in it] == [5, 5, 5, 5]


def test_batch_iterator_epochs_and_seeds() -> None:
    x, y = _data(50)
    a = BatchIterator(x, y, 8, shuffle=True, seed=3, drop_last=False)
    b = BatchIterator(x, y, 8, shuffle=True, seed=3, drop_last=False)
    e0 = _epoch(a)[1]
    assert e0 == _epoch(b)[1]
    a.set_epoch(1)
    e1 = _epoch(a)[1]
    assert e1 != e0 and sorted(e1) == sorted(e0)
    b.set_epoch(1)
    assert _epoch(b)[1] == e1
    other_seed = BatchIterator(x, y, 8, shuffle=True, seed=4, drop_last=False)
    assert _epoch(other_seed)[1] != e0
    plain = BatchIterator(x, y, 8, shuffle=False, seed=3, drop_last=False)
    assert _epoch(plain)[1] == list(range(50))


@pytest.mark.parametrize("n", [21, 22])
def test_batch_iterator_sharding(n: int) -> None:
    x, y = _data(n)
    ranks = [BatchIterator(x, y, 4, shuffle=True, seed=7, drop_last=False, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    assert len(ranks[0]) == len(ranks[1]) == 3
    shards = [_epoch(r)[1] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == (n + 1) // 2
    assert set(shards[0]) | set(shards[1]) == set(range(n))
    overlap = len(shards[0]) + len(shards[1]) - n
    assert overlap == (n % 2)  # only the wrapped padding repeats
    dl = [BatchIterator(x, y, 4, shuffle=True, seed=7, drop_last=True, rank=r, world_size=2) for r in range(2)]
    assert len(dl[0]) == len(dl[1]) == ((n + 1) // 2) // 4


def test_batch_iterator_iter_from() -> None:
    x, y = _data(30)
    it = BatchIterator(x, y, 4, shuffle=True, seed=1, drop_last=False)
    it.set_epoch(5)
    full = [b[1].tolist() for b in it]
    assert [b[1].tolist() for b in it.iter_from(3)] == full[3:]
    assert list(it.iter_from(len(it))) == []
    with pytest.raises(ValueError):
        list(it.iter_from(-1))


def test_batch_iterator_rejects_bad_args() -> None:
    x, y = _data(4)
    with pytest.raises(ValueError):
        BatchIterator(x, y[:3], 2, shuffle=False, seed=0, drop_last=False)
    with pytest.raises(ValueError):
        BatchIterator(x, y, 2, shuffle=False, seed=0, drop_last=False, rank=2, world_size=2)


# --------------------------------------------------------------------------- calibration_subset


def test_calibration_subset(digits: Dataset) -> None:
    a = calibration_subset(digits, n=100, seed=0)
    assert a.shape == (100, 3, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, calibration_subset(digits, n=100, seed=0))
    assert not torch.equal(a, calibration_subset(digits, n=100, seed=1))
    train_rows = set(_rows(digits.train_x))
    val_only = set(_rows(digits.val_x)) - train_rows
    assert set(_rows(a)) <= train_rows and not (set(_rows(a)) & val_only)
    assert torch.equal(calibration_subset(digits, n=5000), digits.train_x)


def test_stratified_indices_keep_class_shares_and_are_deterministic() -> None:
    """--val-images: each class within one image of its share, a pure function of (labels, n, seed)."""
    from hwnas.data import stratified_indices

    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    for n in (1, 7, 20, 33, 99):
        idx = stratified_indices(labels, n, seed=3)
        assert idx.shape == (n,) and len(set(idx.tolist())) == n and torch.equal(idx, idx.sort().values)
        got = torch.bincount(labels[idx], minlength=4).double()
        want = torch.bincount(labels, minlength=4).double() * n / 100
        assert (got - want).abs().max() < 1.0, (n, got, want)
        assert torch.equal(idx, stratified_indices(labels.clone(), n, seed=3))
    assert not torch.equal(stratified_indices(labels, 20, seed=3), stratified_indices(labels, 20, seed=4))
    # a plain random subset of 20 would often miss class 3 (5 %); the stratified one has exactly 1
    assert int((labels[stratified_indices(labels, 20, seed=0)] == 3).sum()) == 1


def test_val_subset_is_class_stratified(digits: Dataset) -> None:
    sub = digits.with_val_subset(50, seed=0)
    counts = torch.bincount(sub.val_y, minlength=10).double()
    want = torch.bincount(digits.val_y, minlength=10).double() * 50 / len(digits.val_y)
    assert sub.val_y.shape == (50,) and (counts - want).abs().max() < 1.0
    again = digits.with_val_subset(50, seed=0)
    assert torch.equal(sub.val_x, again.val_x) and sub.fingerprint == again.fingerprint != digits.fingerprint


def test_augment_cutout_blanks_one_square_per_image() -> None:
    """Cutout sets one square (side = fraction x resolution, clipped at the border) to the mean, i.e. 0 after
    normalisation, in every channel; cutout=0 changes nothing and draws nothing."""
    x = torch.full((32, 3, 16, 16), 255, dtype=torch.uint8)  # normalises to 2.5 / 2.04 / 1.67, padding to < 0
    plain = augment_batch(x, 16, MEAN, STD, train=True, flip=False, generator=torch.Generator().manual_seed(3))
    same = augment_batch(x, 16, MEAN, STD, train=True, flip=False, cutout=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, same) and not torch.any(plain == 0)
    out = augment_batch(x, 16, MEAN, STD, train=True, flip=False, cutout=0.25, generator=torch.Generator().manual_seed(3))
    holes = out == 0
    assert torch.equal(holes[:, 0], holes[:, 1]) and torch.equal(holes[:, 0], holes[:, 2])
    for h in holes[:, 0]:
        ys, xs = torch.nonzero(h, as_tuple=True)
        rows, cols = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert rows * cols == len(ys)  # one filled rectangle
        assert 2 <= rows <= 4 and 2 <= cols <= 4  # a 4x4 square, at worst half of it past a border
    assert (holes[:, 0].sum(dim=(1, 2)) == 16).any()  # most squares lie inside the image

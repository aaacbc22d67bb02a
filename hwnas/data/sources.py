"""Dataset sources: the built-in `digits`, ImageFolder trees and CIFAR-10 python batches.

Everything ends up as one in-memory uint8 tensor per split, because the supernet
trainer augments whole batches on the accelerator (see `augment.py`); per-image
Python work happens once, at load time, and ImageFolder decodes are cached on disk
so later runs start in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import DataError
from hwnas.fileio import atomic_path

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File suffixes (lower-cased) that count as images in an ImageFolder tree."""

DEFAULT_VARIABLE_STORE_SIZE = 64
"""Stored side length when ImageFolder images differ in size and no store_size is given."""

STD_FLOOR = 1e-3
"""Lower bound on per-channel std so normalisation never divides by ~0 (e.g. a blank channel)."""

_CACHE_VERSION = 1  # bump when the cache layout or decode behaviour changes
_DIGITS_SPEC = "digits"
_VALID_SPECS = (
    "use 'digits', an ImageFolder root (train/<class>/*.png|jpg|jpeg|bmp|webp and val/<class>/...) "
    "or a CIFAR-10 python folder (data_batch_1..5, test_batch)"
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fully decoded dataset held as uint8 tensors.

    `eq=False` keeps identity equality/hashing: comparing tensors field by field is
    ambiguous and a frozen dataclass would otherwise try to hash the class list.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fingerprint: str

    def __post_init__(self) -> None:
        # Cheap structural checks: a malformed Dataset is a programming error, caught early.
        for split, x, y in (("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
                raise ValueError(f"{split}_x must be uint8 [N, 3, S, S], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"{split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[2:] != self.val_x.shape[2:]:
            raise ValueError("train and val images must have the same size")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Stored side length H (images are square)."""
        return int(self.train_x.shape[-2])

    def with_val_subset(self, n: int, seed: int = 0) -> "Dataset":
        """The same data with a fixed, seed-determined, class-stratified `n` validation images (all if
        fewer): a cheaper score for search, the same images for every subnet so differences reflect the
        architecture, and every class in its share so a small subset does not favour some classes."""
        total = int(self.val_x.shape[0])
        if n >= total:
            return self
        idx = stratified_indices(self.val_y, n, seed)
        from dataclasses import replace

        return replace(self, val_x=self.val_x.index_select(0, idx), val_y=self.val_y.index_select(0, idx),
                       fingerprint=f"{self.fingerprint}:val{n}st{seed}")

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, classes={self.num_classes}, train={len(self.train_y)}, "
            f"val={len(self.val_y)}, size={self.image_size}, fingerprint={self.fingerprint[:12]})"
        )


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of `n` of `labels`, each class getting its proportional share (largest remainder:
    within one image of n * class_count / total; ties to the lower class index), the images of a class
    picked by a permutation seeded with (seed, class). A pure function of (labels, n, seed)."""
    y = labels.to(torch.int64).reshape(-1)
    total = int(y.shape[0])
    if not 0 <= n <= total:
        raise ValueError(f"n must be in 0..{total}, got {n}")
    classes, counts = torch.unique(y, sorted=True, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    left = n - int(quota.sum())
    if left:
        frac = (exact - quota.double()).tolist()
        order = sorted(range(len(frac)), key=lambda k: (-frac[k], k))
        for k in order[:left]:
            quota[k] += 1
    picked = []
    for k, (c, q) in enumerate(zip(classes.tolist(), quota.tolist())):
        if q == 0:
            continue
        members = torch.nonzero(y == c).reshape(-1)
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(c))
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    if not picked:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(picked).sort().values


# --------------------------------------------------------------------------- public entry


def load_dataset(
    spec: str, cache_dir: str | os.PathLike[str] | None = None, store_size: int | None = None
) -> Dataset:
    """Resolve a DATA spec (`digits` or a folder) to a `Dataset`; nothing is downloaded.

    Raises `DataError` (exit 2) with one line naming the path and what would be valid.
    """
    if store_size is not None and (not isinstance(store_size, int) or store_size < 1):
        raise DataError(f"store_size must be a positive integer, got {store_size!r}")
    if spec.strip().lower() == _DIGITS_SPEC:
        return _load_digits(store_size)
    root = Path(spec).expanduser()
    if not root.exists():
        raise DataError(f"DATA {spec!r}: not 'digits' and no such folder ({root.resolve()}); {_VALID_SPECS}")
    root = root.resolve()
    if not root.is_dir():
        raise DataError(f"DATA {root}: is a file, not a dataset folder; {_VALID_SPECS}")
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train or has_val:
        if not (has_train and has_val):
            missing = "val/" if has_train else "train/"
            raise DataError(
                f"DATA {root}: ImageFolder root has no {missing} folder; it needs both train/<class>/ and val/<class>/"
            )
        return _load_image_folder(root, _cache_dir(cache_dir), store_size)
    if (root / "test_batch").is_file() and any(root.glob("data_batch_*")):
        return _load_cifar(root, store_size)
    raise DataError(
        f"DATA {root}: neither an ImageFolder root (needs train/ and val/) nor CIFAR-10 batches; {_VALID_SPECS}"
    )


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/hwnas/data`, else `~/.cache/hwnas/data`."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "hwnas" / "data"


# --------------------------------------------------------------------------- shared helpers


def _one_line(e: BaseException) -> str:
    """Exception text squeezed to one line: DataError messages are printed as a single CLI line."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean/std in 0..1 units, from exact integer sums (order independent, reproducible)."""
    n = x.shape[0] * x.shape[2] * x.shape[3]
    s = torch.zeros(3, dtype=torch.int64)
    sq = torch.zeros(3, dtype=torch.int64)
    for chunk in torch.split(x, 2048):
        c = chunk.to(torch.int64)
        s += c.sum(dim=(0, 2, 3))
        sq += (c * c).sum(dim=(0, 2, 3))
    mean = s.double() / n
    var = (sq.double() / n - mean * mean).clamp_min(0.0)
    std = (var.sqrt() / 255.0).clamp_min(STD_FLOOR)
    m = (mean / 255.0).tolist()
    sd = std.tolist()
    return (m[0], m[1], m[2]), (sd[0], sd[1], sd[2])


def _fingerprint(kind: str, classes: Sequence[str], tensors: Sequence[torch.Tensor]) -> str:
    """Hash of the source kind, class names, shapes and the exact bytes of every split.

    Content-based rather than path-based so a moved or copied folder keeps its key,
    while any changed pixel or label changes it.
    """
    h = hashlib.blake2b(digest_size=16)
    header = {"kind": kind, "classes": list(classes), "shapes": [list(t.shape) for t in tensors]}
    h.update(json.dumps(header, sort_keys=True).encode())
    for t in tensors:
        h.update(t.contiguous().numpy())
    return h.hexdigest()


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize square uint8 [N,3,S,S] images to size x size (antialiased bilinear), chunked to bound memory."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = [
        F.interpolate(c.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for c in torch.split(x, 4096)
    ]
    return torch.cat(out).contiguous()


def _make_dataset(name: str, kind: str, classes: list[str], tx: torch.Tensor, ty: torch.Tensor,
                  vx: torch.Tensor, vy: torch.Tensor) -> Dataset:
    tx, ty, vx, vy = (t.contiguous() for t in (tx, ty, vx, vy))
    mean, std = _channel_stats(tx)
    return Dataset(name, classes, tx, ty, vx, vy, mean, std, _fingerprint(kind, classes, (tx, ty, vx, vy)))


# --------------------------------------------------------------------------- digits


def _load_digits(store_size: int | None) -> Dataset:
    """scikit-learn's bundled 8x8 digits, gray replicated to RGB, stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # [N, 8, 8], 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    gray = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(gray).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(labels)
    idx = np.arange(len(labels))
    tr, va = train_test_split(idx, test_size=0.2, stratify=labels, random_state=0)
    tr, va = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
    tx, vx = x[tr], x[va]
    if store_size is not None:
        tx, vx = _resize_uint8(tx, store_size), _resize_uint8(vx, store_size)
    classes = [str(i) for i in range(10)]
    return _make_dataset(_DIGITS_SPEC, "digits", classes, tx, y[tr], vx, y[va])


# --------------------------------------------------------------------------- CIFAR-10 python batches


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: a dataset file must not run code."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means an unusable file
        raise DataError(f"DATA {path}: not a readable CIFAR-10 python batch ({_one_line(e)})") from None


def _get(d: Any, key: str) -> Any:
    """CIFAR pickles use bytes keys (python 2); home-made ones may use str."""
    if isinstance(d, dict):
        if key.encode() in d:
            return d[key.encode()]
        if key in d:
            return d[key]
    return None


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = _read_pickle(path)
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DataError(f"DATA {path}: CIFAR-10 batch must be a dict with b'data' and b'labels'")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"DATA {path}: expected b'data' [N, 3072] and N b'labels', got {data.shape} and {labels.shape}")
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > 255):
            raise DataError(f"DATA {path}: pixel values must be 0..255")
        data = data.astype(np.uint8)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise DataError(f"DATA {path}: labels must be non-negative integers")
    x = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return x, torch.from_numpy(labels.astype(np.int64))


def _load_cifar(root: Path, store_size: int | None) -> Dataset:
    """CIFAR-10 "python version": train = data_batch_*, val = test_batch, 32x32."""

    def batch_no(p: Path) -> tuple[int, str]:
        suffix = p.name[len("data_batch_"):]
        return (int(suffix), p.name) if suffix.isdigit() else (1 << 30, p.name)

    train_files = sorted((p for p in root.glob("data_batch_*") if p.is_file()), key=batch_no)
    parts = [_read_cifar_batch(p) for p in train_files]
    tx = torch.cat([p[0] for p in parts])
    ty = torch.cat([p[1] for p in parts])
    vx, vy = _read_cifar_batch(root / "test_batch")
    if len(ty) == 0:
        raise DataError(f"DATA {root}: train split is empty (data_batch_* hold no images)")
    if len(vy) == 0:
        raise DataError(f"DATA {root}: val split is empty ({root / 'test_batch'} holds no images)")
    n_cls = int(max(ty.max().item(), vy.max().item())) + 1
    meta_path = root / "batches.meta"
    if meta_path.is_file():
        names = _get(_read_pickle(meta_path), "label_names")
        if names is None:
            raise DataError(f"DATA {meta_path}: expected a dict with b'label_names'")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if len(classes) < n_cls:
            raise DataError(f"DATA {meta_path}: {len(classes)} label_names but labels go up to {n_cls - 1}")
    else:
        classes = [str(i) for i in range(n_cls)]
    if len(classes) < 2:
        raise DataError(f"DATA {root}: needs at least 2 classes, found {len(classes)}")
    if store_size is not None:
        tx, vx = _resize_uint8(tx, store_size), _resize_uint8(vx, store_size)
    return _make_dataset(str(root), "cifar10-python", classes, tx, ty, vx, vy)


# --------------------------------------------------------------------------- ImageFolder


@dataclass(frozen=True)
class _Scan:
    """The files of an ImageFolder tree, in a fixed order (class, then file name)."""

    classes: list[str]
    files: dict[str, list[tuple[str, str, int, int, int]]]  # split -> (path, relpath, label, size, mtime_ns)


def _list_classes(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _is_image_entry(e: os.DirEntry[str]) -> bool:
    return e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS


def _scan_image_folder(root: Path) -> _Scan:
    train_classes = _list_classes(root / "train")
    val_classes = _list_classes(root / "val")
    for split, cls in (("train", train_classes), ("val", val_classes)):
        if not cls:
            raise DataError(
                f"DATA {root}: {split} split is empty; expected class folders {split}/<class>/ holding images"
            )
    if len(train_classes) < 2:
        found = ", ".join(train_classes)
        raise DataError(f"DATA {root}: needs at least 2 classes, found {len(train_classes)} in train/ ({found})")
    if set(train_classes) != set(val_classes):
        missing = sorted(set(train_classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train_classes))
        bits = []
        if missing:
            bits.append(f"val/ is missing class(es) {', '.join(missing)}")
        if extra:
            bits.append(f"val/ has extra class(es) {', '.join(extra)} not in train/")
        raise DataError(f"DATA {root}: {'; '.join(bits)}; train/ and val/ need the same class folders")
    # Plain strings and DirEntry.stat(): pathlib objects cost ~25 us each, which is
    # most of a cache hit on a 10k-image folder.
    files: dict[str, list[tuple[str, str, int, int, int]]] = {}
    for split in ("train", "val"):
        entries: list[tuple[str, str, int, int, int]] = []
        for label, cls in enumerate(train_classes):
            cdir = root / split / cls
            imgs = sorted((e for e in os.scandir(cdir) if _is_image_entry(e)), key=lambda e: e.name)
            if not imgs:
                exts = "/".join(sorted(x[1:] for x in IMAGE_EXTENSIONS))
                raise DataError(f"DATA {root}: class folder {cdir} has no images ({exts})")
            for e in imgs:
                st = e.stat()
                entries.append((e.path, f"{split}/{cls}/{e.name}", label, st.st_size, st.st_mtime_ns))
        files[split] = entries
    return _Scan(train_classes, files)


def _cache_key(root: Path, scan: _Scan, store_size: int | None) -> str:
    """Hash of everything that decides the decoded tensors, read from directory metadata only."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"v": _CACHE_VERSION, "root": str(root), "store_size": store_size}).encode())
    for split in ("train", "val"):
        rows = (f"\n{rel}\0{label}\0{size}\0{mtime}" for _, rel, label, size, mtime in scan.files[split])
        h.update("".join(rows).encode())
    return h.hexdigest()


class _SizeMismatch(Exception):
    """Internal: an image differs from the size of the first one, so everything must be resized."""


def _decode_image(path: str, size: int | None, expect: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one file to an RGB uint8 [S, S, 3] array.

    size None keeps the native size (and with `expect`, raises _SizeMismatch before
    decoding when the header disagrees); otherwise fit to size x size (shorter side
    to size, centre crop).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            if size is None:
                if expect is not None and img.size != expect:
                    raise _SizeMismatch
                img.load()
                rgb = img.convert("RGB")
            else:
                if img.format == "JPEG":
                    img.draft("RGB", (size, size))  # decode at a reduced DCT scale when possible
                img.load()
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
            return np.asarray(rgb, dtype=np.uint8)
    except _SizeMismatch:
        raise
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError...) for bad files
        raise DataError(f"DATA {path}: unreadable or corrupt image ({_one_line(e)})") from None


def _probe_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception as e:
        raise DataError(f"DATA {path}: unreadable or corrupt image ({_one_line(e)})") from None


_SMALL_IMAGE_PIXELS = 96 * 96
"""Below this many pixels per image, decoding is dominated by GIL-bound Python overhead and
threads only add contention (measured: ~1.5x slower on 32x32 JPEGs), so decode inline."""

_DECODE_CHUNK = 32  # images per pool task: amortises future/queue overhead


def _parallel_fill(paths: list[str], out: np.ndarray, fn: Callable[[str], np.ndarray], workers: int) -> None:
    """Decode `paths` into `out[i]`, on a thread pool when workers > 1 (Pillow releases the GIL while decoding)."""

    def work(start: int) -> None:
        for i in range(start, min(start + _DECODE_CHUNK, len(paths))):
            arr = fn(paths[i])
            if arr.shape != out.shape[1:]:
                raise DataError(f"DATA {paths[i]}: decoded to shape {arr.shape}, expected {out.shape[1:]}")
            out[i] = arr

    starts = range(0, len(paths), _DECODE_CHUNK)
    if workers <= 1:
        for s in starts:
            work(s)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hwnas-decode")
    try:
        for _ in pool.map(work, starts):
            pass
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _decode_all(paths: list[str], store_size: int | None) -> np.ndarray:
    """Decode every file to [N, S, S, 3], keeping the native size when all share one square size."""
    w, h = _probe_size(paths[0])
    workers = 1 if w * h <= _SMALL_IMAGE_PIXELS else max(1, min(8, os.cpu_count() or 1))
    if store_size is None:
        if w == h:
            out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
            try:
                _parallel_fill(paths, out, lambda p: _decode_image(p, None, (w, h)), workers)
                return out
            except _SizeMismatch:
                pass
        store_size = DEFAULT_VARIABLE_STORE_SIZE
    out = np.empty((len(paths), store_size, store_size, 3), dtype=np.uint8)
    size = store_size
    _parallel_fill(paths, out, lambda p: _decode_image(p, size), workers)
    return out


def _read_cache(path: Path, key: str, name: str) -> Dataset | None:
    """The cached Dataset, or None when missing, damaged or stale (the caller then rebuilds it)."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("version") != _CACHE_VERSION or obj.get("key") != key:
            return None
        m, sd = obj["mean"], obj["std"]
        return Dataset(name, [str(c) for c in obj["classes"]], obj["train_x"], obj["train_y"], obj["val_x"],
                       obj["val_y"], (m[0], m[1], m[2]), (sd[0], sd[1], sd[2]), str(obj["fingerprint"]))
    except Exception:  # truncated zip, wrong types, missing keys...: all mean "rebuild"
        return None


def _load_image_folder(root: Path, cache_dir: Path, store_size: int | None) -> Dataset:
    scan = _scan_image_folder(root)
    key = _cache_key(root, scan, store_size)
    # One file per (folder, store_size), holding the content key: an edited folder
    # overwrites its stale cache instead of piling up new files.
    slot = hashlib.blake2b(json.dumps([str(root), store_size]).encode(), digest_size=8).hexdigest()
    cache_file = cache_dir / f"imagefolder-{root.name[:40]}-{slot}.pt"
    cached = _read_cache(cache_file, key, str(root))
    if cached is not None:
        return cached

    n_train = len(scan.files["train"])
    all_files = scan.files["train"] + scan.files["val"]
    arr = _decode_all([f[0] for f in all_files], store_size)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([f[2] for f in all_files], dtype=torch.int64)
    ds = _make_dataset(str(root), "imagefolder", scan.classes, x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    payload = {
        "version": _CACHE_VERSION, "key": key, "classes": ds.classes,
        "train_x": ds.train_x, "train_y": ds.train_y, "val_x": ds.val_x, "val_y": ds.val_y,
        "mean": list(ds.mean), "std": list(ds.std), "fingerprint": ds.fingerprint,
    }
    try:
        with atomic_path(cache_file) as tmp:
            torch.save(payload, tmp)
    except OSError as e:  # a read-only cache only costs speed, never the run
        warnings.warn(f"hwnas: could not write dataset cache {cache_file}: {e}", stacklevel=2)
    return ds

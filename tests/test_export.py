"""`hwnas export`: BN folding, ONNX export with metadata, ORT parity and accuracy, INT8, safe outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas import Supernet, load_space
from hwnas.cli import main
from hwnas.data import Dataset, augment_batch, load_dataset
from hwnas.errors import UserError
from hwnas.export import export_subnet, fold_batchnorm, fold_conv_bn, read_metadata
from hwnas.space import with_classes

from helpers import perturb_bn as _perturb_bn


@pytest.fixture(scope="module")
def tiny_ds() -> Dataset:
    """A small slice of the embedded digits (300 train / 120 val images), enough for every check."""
    full = load_dataset("digits")
    return Dataset(
        name="digits-tiny", classes=full.classes, train_x=full.train_x[:300], train_y=full.train_y[:300],
        val_x=full.val_x[:120], val_y=full.val_y[:120], mean=full.mean, std=full.std, fingerprint="tiny-" + full.fingerprint,
    )


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    net = Supernet(with_classes(load_space("mbv3-tiny"), 10))
    _perturb_bn(net, 1)
    return net.eval()


@pytest.fixture(scope="module")
def subnet(supernet):
    return supernet.space.validate_subnet(
        dict(resolution=16, depths=[2, 1, 2], kernels=[[3, 5], [7], [3, 5]], expands=[[2, 4], [6], [4, 2]])
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, supernet, subnet, tiny_ds):
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    torch.set_num_threads(1)
    res = export_subnet(supernet, subnet, tiny_ds, out, int8=True, ort_format=True, progress=False)
    return res, out


# ------------------------------------------------------------------ BN folding

@pytest.mark.parametrize("groups,bias", [(1, False), (4, True), (8, False)])
def test_fold_conv_bn_equals_conv_then_bn(groups, bias):
    torch.manual_seed(groups)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(8, eps=1e-3)
    _perturb_bn(bn, groups)
    bn.eval()
    x = torch.randn(4, 8, 9, 9)
    ref = bn(conv(x))
    fused = fold_conv_bn(conv, bn)
    assert fused.bias is not None
    torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
    # and the folded weight really is the closed form w * gamma / sqrt(var + eps)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fused.weight, conv.weight * scale.view(-1, 1, 1, 1))


def test_fold_batchnorm_whole_network_removes_every_bn_and_keeps_outputs(supernet, subnet):
    net = supernet.extract(subnet).eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_refuses_a_bn_it_cannot_fold():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="could not be folded"):
        fold_batchnorm(model)


# ------------------------------------------------------------------ export

def test_exported_model_is_valid_onnx_with_named_dynamic_io_and_metadata(exported, subnet, tiny_ds):
    res, out = exported
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, 16, 16]
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    meta = read_metadata(out)
    assert subnet.model_validate(meta.subnet) == subnet
    assert meta.space == "mbv3-tiny" and meta.precision == "fp32"
    assert meta.preprocessing.resolution == 16
    assert meta.preprocessing.mean == pytest.approx(list(tiny_ds.mean))
    assert meta.preprocessing.std == pytest.approx(list(tiny_ds.std))
    assert meta.preprocessing.class_names == tiny_ds.classes
    assert meta.val_acc == pytest.approx(res.val_acc)
    from hwnas import __version__

    assert meta.version == __version__
    assert meta.macs == res.macs > 0


def test_fresh_ort_session_matches_pytorch_and_accuracy_equals(exported, supernet, subnet, tiny_ds):
    """Recompute everything independently of export_subnet's own numbers."""
    res, out = exported
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # the PyTorch reference: the same subnet, BN recalibrated the same way, unfolded
    from hwnas.data import calibration_subset
    from hwnas.train import recalibrate_bn

    net = supernet.extract(subnet)
    recalibrate_bn(net, calibration_subset(tiny_ds), 16, tiny_ds.mean, tiny_ds.std)
    net.eval()
    x = augment_batch(tiny_ds.val_x, 16, tiny_ds.mean, tiny_ds.std, train=False)
    with torch.no_grad():
        ref = net(x).numpy()
    for batch in (1, 5):  # dynamic batch axis
        got = sess.run(["logits"], {"input": x[:batch].numpy()})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, ref[:batch], rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    assert diff <= 1e-4 * np.abs(ref).max()
    assert res.max_abs_diff <= 1e-4 * np.abs(ref).max()
    acc_ort = float((got.argmax(1) == tiny_ds.val_y.numpy()).mean())
    acc_torch = float((ref.argmax(1) == tiny_ds.val_y.numpy()).mean())
    assert acc_ort == acc_torch == res.val_acc == res.val_acc_torch
    assert res.val_images == len(tiny_ds.val_y)


def test_int8_model_is_qdq_runs_and_its_accuracy_is_reported(exported, tiny_ds):
    res, out = exported
    assert res.int8_onnx is not None
    q = onnx.load(res.int8_onnx)
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert read_metadata(res.int8_onnx).precision == "int8"
    sess = ort.InferenceSession(res.int8_onnx, providers=["CPUExecutionProvider"])
    x = augment_batch(tiny_ds.val_x, 16, tiny_ds.mean, tiny_ds.std, train=False).numpy()
    got = sess.run(["logits"], {"input": x})[0]
    acc = float((got.argmax(1) == tiny_ds.val_y.numpy()).mean())
    assert res.int8_val_acc == pytest.approx(acc)
    assert res.int8_acc_change == pytest.approx(acc - res.val_acc)
    assert res.int8_measured_latency_ms is not None and res.int8_measured_latency_ms > 0
    assert res.measured_latency_ms > 0 and res.predicted_latency_ms is None


def _ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of a model file in a plain ONNX Runtime session (NCHWc left out, as the .ort converter does)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"])
    return sess.run(["logits"], {"input": x})[0]


def test_ort_format_round_trip_equals_the_onnx_models(exported, tiny_ds):
    """model.ort reproduces model.onnx (<=1e-5 relative), model.int8.ort reproduces model.int8.onnx exactly,
    and each keeps the preprocessing metadata a phone app reads."""
    res, out = exported
    fp32_ort, int8_ort = out.with_suffix(".ort"), out.with_name("model.int8.ort")
    assert res.ort == str(fp32_ort) and sorted(res.ort_files) == sorted([str(fp32_ort), str(int8_ort)])
    assert fp32_ort.read_bytes()[4:8] == b"ORTM"  # the flatbuffer identifier of the ORT format
    x = augment_batch(tiny_ds.val_x, 16, tiny_ds.mean, tiny_ds.std, train=False).numpy()
    a, b = _ort_outputs(out, x), _ort_outputs(fp32_ort, x)
    assert float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(a).max())
    np.testing.assert_array_equal(_ort_outputs(out.with_name("model.int8.onnx"), x), _ort_outputs(int8_ort, x))
    meta = ort.InferenceSession(str(int8_ort), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["hwnas.precision"]) == "int8" and json.loads(meta["hwnas.preprocessing"])["resolution"] == 16


def test_ort_format_writes_the_required_operators_config(exported):
    """One config per .ort, beside it, in ORT's reduced-build format, listing exactly the operators the .ort holds."""
    res, out = exported
    fp32_cfg, int8_cfg = out.with_name("model.required_operators.config"), out.with_name("model.int8.required_operators.config")
    assert res.ort_config == str(fp32_cfg)
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    for cfg, ort_file, quantised in ((fp32_cfg, "model.ort", False), (int8_cfg, "model.int8.ort", True)):
        text = cfg.read_text()
        assert f"# - {ort_file}" in text and "/tmp" not in text  # names the published file, not a temporary one
        ops, _ = parse_config(str(cfg))
        flat = {op for per_opset in ops.values() for names in per_opset.values() for op in names}
        assert "Conv" in flat or "FusedConv" in flat or "QLinearConv" in flat
        assert ("QuantizeLinear" in flat) == quantised


def test_ort_format_mismatch_fails_and_publishes_nothing(supernet, subnet, tiny_ds, tmp_path, monkeypatch):
    """A .ort that does not reproduce its ONNX model is an error (exit 1), and no output appears."""
    import hwnas.export.ort_format as of

    real = of.convert_to_ort

    def wrong_model(onnx_file, out_dir):  # converts another network: outputs differ
        other = tmp_path / "other.onnx"
        export_subnet(supernet, supernet.space.smallest(16), tiny_ds, other, force=True, progress=False)
        return real(other, out_dir)

    monkeypatch.setattr(of, "convert_to_ort", wrong_model)
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(of.OrtFormatError, match="differs from"):
        export_subnet(supernet, subnet, tiny_ds, out, ort_format=True, progress=False)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_export_refuses_to_overwrite_without_force(exported, supernet, subnet, tiny_ds):
    res, out = exported
    before = out.read_bytes()
    with pytest.raises(UserError, match="--force"):
        export_subnet(supernet, subnet, tiny_ds, out, progress=False)
    assert out.read_bytes() == before
    other = supernet.space.smallest(12)
    r2 = export_subnet(supernet, other, tiny_ds, out, force=True, progress=False)
    assert read_metadata(out).subnet["resolution"] == 12 and r2.resolution == 12
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_export_rejects_wrong_number_of_classes(supernet, subnet, tiny_ds, tmp_path):
    ds3 = Dataset(name="three", classes=["a", "b", "c"], train_x=tiny_ds.train_x[:30], train_y=tiny_ds.train_y[:30] % 3,
                  val_x=tiny_ds.val_x[:9], val_y=tiny_ds.val_y[:9] % 3, mean=tiny_ds.mean, std=tiny_ds.std, fingerprint="x")
    with pytest.raises(UserError, match="3 classes"):
        export_subnet(supernet, subnet, ds3, tmp_path / "m.onnx", progress=False)
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, supernet):
    from hwnas.train import SupernetMeta, save_checkpoint

    d = load_dataset("digits")
    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    meta = SupernetMeta(space=supernet.space.to_file_dict(), data="digits", data_fingerprint=d.fingerprint,
                        config={}, phase="expand2", epoch=1, finished=True)
    save_checkpoint(path, {"meta": meta.model_dump(mode="json"), "model": supernet.state_dict()})
    return path


def _write(p: Path, obj) -> Path:
    p.write_text(json.dumps(obj))
    return p


def test_cli_export_json(ckpt, subnet, tmp_path, capsys):
    sub = _write(tmp_path / "best.json", subnet.model_dump())
    out = tmp_path / "out" / "m.onnx"
    code = main(["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(out), "--json"])
    assert code == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("onnx", "max_abs_diff", "measured_latency_ms", "predicted_latency_ms", "val_acc"):
        assert k in d
    assert d["onnx"] == str(out) and out.is_file()
    assert d["predicted_latency_ms"] is None and d["val_acc"] == d["val_acc_torch"]
    assert read_metadata(out).subnet == subnet.model_dump()
    # the same command again refuses, names --force, and leaves the file alone
    before = out.read_bytes()
    code = main(["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(out)])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_cli_export_ort_format_json_and_refusal(ckpt, subnet, tmp_path, capsys):
    sub = _write(tmp_path / "best.json", subnet.model_dump())
    out = tmp_path / "m.onnx"
    out.with_suffix(".ort").write_bytes(b"old")
    args = ["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(out), "--ort-format", "--json"]
    code = main(args)
    assert code == 2 and "m.ort" in capsys.readouterr().err and not out.exists()  # an existing .ort is not overwritten
    code = main(args + ["--force"])
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and d["ort"] == str(out.with_suffix(".ort")) and d["ort_config"] == str(tmp_path / "m.required_operators.config")
    assert out.with_suffix(".ort").read_bytes() != b"old" and d["ort_max_rel_diff"] <= 1e-5


@pytest.mark.parametrize("obj,needle", [
    ({"space": "mbv3-cifar", "resolution": 32, "depths": [2, 2, 2, 2, 2], "kernels": [[3, 3]] * 5, "expands": [[3, 3]] * 5}, "mbv3-cifar"),
    ({"resolution": 32, "depths": [2, 2, 2, 2, 2], "kernels": [[3, 3]] * 5, "expands": [[3, 3]] * 5}, "resolution"),
])
def test_cli_subnet_of_another_space_exits_2(ckpt, tmp_path, capsys, obj, needle):
    sub = _write(tmp_path / "other.json", obj)
    out = tmp_path / "m.onnx"
    code = main(["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert str(sub) in err
    assert not out.exists()


def test_cli_unwritable_output_folder_exits_2(ckpt, subnet, tmp_path, capsys):
    sub = _write(tmp_path / "best.json", subnet.model_dump())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(blocker / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "not a folder" in err and "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_cli_read_only_folder_exits_2(ckpt, subnet, tmp_path, capsys):
    sub = _write(tmp_path / "best.json", subnet.model_dump())
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = main(["export", "--supernet", str(ckpt), "--subnet", str(sub), "--data", "digits", "--out", str(ro / "m.onnx")])
    finally:
        ro.chmod(0o700)
    assert code == 2 and "not writable" in capsys.readouterr().err


@pytest.fixture(scope="module")
def table16(tmp_path_factory, supernet):
    """A real (small) latency table of this machine: one resolution, few calibration subnets."""
    from hwnas.latency import profile_space

    path = tmp_path_factory.mktemp("table") / "table.json"
    return profile_space(supernet.space, path, resolutions=[16], calibration_subnets=4, progress=False)


def test_export_with_table_predicts_and_records_the_target(supernet, subnet, tiny_ds, table16, tmp_path):
    from hwnas.latency import LatencyPredictor

    r = export_subnet(supernet, subnet, tiny_ds, tmp_path / "m.onnx", table=table16, progress=False)
    assert r.predicted_latency_ms == pytest.approx(LatencyPredictor(table16, supernet.space).predict(subnet))
    assert r.threads == table16.fingerprint.threads and r.provider == table16.fingerprint.provider
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta.predicted_latency_ms == pytest.approx(r.predicted_latency_ms)
    assert meta.latency_target["fingerprint"]["cpu_model"] == table16.fingerprint.cpu_model
    rel = abs(r.measured_latency_ms - r.predicted_latency_ms) / r.predicted_latency_ms
    assert (rel > 0.10) == bool(r.warnings)  # warned exactly when off by more than 10%


def test_export_refuses_a_resolution_the_table_does_not_cover(supernet, tiny_ds, table16, tmp_path):
    sub12 = supernet.space.smallest(12)
    with pytest.raises(UserError, match="not covered by the table"):
        export_subnet(supernet, sub12, tiny_ds, tmp_path / "m.onnx", table=table16, progress=False)
    assert not (tmp_path / "m.onnx").exists()


def test_latency_warning_threshold():
    from hwnas.export.core import _check_latency

    warnings: list[str] = []
    _check_latency(1.09, 1.0, "fp32", warnings)
    assert warnings == []
    _check_latency(0.85, 1.0, "fp32", warnings)
    assert len(warnings) == 1 and "-15%" in warnings[0]


def test_given_trained_weights_keep_their_own_bn_statistics(supernet, subnet, tiny_ds, tmp_path):
    """A network trained as itself (generate's fine-tuning or direct route) is exported with its running
    BN statistics: recalibrating them was measured to cost 3 points. The supernet's own subnets are
    still recalibrated (shared statistics are wrong for any one subnet)."""
    import copy

    from hwnas.train.evaluate import accuracy

    trained = copy.deepcopy(supernet.extract(subnet)).eval()
    for m in trained.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics no recalibration would produce
            m.running_mean.add_(0.37)
            m.running_var.mul_(2.5)
    want = accuracy(trained, tiny_ds.val_x, tiny_ds.val_y, subnet.resolution, tiny_ds.mean, tiny_ds.std)
    res = export_subnet(supernet, subnet, tiny_ds, tmp_path / "w.onnx", weights=trained, progress=False)
    assert res.val_acc_torch == pytest.approx(want)
    from hwnas.export.check import preprocess, torch_logits

    x = preprocess(tiny_ds.val_x, subnet.resolution, tiny_ds.mean, tiny_ds.std)
    ref = torch_logits(trained, x)
    got = ort.InferenceSession(str(tmp_path / "w.onnx")).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-3  # the exported graph computes the given network, statistics included

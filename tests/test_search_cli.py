"""`hwnas search` end to end on a micro space: a checkpoint, a latency table, digits; SPEC outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.space import Space, build_plan, with_classes


def _micro_space() -> Space:
    st = dict(depths=[1, 2], kernels=[3, 5], expands=[2, 4])
    return Space.model_validate(dict(
        name="micro-search", num_classes=10,
        stem=dict(out_channels=8, kernel=3, stride=2, act="hswish"),
        stages=[dict(out_channels=8, stride=1, act="relu", se=False, **st), dict(out_channels=16, stride=2, act="hswish", se=True, **st)],
        head=dict(final_expand=32, feature_mix=None, act="hswish", dropout=0.0),
        resolutions=[8, 12, 16],
    ))


def _fake_table(space: Space, path: Path, resolutions: list[int]) -> None:
    """A real TABLE file whose 'measurements' are proportional to MACs (no ONNX Runtime run needed)."""
    from hwnas.latency.pieces import all_pieces, net_keys, sample_subnets
    from hwnas.latency.profile import CAL_PREFIX, build_table
    from hwnas.runtime import MeasureProtocol
    from hwnas.space.cost import block_cost, head_cost, stem_cost

    def stats(ms: float) -> dict:
        return dict(median_ms=ms, mean_ms=ms, p10_ms=ms, p90_ms=ms, mad_ms=0.0, repeats=5)

    results = {}
    for key, p in all_pieces(space, resolutions).items():
        cost = {"StemPlan": stem_cost, "BlockPlan": block_cost, "HeadPlan": head_cost}[type(p).__name__](p)[0]
        results[key] = stats(0.01 + cost / 2e6)
    calibration = []
    for j, sub in enumerate(sample_subnets(space, 4, 0, resolutions)):
        keys = net_keys(build_plan(space, sub))
        results[f"{CAL_PREFIX}{j}"] = stats(0.9 * sum(results[k]["median_ms"] for k in keys) + 0.05 + 0.001 * j)
        calibration.append({"key": f"{CAL_PREFIX}{j}", "subnet": sub.model_dump()})
    fp = dict(cpu_model="Fake CPU", cores=2, os="Linux", onnxruntime="1.0", provider="CPUExecutionProvider", threads=1)
    build_table(space, resolutions, False, fp, MeasureProtocol(), results, calibration, source="local", seconds=0.0).save(path)


def _fake_checkpoint(space: Space, path: Path) -> None:
    """An (untrained) supernet checkpoint in `hwnas train`'s format: enough to exercise the search."""
    import torch

    from hwnas.supernet import Supernet
    from hwnas.train.checkpoint import SupernetMeta, save_checkpoint

    torch.manual_seed(0)
    net = Supernet(space)
    meta = SupernetMeta(space=space.model_dump(mode="json"), data="digits", data_fingerprint="test", config={},
                        phase="full", epoch=0, finished=True)
    save_checkpoint(path, {"meta": meta.model_dump(), "model": net.state_dict()})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("search-cli")
    space = with_classes(_micro_space(), 10)
    _fake_checkpoint(space, d / "ckpt.pt")
    _fake_table(space, d / "table.json", [8, 12])  # the table does not cover 16
    other = Space.model_validate({**space.model_dump(), "name": "other-space", "head": {**space.head.model_dump(), "final_expand": 48}})
    _fake_table(other, d / "other-table.json", [8, 12])
    return {"dir": d, "ckpt": d / "ckpt.pt", "table": d / "table.json", "other": d / "other-table.json"}


FAST = ["--init-samples", "8", "--iterations", "1", "--candidates", "4", "--pop-size", "12", "--generations", "4",
        "--calib-images", "64"]


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _min_latency(files: dict[str, Path]) -> float:
    from hwnas.latency import LatencyPredictor, load_table

    space = with_classes(_micro_space(), 10)
    return LatencyPredictor(load_table(files["table"], space), space).min_latency_ms()


def test_search_json_outputs_and_refusal(files: dict[str, Path], capsys: pytest.CaptureFixture):
    m = _min_latency(files)
    b1, b2 = round(1.6 * m, 4), round(3 * m, 4)
    out = files["dir"] / "out"
    code, stdout, err = _run(capsys, ["search", "--supernet", str(files["ckpt"]), "--table", str(files["table"]),
                                      "--budget-ms", str(b1), str(b2), "--data", "digits", "--out", str(out), "--json", *FAST])
    assert code == 0, err
    d = json.loads(stdout.strip().splitlines()[-1])
    for key in ("best", "pareto", "plot", "predicted_latency_ms", "predicted_acc", "hypervolume", "evaluations",
                "evaluations_real", "evaluations_predicted", "budgets"):
        assert key in d, key
    assert d["evaluations"] == d["evaluations_real"] + d["evaluations_predicted"] and d["evaluations_predicted"] > 0
    assert d["val_images"] == d["val_images_total"] == 360 and d["calib_images"] == 64 and d["processes"] == 1
    assert d["predicted_latency_ms"] <= b1 and 0.0 <= d["predicted_acc"] <= 1.0
    assert [x["budget_ms"] for x in d["budgets"]] == [b1, b2]
    space = with_classes(_micro_space(), 10)
    best = space.validate_subnet(json.loads(Path(d["best"]).read_text()))
    assert best.resolution in (8, 12)  # restricted to the table's resolutions
    for x in d["budgets"]:
        assert x["predicted_latency_ms"] <= x["budget_ms"]
        assert space.validate_subnet(json.loads(Path(x["best"]).read_text()))
    assert Path(d["best"]).read_text() == Path(d["budgets"][0]["best"]).read_text()
    pareto = json.loads(Path(d["pareto"]).read_text())
    assert pareto and all(set(e) >= {"subnet", "predicted_acc", "predicted_latency_ms", "macs"} for e in pareto)
    assert all(0 <= e["predicted_acc"] <= 1 and e["predicted_latency_ms"] <= b2 for e in pareto)
    assert all(space.validate_subnet(e["subnet"]) for e in pareto)
    assert Path(d["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_text = (out / "search.log").read_text()
    assert "Kendall tau" in log_text and "best subnet per budget" in log_text
    # a second run refuses to overwrite (exit 2, one line naming --out and --force), files untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _run(capsys, ["search", "--supernet", str(files["ckpt"]), "--table", str(files["table"]),
                                 "--budget-ms", str(b1), "--data", "digits", "--out", str(out), *FAST])
    assert code == 2 and "--force" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # same seed with --force: the same answer
    code, stdout, err = _run(capsys, ["search", "--supernet", str(files["ckpt"]), "--table", str(files["table"]),
                                      "--budget-ms", str(b1), str(b2), "--data", "digits", "--out", str(out), "--json", "--force", *FAST])
    assert code == 0, err
    d2 = json.loads(stdout.strip().splitlines()[-1])
    assert d2["hypervolume"] == d["hypervolume"] and Path(d2["best"]).read_text() == before["best.json"].decode()


def test_search_bad_inputs_exit_2(files: dict[str, Path], capsys: pytest.CaptureFixture, tmp_path: Path):
    m = _min_latency(files)
    base = ["search", "--supernet", str(files["ckpt"]), "--data", "digits", *FAST]
    code, _, err = _run(capsys, base + ["--table", str(files["table"]), "--budget-ms", str(m / 2), "--out", str(tmp_path / "a")])
    assert code == 2 and "below the minimum predicted latency" in err and f"{m:.4g} ms" in err
    assert not (tmp_path / "a").exists()
    code, _, err = _run(capsys, base + ["--table", str(files["other"]), "--budget-ms", "5", "--out", str(tmp_path / "b")])
    assert code == 2 and "space" in err and "Traceback" not in err
    code, _, err = _run(capsys, base + ["--table", str(files["table"]), "--budget-ms", "-1", "--out", str(tmp_path / "c")])
    assert code == 2 and "--budget-ms" in err
    code, _, err = _run(capsys, ["search", "--supernet", str(tmp_path / "missing.pt"), "--table", str(files["table"]),
                                 "--budget-ms", "5", "--out", str(tmp_path / "d")])
    assert code == 2 and "missing.pt" in err
    code, _, err = _run(capsys, base + ["--table", str(files["table"]), "--budget-ms", str(2 * m), "--out", str(tmp_path / "e"),
                                        "--pop-size", "2"])
    assert code == 2 and "--pop-size" in err


def test_api_second_table_and_macs_objectives(files: dict[str, Path], tmp_path: Path):
    """search_supernet returns the SearchResult whose front the files hold; extra objectives by flag."""
    from hwnas.search import SearchConfig, search_supernet

    space = with_classes(_micro_space(), 10)
    _fake_table(space, tmp_path / "second.json", [12, 16])  # shares only resolution 12 with the first table
    m = _min_latency(files)
    cfg = SearchConfig(init_samples=8, iterations=1, candidates_per_iteration=4, pop_size=12, generations=4)
    r = search_supernet(files["ckpt"], files["table"], [3 * m], "digits", tmp_path / "out", config=cfg, calib_images=32,
                        extra_objectives=["macs"], second_table=tmp_path / "second.json")
    assert r.objectives == ["accuracy", "latency_ms", "macs", "latency2_ms"]
    assert all(e.subnet.resolution == 12 for e in r.front)
    assert all(set(e.objectives) == {"macs", "latency2_ms"} for e in r.front)
    pareto = json.loads(Path(r.outputs["pareto"]).read_text())
    assert [p["subnet"] for p in pareto] == [e.subnet.model_dump() for e in r.front]
    assert json.loads(Path(r.outputs["best"]).read_text()) == r.best_subnet.model_dump()
    assert [p["objectives"]["latency2_ms"] for p in pareto] == [e.objectives["latency2_ms"] for e in r.front]


def test_val_images_scores_on_a_fixed_subset(files: dict[str, Path], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """--val-images N: every subnet is scored on the same N validation images; 0 is refused."""
    import hwnas.train as tr

    sizes: list[int] = []
    real = tr.evaluate_subnet

    def spy(net, sub, ds, **k):
        sizes.append(int(ds.val_x.shape[0]))
        return real(net, sub, ds, **k)

    monkeypatch.setattr(tr, "evaluate_subnet", spy)
    m = _min_latency(files)
    out = files["dir"] / "out-val"
    code, _, err = _run(capsys, ["search", "--supernet", str(files["ckpt"]), "--table", str(files["table"]),
                                 "--budget-ms", str(round(2 * m, 4)), "--data", "digits", "--out", str(out), "--val-images", "50", *FAST])
    assert code == 0, err
    assert sizes and set(sizes) == {50}
    assert err.count("ETA: about ") == 1 and "of 12 planned real evaluations" in err  # 8 + 1 x 4, said once
    log_text = (out / "search.log").read_text()
    assert "50 of 360 validation images, a class-stratified subset (seed 0)" in err and "val_images 50 of 360" in log_text
    code, _, err = _run(capsys, ["search", "--supernet", str(files["ckpt"]), "--table", str(files["table"]),
                                 "--budget-ms", str(round(2 * m, 4)), "--data", "digits", "--out", str(files["dir"] / "o0"),
                                 "--val-images", "0", *FAST])
    assert code == 2 and "--val-images" in err


def test_search_on_cpu_scores_with_the_idle_cores_and_restores(monkeypatch):
    """One search process on a CPU uses as many intra-op threads as CPUs are idle (as train and generate),
    unless the user set OMP_NUM_THREADS, and gives the caller its thread count back."""
    import torch

    import hwnas.search.pipeline as pl
    import hwnas.train.distributed as dist

    seen: list[int] = []
    idle = [0.6]
    monkeypatch.setattr(pl, "_search", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(dist, "idle_cpus", lambda: idle[0])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        pl.search_supernet("ckpt", "table", [1.0], None, "out", device="cpu")  # one core busy elsewhere
        idle[0] = 2.0
        pl.search_supernet("ckpt", "table", [1.0], None, "out", device="cpu")
        idle[0] = 0.0
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        pl.search_supernet("ckpt", "table", [1.0], None, "out", device="cpu")
        assert seen == [1, 2, 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

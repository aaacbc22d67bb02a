"""`hwnas generate` end to end on tiny data, a tiny training config and a one-resolution table:
outputs exist and agree with each other, the second run reuses both caches, bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from hwnas.cli import main
from hwnas.errors import UserError
from hwnas.export import read_metadata

from helpers import FAST_PROTOCOL

TINY_TRAIN = {
    "schedule": "progressive",
    "phases": {name: {"epochs": 1, "lr": 0.05, "warmup_epochs": 0, "subnets_per_step": 1}
               for name in ("full", "kernel", "depth1", "depth2", "expand1", "expand2")},
    "batch_size": 32, "eval_subnets": 0, "flip": False,
}
TINY_SEARCH = {"pop_size": 8, "generations": 3, "init_samples": 6, "iterations": 1, "candidates_per_iteration": 3,
               "predictors": ["ridge"], "cv_folds": 2}
# a profile of 12 whole subnets timed briefly: the tables' predictions matter here only as far as the tests say
TINY_PROFILE = {"calibration_subnets": 12, "protocol": FAST_PROTOCOL.model_dump()}
KW = dict(space="mbv3-tiny", train_config=TINY_TRAIN, profile_resolutions=[12], profile_options=TINY_PROFILE,
          search_options=TINY_SEARCH, progress=False)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    """3 classes x (24 train, 8 val) 8x8 RGB images: a bright bar whose position is the class, plus noise."""
    root = tmp_path_factory.mktemp("tinydata")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
                img[:, 2 * c + 1: 2 * c + 3, :] = 230
                Image.fromarray(img).save(d / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_folder):
    from hwnas.generate import generate

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gen") / "run1"
    from hwnas.latency import feedback

    with pytest.MonkeyPatch.context() as mp:
        # the refusal of fed-back timings that contradict the profile has its own tests (test_latency.py): here the
        # noise of a brief 12-subnet profile must not decide whether generate feeds its measurement back
        mp.setattr(feedback, "PROFILE_FIT_GUARD", float("inf"))
        # a budget every subnet at resolution 12 meets, so the test does not depend on timing noise
        r = generate(10.0, out, data=tiny_folder, **KW)
    return r, out


def test_generate_writes_consistent_outputs(first_run, tiny_folder):
    r, out = first_run
    for name in ("model.onnx", "best.json", "pareto.json", "pareto.png", "report.md"):
        assert (out / name).is_file(), name
    for k in ("onnx", "report", "measured_latency_ms", "predicted_latency_ms", "val_acc", "budget_ms", "seconds"):
        assert k in r
    assert r["cache"] == {"table": "miss", "supernet": "miss"}
    assert r["within_budget"] and r["measured_latency_ms"] <= r["budget_ms"] * 1.05
    best = json.loads((out / "best.json").read_text())
    meta = read_metadata(out / "model.onnx")
    assert meta.subnet == best == r["subnet"]
    assert meta.preprocessing.class_names == ["class0", "class1", "class2"]
    assert meta.predicted_latency_ms == pytest.approx(r["predicted_latency_ms"])
    pareto = json.loads((out / "pareto.json").read_text())
    assert any(p["subnet"] == best for p in pareto)
    # generate's own cached table learnt the delivered model's measured latency; its profile points stay
    from hwnas.latency import load_table

    cal = load_table(r["table"]).calibration
    assert cal.points[-1].source == "delivered" and cal.points[-1].subnet == best
    assert cal.points[-1].measured_ms == pytest.approx(r["measured_latency_ms"])
    assert sum(p.source == "profile" for p in cal.points) >= 3
    report = (out / "report.md").read_text()
    assert f"{r['measured_latency_ms']:.3f} ms" in report and "measured latency" in report
    assert "![Pareto front](pareto.png)" in report and "| stage | block | kernel | expand |" in report
    # the model runs in a fresh session on the validation images with the accuracy reported
    from hwnas.data import augment_batch, load_dataset

    ds = load_dataset(tiny_folder)
    x = augment_batch(ds.val_x, best["resolution"], meta.preprocessing.mean, meta.preprocessing.std, train=False).numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    acc = float((sess.run(["logits"], {"input": x})[0].argmax(1) == ds.val_y.numpy()).mean())
    assert acc == pytest.approx(r["val_acc"]) and acc == pytest.approx(r["val_acc_torch"])
    onnx.checker.check_model(str(out / "model.onnx"))


def test_profile_options_name_their_own_table_and_bad_ones_are_refused(monkeypatch):
    """A shrunken profile never stands in for a full one (and the defaults keep the key they always had);
    options are checked before anything is measured."""
    import hwnas.latency as lat
    from hwnas.generate.caches import cached_table, table_cache_key
    from hwnas.latency import ProfileOptions
    from hwnas.space import load_space

    sp = load_space("mbv3-tiny")
    plain = table_cache_key(sp, threads=1, provider="CPUExecutionProvider", int8=False, resolutions=[12])
    small = table_cache_key(sp, threads=1, provider="CPUExecutionProvider", int8=False, resolutions=[12],
                            options=ProfileOptions.model_validate(TINY_PROFILE))
    assert "options" not in plain and small["options"]["calibration_subnets"] == 12
    assert {k: v for k, v in small.items() if k != "options"} == plain

    def boom(*a, **k):
        raise AssertionError("measured before the options were checked")

    monkeypatch.setattr(lat, "profile_space", boom)
    for bad, said in [({"calibration_subnets": 2}, "calibration_subnets"), ({"rounds": 2}, "rounds"),
                      ({"protocol": {"min_repeats": 1}}, "min_repeats")]:
        with pytest.raises(UserError, match="profile options") as e:
            cached_table(sp, resolutions=[12], progress=False, options=bad)
        assert said in str(e.value)


def test_second_run_reuses_both_caches(first_run, tiny_folder, tmp_path, monkeypatch):
    import hwnas.latency as lat
    import hwnas.train as tr

    def boom(*a, **k):
        raise AssertionError("cache miss: this should have been reused")

    monkeypatch.setattr(lat, "profile_space", boom)
    monkeypatch.setattr(tr, "train_supernet", boom)
    from hwnas.generate import generate

    r = generate(5.0, tmp_path / "run2", data=tiny_folder, **KW)
    assert r["cache"] == {"table": "hit", "supernet": "hit"}
    assert r["supernet"] == first_run[0]["supernet"] and r["table"] == first_run[0]["table"]
    assert (tmp_path / "run2" / "model.onnx").is_file()


def test_refuses_non_empty_out_without_force(first_run, tiny_folder, capsys):
    r, out = first_run
    before = (out / "model.onnx").read_bytes()
    code = main(["generate", "--budget-ms", "10", "--out", str(out), "--data", tiny_folder])
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and "Traceback" not in err
    assert (out / "model.onnx").read_bytes() == before


def test_infeasible_budget_exits_2_with_the_minimum(first_run, tiny_folder, tmp_path):
    from hwnas.generate import generate

    with pytest.raises(UserError, match=r"fastest is predicted at [0-9.]+ ms"):
        generate(1e-6, tmp_path / "x", data=tiny_folder, **KW)
    assert not (tmp_path / "x" / "model.onnx").exists()


def test_cli_bad_budget_and_unwritable_out_exit_2(tmp_path, capsys):
    code = main(["generate", "--budget-ms", "-1", "--out", str(tmp_path / "o")])
    assert code == 2 and "--budget-ms" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    code = main(["generate", "--budget-ms", "1", "--out", str(f / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "not a folder" in err and "Traceback" not in err


def _fixed_front(monkeypatch, accs: tuple[float, ...] = (0.5, 0.8, 0.7, 0.6)) -> list[list]:
    """Run the real search, then replace its front (and its best per budget) with distinct subnets at resolution 12:
    the smallest, the largest, then sampled ones, scored `accs` in that order, latencies as the table predicts. How
    many members the tiny search leaves depends on this machine's measured latencies and 24 validation images, so
    tests of what generate does with a front give it a known one. Returns the list each search's front is added to."""
    import hwnas.search as search_pkg

    real_search, fronts = search_pkg.search_supernet, []

    def fixed(ckpt, table_path, budgets, *a, **k):
        from hwnas.latency import latency_model, load_table
        from hwnas.search.models import BudgetBest, FrontEntry
        from hwnas.space import load_space

        result = real_search(ckpt, table_path, budgets, *a, **k)
        sp = load_space(result.space)
        lat = latency_model(load_table(table_path), sp)
        subs = [sp.smallest(12), sp.largest(12)] + [sp.validate_subnet({**sp.sample(seed=s).model_dump(
            exclude={"space"}), "resolution": 12}) for s in range(20)]
        subs = list({json.dumps(s.model_dump(mode="json"), sort_keys=True): s for s in subs}.values())[:len(accs)]
        assert len(subs) == len(accs)
        front = sorted((FrontEntry(subnet=s, predicted_acc=acc, predicted_latency_ms=lat.predict(s), macs=1)
                        for s, acc in zip(subs, accs)), key=lambda e: e.predicted_latency_ms)
        best = [BudgetBest(**max((e for e in front if e.predicted_latency_ms <= b), key=lambda e: e.predicted_acc)
                           .model_dump(), budget_ms=b) for b in budgets]
        fronts.append(front)
        return result.model_copy(update={"front": front, "best": best})

    monkeypatch.setattr(search_pkg, "search_supernet", fixed)
    return fronts


def test_measured_over_budget_falls_back_to_a_faster_front_member(first_run, tiny_folder, tmp_path, monkeypatch):
    """The first export 'measures' at twice the budget; generate must export the next faster front member."""
    import hwnas.export.onnx_stages as core
    from hwnas.generate import generate

    budget = 10.0
    calls: list[int] = []

    def fake_measure(path, resolution, channels, threads, provider, protocol=None):
        calls.append(resolution)
        return budget * 2 if len(calls) == 1 else budget * 0.5

    monkeypatch.setattr(core, "measure_model", fake_measure)
    monkeypatch.setattr(core, "measure_as_called", fake_measure)
    fronts = _fixed_front(monkeypatch)  # the search's best is the largest subnet: the others are faster
    out = tmp_path / "run3"
    r = generate(budget, out, data=tiny_folder, **KW)
    report = (out / "report.md").read_text()
    best = max(fronts[0], key=lambda e: e.predicted_acc)
    assert r["attempts"][0]["subnet"] == best.subnet.model_dump(mode="json")  # started from the search's best
    assert any(e.predicted_latency_ms < best.predicted_latency_ms for e in fronts[0])
    assert r["attempts"][0]["measured_latency_ms"] == budget * 2 and not r["attempts"][0]["within_budget"]
    assert "## Budget check" in report
    # a quick check of the next faster member, then its export (measured twice) is delivered
    assert [a["kind"] for a in r["attempts"]] == ["check", "check", "export"]
    assert r["within_budget"] and r["measured_latency_ms"] == budget * 0.5 and r["attempts"][-1]["accepted"]
    assert len(calls) == 5  # 2 checks, the export's measurement, 2 as-called re-measurements of the delivered file
    assert r["attempts"][1]["predicted_latency_ms"] < r["attempts"][0]["predicted_latency_ms"]
    exported = read_metadata(out / "model.onnx").subnet
    assert exported == r["attempts"][1]["subnet"] == r["attempts"][2]["subnet"] == json.loads((out / "best.json").read_text())


def test_no_candidate_within_budget_exits_3_and_leaves_only_the_over_budget_model(first_run, tiny_folder, tmp_path, monkeypatch, capsys):
    """Every measurement over the budget: exit 3 naming the fastest measured latency, JSON still printed,
    and the model only as model.over-budget.onnx (a stale model.onnx of an earlier run is removed too)."""
    import hwnas.export.onnx_stages as stages
    import hwnas.generate as gen

    budget = 10.0
    measured = iter(range(100))

    def fake_measure(path, resolution, channels, threads, provider, protocol=None):
        return budget * 3 - next(measured) * 0.01  # always over; later candidates a little faster

    monkeypatch.setattr(stages, "measure_model", fake_measure)
    monkeypatch.setattr(stages, "measure_as_called", fake_measure)
    import hwnas.latency.validate as validate

    monkeypatch.setattr(validate, "drift_now", lambda tab, space=None, **k: 12.0)  # the machine slowed since profiling
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda b, o, **k: real(b, o, **{**k, **KW}))
    out = tmp_path / "over"
    out.mkdir()
    (out / "model.onnx").write_text("stale")
    code = main(["generate", "--budget-ms", str(budget), "--out", str(out), "--data", tiny_folder, "--force", "--json"])
    cap = capsys.readouterr()
    assert code == 3, cap.err
    r = json.loads(cap.out.strip().splitlines()[-1])
    assert not r["within_budget"] and r["onnx"] == str(out / "model.over-budget.onnx")
    assert (out / "model.over-budget.onnx").is_file() and not (out / "model.onnx").exists()
    exports = [a for a in r["attempts"] if a["kind"] == "export"]
    fastest = min(a["measured_latency_ms"] for a in r["attempts"])
    assert 1 <= len(exports) <= gen.MAX_EXPORT_ATTEMPTS and not any(a["within_budget"] for a in r["attempts"])
    assert f"{fastest:.4f} ms" in cap.err and "model.over-budget.onnx" in cap.err and "Traceback" not in cap.err
    assert read_metadata(out / "model.over-budget.onnx").subnet == r["subnet"]
    assert "no candidate measured within it" in (out / "report.md").read_text()
    # the miss is explained: the machine runs the table's own reference subnets 12% slower than when profiled
    assert r["machine_drift_pct"] == 12.0 and "+12.0% slower" in cap.err
    assert f"about {r['measured_latency_ms'] / 1.12:.3f} ms" in cap.err and "+12.0% slower" in (out / "report.md").read_text()


def test_drift_now_times_the_tables_reference_subnets_against_what_it_recorded(first_run, monkeypatch):
    """drift_now: the table's own calibration subnets timed once more; median now/recorded - 1, in percent."""
    from hwnas.latency import load_table, validate
    from hwnas.runtime import ortbench

    tab = load_table(first_run[0]["table"])
    refs = validate.reference_subnets(tab, tab.get_space())
    assert refs
    recorded = {f"ref{i}": rec for i, (_, rec) in enumerate(refs)}
    seen = []

    def slower(jobs, *a, **k):
        seen.extend(j["key"] for j in jobs)
        return {j["key"]: {"median_ms": recorded[j["key"]] * 1.2} for j in jobs}

    monkeypatch.setattr(ortbench, "measure_many", slower)
    assert validate.drift_now(tab) == pytest.approx(20.0)
    assert sorted(seen) == sorted(recorded)  # every reference, exported and timed once


def test_drift_sentence_only_when_the_machine_is_clearly_slower():
    from hwnas.generate import SLOWER_PCT, Delivery, drift_sentence

    d = Delivery(export=None, attempts=[], files={}, within_budget=False, measured_ms=1.2, export_ms=1.2, fastest_ms=1.2,
                 predicted_acc=None)
    for drift, said in [(None, False), (SLOWER_PCT - 0.1, False), (-12.0, False), (SLOWER_PCT + 5, True)]:
        d.machine_drift_pct = drift
        assert bool(drift_sentence(d)) is said


def test_generate_int8_delivers_int8_model_fp32_beside_it_and_ort(first_run, tiny_folder, tmp_path):
    """--int8 --ort-format: INT8 table profiled, model.onnx is QDQ INT8 (metadata precision int8) with the fp32
    model of the same subnet as model.fp32.onnx, model.ort reproduces model.onnx, the operator config is written."""
    from hwnas.data import augment_batch, load_dataset
    from hwnas.generate import generate

    out = tmp_path / "i8"
    r = generate(10.0, out, data=tiny_folder, int8=True, ort_format=True, **KW)
    assert r["precision"] == "int8" and r["cache"]["supernet"] == "hit" and r["within_budget"]
    q, f = onnx.load(str(out / "model.onnx")), onnx.load(str(out / "model.fp32.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert not any(n.op_type == "QuantizeLinear" for n in f.graph.node)
    m8, m32 = read_metadata(out / "model.onnx"), read_metadata(out / "model.fp32.onnx")
    assert m8.precision == "int8" and m32.precision == "fp32" and m8.subnet == m32.subnet == r["subnet"]
    assert r["fp32_onnx"] == str(out / "model.fp32.onnx") and r["onnx"] == str(out / "model.onnx")
    ds = load_dataset(tiny_folder)
    x = augment_batch(ds.val_x, r["subnet"]["resolution"], m8.preprocessing.mean, m8.preprocessing.std, train=False).numpy()
    y = ds.val_y.numpy()
    acc = {}
    for name in ("model.onnx", "model.fp32.onnx", "model.ort"):
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        acc[name] = sess.run(["logits"], {"input": x})[0]
    assert float((acc["model.onnx"].argmax(1) == y).mean()) == pytest.approx(r["val_acc"])
    assert float((acc["model.fp32.onnx"].argmax(1) == y).mean()) == pytest.approx(r["fp32_val_acc"])
    assert r["int8_acc_change"] == pytest.approx(r["val_acc"] - r["fp32_val_acc"])
    assert (acc["model.ort"].argmax(1) == acc["model.onnx"].argmax(1)).all()
    assert r["ort"] == str(out / "model.ort") and "QuantizeLinear" in (out / "model.required_operators.config").read_text()
    report = (out / "report.md").read_text()
    assert "INT8 (QDQ)" in report and "INT8: accuracy" in report and "model.ort" in report


def test_interrupted_training_leaves_no_cache_entry_and_a_damaged_partial_is_redone(tiny_folder):
    """Only a finished checkpoint gets the cache name; a damaged `.partial` left by a crash is discarded."""
    from hwnas.cache import cache_dir, digest
    from hwnas.data import load_dataset
    from hwnas.generate import cached_supernet, supernet_cache_key
    from hwnas.space import load_space, with_classes
    from hwnas.train import load_supernet
    from hwnas.train.config import resolve_config

    ds = load_dataset(tiny_folder)
    sp = with_classes(load_space("mbv3-tiny"), ds.num_classes)
    cfg = resolve_config(sp, tiny_folder, {**TINY_TRAIN, "seed": 7})
    key = digest(supernet_cache_key(sp, ds.fingerprint, cfg))
    final = cache_dir("supernets") / f"{sp.name}-{key}.pt"
    partial = final.with_name(f".{final.stem}.partial.pt")
    partial.write_bytes(b"half a checkpoint")
    assert not final.exists()
    path, hit = cached_supernet(sp, tiny_folder, ds.fingerprint, cfg, progress=False)
    assert path == final and not hit and not partial.exists()
    net, meta = load_supernet(path)
    assert meta.finished and meta.config == cfg.model_dump(mode="json")
    assert cached_supernet(sp, tiny_folder, ds.fingerprint, cfg, progress=False) == (final, True)


def test_time_budget_splits_the_run_and_fine_tunes_the_choice(first_run, tiny_folder, tmp_path):
    """--time-budget: the supernet is planned for its share, the search is sized to its share, and
    what is left fine-tunes the chosen subnet; the whole call ends near the budget."""
    import time

    from hwnas.generate import TRAIN_SHARE, generate

    kw = {k: v for k, v in KW.items() if k not in ("train_config", "search_options")}
    budget = 50.0
    t0 = time.perf_counter()
    r = generate(10.0, tmp_path / "tb", data=tiny_folder, time_budget=f"{budget:g}s", **kw)
    wall = time.perf_counter() - t0
    assert r["time_budget_s"] == budget and r["cache"]["supernet"] == "miss"
    assert r["stage_seconds"]["train"] <= TRAIN_SHARE * budget * 1.25 + 2
    assert r["finetune"] is not None and r["finetune"]["iters"] > 5 and r["stage_seconds"]["finetune"] > 5, (r["stage_seconds"], r["warnings"])
    assert wall <= budget * 1.15, r["stage_seconds"]
    report = (tmp_path / "tb" / "report.md").read_text()
    assert "fine-tuning:" in report and "fine-tune the chosen subnet" in report
    # the exported weights are the fine-tuned ones, not the supernet's: accuracy is what the export measured
    from hwnas.export import read_metadata

    assert read_metadata(tmp_path / "tb" / "model.onnx").val_acc == pytest.approx(r["val_acc"])
    # a second call with the same budget reuses that supernet and gives its time to fine-tuning
    r2 = generate(10.0, tmp_path / "tb2", data=tiny_folder, time_budget=f"{budget:g}s", **kw)
    assert r2["cache"]["supernet"] == "hit" and r2["finetune"]["seconds"] > r["finetune"]["seconds"]


def test_cli_time_budget_errors_exit_2(tmp_path, capsys):
    code = main(["generate", "--budget-ms", "1", "--out", str(tmp_path / "o"), "--time-budget", "later"])
    assert code == 2 and "--time-budget: 'later' is not a duration" in capsys.readouterr().err
    code = main(["generate", "--budget-ms", "1", "--out", str(tmp_path / "o"), "--time-budget", "1m", "--epochs-scale", "2"])
    assert code == 2 and "--time-budget and --epochs-scale" in capsys.readouterr().err
    code = main(["generate", "--budget-ms", "1", "--out", str(tmp_path / "o"), "--val-images", "0"])
    assert code == 2 and "--val-images" in capsys.readouterr().err


def test_given_supernet_skips_training_and_its_space_is_used(first_run, tiny_folder, tmp_path, capsys):
    """generate --supernet CKPT: no training (cache 'given'), the checkpoint's space even with no --space."""
    from hwnas.generate import generate

    ckpt = first_run[0]["supernet"]
    kw = {k: v for k, v in KW.items() if k != "space"}
    r = generate(10.0, tmp_path / "given", data=tiny_folder, supernet=ckpt, **kw)
    assert r["cache"]["supernet"] == "given" and r["supernet"] == ckpt and r["space"] == "mbv3-tiny"
    assert r["stage_seconds"]["train"] < 1.0
    assert "given: not trained by this run" in (tmp_path / "given" / "report.md").read_text()
    # a space other than the checkpoint's, or data with another class count: exit 2 naming the flag
    code = main(["generate", "--budget-ms", "10", "--out", str(tmp_path / "o1"), "--data", tiny_folder,
                 "--supernet", ckpt, "--space", "mbv3-cifar"])
    assert code == 2 and "mbv3-cifar" in capsys.readouterr().err
    code = main(["generate", "--budget-ms", "10", "--out", str(tmp_path / "o2"), "--supernet", ckpt])  # digits: 10 classes
    err = capsys.readouterr().err
    assert code == 2 and "--supernet" in err and "3 classes" in err and "--init" in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_given_supernet_with_a_time_budget_never_takes_the_direct_route(first_run, tiny_folder, tmp_path, monkeypatch):
    """The direct route replaces training a supernet; with --supernet there is none to train, so the given one
    is searched and its time share goes to fine-tuning."""
    import hwnas.generate as gen

    monkeypatch.setattr(gen, "MIN_SUPERNET_EPOCHS", 10**9)  # a probe would call any supernet too short
    kw = {k: v for k, v in KW.items() if k not in ("space", "train_config", "search_options")}
    r = gen.generate(10.0, tmp_path / "gt", data=tiny_folder, supernet=first_run[0]["supernet"], time_budget="20s", **kw)
    assert r["route"] == "supernet" and r["cache"]["supernet"] == "given"
def test_next_candidate_walks_by_measurement_and_skips_tried_members():
    """Over budget: the most accurate untried member whose prediction, scaled by the miss, fits; INT8 accuracy
    miss (within budget): the next most accurate untried member that still fits; nothing left: None."""
    from types import SimpleNamespace

    from hwnas.generate import next_candidate
    from hwnas.space import load_space

    space = load_space("mbv3-tiny")
    subs = [space.sample(seed=i) for i in range(5)]
    front = [SimpleNamespace(subnet=s, predicted_latency_ms=lat, predicted_acc=acc)
             for s, lat, acc in zip(subs, [1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 0.6, 0.7, 0.8, 0.9])]
    # the 5.0 ms member measured 7.5 (x1.5) against a 5.0 budget: members predicted <= 3.33 fit; the most accurate is 3.0
    assert next_candidate(front, front[4], 7.5, 5.0) is front[2]
    assert next_candidate(front, front[4], 7.5, 5.0, exclude=[subs[2]]) is front[1]
    # within budget (an INT8 accuracy miss): the next most accurate that still fits, never one already tried
    assert next_candidate(front, front[3], 4.0, 5.0) is front[4]
    assert next_candidate(front, front[3], 4.0, 5.0, exclude=[subs[4]]) is front[2]
    # nothing fits even corrected, but faster members exist: the fastest; none faster: None
    assert next_candidate(front, front[1], 20.0, 5.0) is front[0]
    assert next_candidate(front, front[0], 20.0, 5.0) is None


def test_int8_accuracy_drop_sends_generate_to_the_next_candidate(first_run, tiny_folder, tmp_path, monkeypatch):
    """The first INT8 export 'loses' 5 points: it is reported and another candidate is exported (bounded);
    the delivered one is the first that keeps its accuracy, or, if none does, the report says so."""
    import hwnas.export as ex
    from hwnas.generate import MAX_EXPORT_ATTEMPTS, generate

    real = ex.export_subnet
    calls: list[dict] = []

    def lossy_first(*a, **k):
        r = real(*a, **k)
        calls.append(r.subnet)
        return r.model_copy(update={"int8_acc_change": -0.05}) if len(calls) == 1 else r.model_copy(update={"int8_acc_change": 0.0})

    monkeypatch.setattr(ex, "export_subnet", lossy_first)
    out = tmp_path / "drop"
    r = generate(10.0, out, data=tiny_folder, int8=True, **KW)
    exports = [a for a in r["attempts"] if a["kind"] == "export"]
    assert exports[0]["int8_acc_change"] == -0.05
    assert 1 <= len(exports) <= MAX_EXPORT_ATTEMPTS
    if len(exports) > 1:  # another front member existed: it was exported and delivered
        assert not exports[0]["accepted"]
        assert exports[1]["subnet"] != exports[0]["subnet"] and exports[1]["accepted"]
        assert read_metadata(out / "model.onnx").subnet == exports[1]["subnet"] == r["subnet"]
    else:  # no other front member fits: the least-losing one ships, and the report says it loses
        assert exports[0]["accepted"]
        assert any("loses more than 1 point" in w for w in r["warnings"])
    assert "-5.00%" in (out / "report.md").read_text()


def test_cli_int8_with_an_fp32_table_exits_2_before_any_work(tmp_path, capsys):
    from pathlib import Path

    table = Path(__file__).resolve().parents[1] / "latency_tables" / "mbv3-tiny-cpu-1t.json"
    code = main(["generate", "--budget-ms", "0.1", "--out", str(tmp_path / "o"), "--int8", "--table", str(table)])
    err = capsys.readouterr().err
    assert code == 2 and "fp32 latency table" in err and "profile --int8" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_direct_route_when_the_time_budget_cannot_train_a_supernet(tiny_folder, tmp_path, monkeypatch):
    """A time budget that would give the supernet too few epochs: no supernet; the largest subnet within
    the latency budget at the data's resolution that gets its epochs is trained from scratch and shipped
    with the usual checks, outputs in the SPEC formats, and a report that says so."""
    import time

    import hwnas.generate as gen
    from hwnas.export import read_metadata
    from hwnas.generate import time_budget
    from hwnas.space import load_space, with_classes
    from hwnas.space.cost import macs

    monkeypatch.setattr(time_budget, "MIN_SUPERNET_EPOCHS", 10**9)  # whatever the probe finds is too few
    kw = {k: v for k, v in KW.items() if k not in ("train_config", "search_options")}
    budget = 30.0
    t0 = time.perf_counter()
    r = gen.generate(10.0, tmp_path / "d", data=tiny_folder, time_budget=f"{budget:g}s", **kw)
    wall = time.perf_counter() - t0
    out = tmp_path / "d"
    assert r["route"] == "direct" and r["cache"]["supernet"] == "skipped" and r["supernet"] == ""
    assert r["finetune"]["route"] == "direct" and r["finetune"]["iters"] > 5
    assert r["subnet"]["resolution"] == 12  # the table's only resolution, the closest to the 8-pixel images
    assert wall <= budget * 1.25, r["stage_seconds"]
    sp = with_classes(load_space("mbv3-tiny"), 3)
    best = json.loads((out / "best.json").read_text())
    pareto = json.loads((out / "pareto.json").read_text())
    assert best == r["subnet"] and len(pareto) == 1 and pareto[0]["subnet"] == best
    assert pareto[0]["predicted_acc"] == pytest.approx(r["val_acc"]) and pareto[0]["macs"] == macs(sp, sp.validate_subnet(best))
    assert read_metadata(out / "model.onnx").val_acc == pytest.approx(r["val_acc"])  # the trained weights were exported
    assert (out / "pareto.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "chosen without a supernet" in report and "No search" in report and "from scratch" in report
    assert any("too few" in w for w in r["warnings"])


def test_score_int8_matches_what_the_int8_export_reports(tiny_folder, tmp_path):
    """score_int8 builds the fp32 and INT8 models as export_subnet(int8=True) does: the same ONNX Runtime
    accuracies for the same subnet and images (all of them, and a class-stratified subset). An untrained
    supernet with random BN affines, so accuracies differ between subnets and INT8 really changes some."""
    from helpers import perturb

    from hwnas.data import load_dataset
    from hwnas.export import export_subnet, score_int8
    from hwnas.space import load_space, with_classes
    from hwnas.supernet import Supernet

    ds = load_dataset(tiny_folder)
    sp = with_classes(load_space("mbv3-tiny"), ds.num_classes)
    torch.manual_seed(0)
    net = Supernet(sp)
    perturb(net, 0)
    seen = []
    for i, sub in enumerate((sp.smallest(12), sp.largest(12))):
        for n in (None, 12):
            got = score_int8(net, sub, ds, val_images=n)
            exp = export_subnet(net, sub, ds if n is None else ds.with_val_subset(n), tmp_path / f"m{i}-{n}.onnx", int8=True,
                                progress=False)
            assert got.val_images == exp.val_images == (n or 24)
            assert got.fp32_acc == exp.val_acc and got.int8_acc == exp.int8_val_acc
            seen.append((got.fp32_acc, got.int8_acc))
    assert len(set(seen)) > 1 and any(a != b for a, b in seen), seen  # neither a constant nor the fp32 number twice


def _fake_scores(int8_accs: list[float]):
    """A stand-in for score_int8 that hands out the given INT8 accuracies in call order (fp32 0.9 each) and
    records the subnets it was asked about."""
    from hwnas.export import Int8Score

    calls: list[dict] = []

    def fake(net, subnet, ds, *, val_images=None, seed=0):
        calls.append(subnet.model_dump(mode="json"))
        return Int8Score(fp32_acc=0.9, int8_acc=int8_accs[len(calls) - 1], val_images=7)

    return fake, calls


def test_score_finalists_starts_from_the_best_int8_and_ties_keep_the_search_order(monkeypatch):
    from types import SimpleNamespace

    import hwnas.export.int8_score as scoring
    from hwnas.generate import INT8_FINALISTS, int8_finalists, score_finalists
    from hwnas.space import load_space

    sp = load_space("mbv3-tiny")
    subs = [sp.smallest(r) for r in sp.resolutions]
    front = [SimpleNamespace(subnet=subs[i % len(subs)], predicted_acc=a, predicted_latency_ms=ms)
             for i, (a, ms) in enumerate([(0.5, 1.0), (0.8, 3.0), (0.7, 2.0), (0.8, 2.5), (0.6, 1.5)])]
    chosen = int8_finalists(front)
    assert INT8_FINALISTS == 3 and [e.predicted_acc for e in chosen] == [0.8, 0.8, 0.7]
    assert chosen[0].predicted_latency_ms == 2.5  # ties in predicted accuracy: the faster first, as the search's best
    for accs, start in (([0.5, 0.6, 0.7], 2), ([0.6, 0.7, 0.7], 1), ([0.4, 0.4, 0.4], 0)):
        fake, calls = _fake_scores(accs)
        monkeypatch.setattr(scoring, "score_int8", fake)
        scored = score_finalists(None, None, chosen, val_images=None, seed=0, progress=False)
        assert [f.start for f in scored] == [i == start for i in range(3)]
        assert [f.int8_acc for f in scored] == accs and calls == [e.subnet.model_dump(mode="json") for e in chosen]
    assert score_finalists(None, None, [], val_images=None, seed=0, progress=False) == []


def test_int8_generate_starts_from_the_finalist_with_the_best_int8_accuracy(first_run, tiny_folder, tmp_path, monkeypatch):
    """With --int8 the search's most accurate front members within the budget are scored quantised, and the
    budget walk starts from the one with the best INT8 accuracy (here the search's last finalist, not its best)."""
    import hwnas.export.int8_score as scoring
    from hwnas.generate import INT8_FINALISTS, generate

    fake, calls = _fake_scores([0.2, 0.5, 0.8])
    monkeypatch.setattr(scoring, "score_int8", fake)
    fronts = _fixed_front(monkeypatch)  # four members within the budget: how many the tiny search leaves varies
    out = tmp_path / "fin"
    r = generate(10.0, out, data=tiny_folder, int8=True, **KW)
    fin = r["int8_finalists"]
    assert len(fronts) == 1 and all(e.predicted_latency_ms <= 10.0 for e in fronts[0])
    within = sorted(fronts[0], key=lambda e: (-e.predicted_acc, e.predicted_latency_ms))[:INT8_FINALISTS]
    assert len(fin) == INT8_FINALISTS == 3 and [f["predicted_acc"] for f in fin] == [0.8, 0.7, 0.6]
    assert [f["subnet"] for f in fin] == [e.subnet.model_dump(mode="json") for e in within] == calls
    assert [f["int8_acc"] for f in fin] == [0.2, 0.5, 0.8] and all(f["fp32_acc"] == 0.9 for f in fin)
    assert [f["start"] for f in fin] == [False, False, True]
    assert fin[-1]["subnet"] != fin[0]["subnet"] and fin[0]["predicted_acc"] >= fin[-1]["predicted_acc"]
    assert r["attempts"][0]["subnet"] == fin[-1]["subnet"]  # the walk started from the best INT8 finalist
    assert r["stage_seconds"]["int8_finalists"] > 0
    report = (out / "report.md").read_text()
    assert "INT8 finalists" in report and "| finalist | predicted ms | search acc | fp32 acc | INT8 acc | started here |" in report
    assert f"{100 * fin[-1]['int8_acc']:.2f}% | yes |" in report


def test_fp32_generate_scores_no_finalists(first_run, tiny_folder, tmp_path, monkeypatch):
    import hwnas.export.int8_score as scoring
    from hwnas.generate import generate

    def boom(*a, **k):
        raise AssertionError("fp32 generate must not score finalists quantised")

    monkeypatch.setattr(scoring, "score_int8", boom)
    out = tmp_path / "fp32"
    r = generate(10.0, out, data=tiny_folder, **KW)
    assert r["precision"] == "fp32" and r["int8_finalists"] == [] and "int8_finalists" not in r["stage_seconds"]
    assert "INT8 finalists:" not in (out / "report.md").read_text()

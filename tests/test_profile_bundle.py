"""Profiling a device we cannot reach: bundle -> standalone runner -> import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.latency import LatencyPredictor, load_table
from hwnas.latency.pieces import all_pieces
from hwnas.space import Space

# Runs the bundle's runner with torch and hwnas made unimportable: any attempt raises, so a
# zero exit proves the runner needs neither. It also checks neither got into sys.modules.
GUARD = r"""
import sys, runpy
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'hwnas', 'onnx'):
            raise ImportError(f'blocked import of {name}')
        return None
sys.meta_path.insert(0, Block())
runner = sys.argv[1]
sys.argv = [runner] + sys.argv[2:]
try:
    runpy.run_path(runner, run_name='__main__')
except SystemExit as e:
    if e.code not in (0, None):
        raise
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hwnas', 'onnx'))
assert not bad, bad
print('GUARD-OK')
"""


def micro_space() -> Space:
    return Space.model_validate(dict(
        name="micro-bundle", num_classes=3,
        stem=dict(out_channels=8, kernel=3, stride=1, act="hswish"),
        first_block=dict(out_channels=8, kernel=3, stride=1, act="relu"),
        stages=[
            dict(out_channels=8, stride=1, act="relu", se=False, depths=[1, 2], kernels=[3, 5], expands=[2]),
            dict(out_channels=16, stride=2, act="hswish", se=True, depths=[1, 2], kernels=[3], expands=[2]),
        ],
        head=dict(final_expand=16, feature_mix=None, act="hswish", dropout=0.0),
        resolutions=[8, 12],
    ))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    sp = d / "space.json"
    space = micro_space()
    sp.write_text(json.dumps(space.model_dump(mode="json")))
    out = d / "b"
    assert main(["profile-bundle", "--space", str(sp), "--out", str(out), "--calibration-subnets", "4"]) == 0
    return out, space, sp


def _run_runner(bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", GUARD, str(bundle / "runner.py"), "--quiet", *extra],
        capture_output=True, text=True, timeout=300, cwd=bundle.parent,
    )


def test_bundle_layout(bundle):
    out, space, _ = bundle
    man = json.loads((out / "manifest.json").read_text())
    assert man["format"] == "hwnas-profile-bundle" and man["space"] == "micro-bundle"
    assert {e["key"] for e in man["entries"]} == set(all_pieces(space, space.resolutions))
    assert len(man["calibration"]) == 4
    for e in man["entries"] + man["calibration"]:
        assert (out / e["file"]).is_file()
    src = (out / "runner.py").read_text()
    assert "import torch" not in src and "hwnas." not in src.replace("hwnas profile", "")
    assert not list(out.parent.glob(".b.*"))  # built aside and renamed: no leftovers


def test_runner_needs_neither_torch_nor_hwnas_and_import_makes_a_table(bundle, capsys):
    out, space, _ = bundle
    r = _run_runner(out)
    assert r.returncode == 0, r.stderr
    assert "GUARD-OK" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["fingerprint"]["threads"] == 1 and res["fingerprint"]["onnxruntime"]
    table_path = out.parent / "device.json"
    assert main(["profile-import", "--bundle", str(out), "--out", str(table_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["table"] == str(table_path) and d["entries"] == len(all_pieces(space, space.resolutions))
    t = load_table(table_path, space)
    assert t.source == "bundle" and len(t.calibration.points) == 4
    assert t.protocol.net_call == "session-run"  # the phone times whole networks as an app calls them
    assert LatencyPredictor(t, space).predict(space.largest(12)) > 0
    # results of a runner from before net_call timed whole networks with io-binding: the table says so
    assert t.protocol.estimator == "min-round-median"
    res["protocol"].pop("net_call")
    res["protocol"].pop("estimator")
    (out / "results.json").write_text(json.dumps(res))
    assert main(["profile-import", "--bundle", str(out), "--out", str(out.parent / "old.json"), "--json"]) == 0
    old = load_table(out.parent / "old.json", space).protocol
    assert old.net_call == "io-binding" and old.estimator == "median"


def test_runner_rejects_bad_arguments(bundle):
    out, _, _ = bundle
    r = _run_runner(out, "--provider", "NoSuchExecutionProvider")
    assert r.returncode != 0 and "available" in r.stderr
    r = subprocess.run([sys.executable, str(out / "runner.py"), "--bundle", str(out.parent)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "manifest.json" in r.stderr


def test_import_refuses_missing_foreign_or_incomplete_results(bundle, tmp_path, capsys):
    out, _, _ = bundle
    if not (out / "results.json").exists():
        pytest.skip("needs the runner test's results")
    good = json.loads((out / "results.json").read_text())
    table = tmp_path / "t.json"
    # incomplete
    bad = dict(good, results={k: v for i, (k, v) in enumerate(good["results"].items()) if i > 0})
    (tmp_path / "r1.json").write_text(json.dumps(bad))
    assert main(["profile-import", "--bundle", str(out), "--results", str(tmp_path / "r1.json"), "--out", str(table)]) == 2
    assert "missing" in capsys.readouterr().err
    # from another bundle
    (tmp_path / "r2.json").write_text(json.dumps(dict(good, bundle_id="0123456789abcdef")))
    assert main(["profile-import", "--bundle", str(out), "--results", str(tmp_path / "r2.json"), "--out", str(table)]) == 2
    assert "bundle_id" in capsys.readouterr().err
    # damaged entry
    k0 = next(iter(good["results"]))
    bad = json.loads(json.dumps(good))
    bad["results"][k0]["median_ms"] = -1
    (tmp_path / "r3.json").write_text(json.dumps(bad))
    assert main(["profile-import", "--bundle", str(out), "--results", str(tmp_path / "r3.json"), "--out", str(table)]) == 2
    assert "median_ms" in capsys.readouterr().err
    # no results at all
    assert main(["profile-import", "--bundle", str(tmp_path), "--out", str(table)]) == 2
    assert not table.exists()


def test_bundle_refuses_non_empty_output(bundle, capsys):
    out, _, sp = bundle
    before = sorted(p.name for p in out.iterdir())
    assert main(["profile-bundle", "--space", str(sp), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_guard_really_blocks_torch_and_hwnas(tmp_path):
    """Negative control: the guard used above does fail a script that imports torch or hwnas."""
    for mod in ("torch", "hwnas.space"):
        script = tmp_path / f"uses_{mod}.py"
        script.write_text(f"import {mod}\n")
        r = subprocess.run([sys.executable, "-c", GUARD, str(script)], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "blocked import" in r.stderr

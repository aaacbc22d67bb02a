"""`torchrun --nproc-per-node 2 -m hwnas search` on CPU (gloo): the same front as one process, one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hwnas
from hwnas.cli import main
from hwnas.search.scoring import EtaReporter, shard_by_cost
from hwnas.space import with_classes
from tests.test_search_cli import FAST, _fake_checkpoint, _fake_table, _micro_space


def test_shard_by_cost_balances_and_covers_every_index():
    costs = [9.0, 1.0, 1.0, 1.0, 5.0, 4.0, 1.0]
    shards = shard_by_cost(costs, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    loads = [sum(costs[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= 1.0  # round-robin by index would give 16 vs 6
    assert shard_by_cost(costs, 2) == shards and shard_by_cost(costs, 1) == [list(range(7))]
    assert shard_by_cost([1.0], 3) == [[0], [], []]


def test_eta_said_once_then_only_when_it_moves_a_lot():
    said: list[str] = []
    now = [0.0]
    eta = EtaReporter(100, said.append, processes=2, clock=lambda: now[0])
    assert eta.update(2, 2.0) is None  # too few timed evaluations yet
    msg = eta.update(4, 4.0)
    assert msg and said == [msg] and "96 of 100" in msg and "1m36s" in msg and "2 processes" in msg
    now[0] = 16.0
    assert eta.update(20, 20.0) is None  # on schedule: nothing new to say
    now[0] = 120.0
    assert eta.update(30, 90.0) is not None and len(said) == 2 and said[1].startswith("ETA update")


@pytest.mark.timeout(180)
def test_torchrun_two_processes_same_front_as_one(tmp_path: Path, capsys: pytest.CaptureFixture):
    space = with_classes(_micro_space(), 10)
    _fake_checkpoint(space, tmp_path / "ckpt.pt")
    _fake_table(space, tmp_path / "table.json", [8, 12])
    from hwnas.latency import LatencyPredictor, load_table

    budget = str(round(3 * LatencyPredictor(load_table(tmp_path / "table.json", space), space).min_latency_ms(), 4))
    args = ["search", "--supernet", str(tmp_path / "ckpt.pt"), "--table", str(tmp_path / "table.json"), "--budget-ms",
            budget, "--data", "digits", "--val-images", "120", "--device", "cpu", "--json", *FAST]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    root = str(Path(hwnas.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "hwnas",
         *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=170, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    two = json.loads(lines[0])
    assert two["processes"] == 2 and one["processes"] == 1 and two["val_images"] == one["val_images"] == 120
    for name in ("pareto.json", "best.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert two["hypervolume"] == one["hypervolume"] and two["evaluations_real"] == one["evaluations_real"]
    assert proc.stderr.count("ETA: about ") == 1 and "on 2 processes" in (tmp_path / "two" / "search.log").read_text()

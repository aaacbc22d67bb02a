"""`hwnas train` end to end: --json keys, refusals, SIGKILL + --resume, bad inputs, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hwnas.cli import main as cli_main
from hwnas.train.checkpoint import load_checkpoint, load_supernet
import hwnas.train.step as step_mod

MICRO_SPACE = dict(
    name="micro", num_classes=2,
    stem=dict(out_channels=8, kernel=3, stride=1, act="hswish"),
    stages=[dict(out_channels=8, stride=2, act="relu", se=False, depths=[1, 2], kernels=[3, 5], expands=[2, 3]),
            dict(out_channels=16, stride=1, act="hswish", se=True, depths=[1, 2], kernels=[3, 5], expands=[2, 3])],
    head=dict(final_expand=16, act="hswish", dropout=0.0),
    resolutions=[8, 12],
)


def tiny_config(epochs: int = 1, every: int = 0, lr: float = 0.05, batch: int = 8) -> dict:
    phases = ["full", "kernel", "depth1", "depth2", "expand1", "expand2"]
    return dict(
        schedule="progressive",
        phases={p: dict(epochs=epochs, lr=lr, warmup_epochs=0, subnets_per_step=1 if i < 2 else 2) for i, p in enumerate(phases)},
        batch_size=batch, eval_subnets=1, checkpoint_every_iters=every, checkpoint_every_seconds=0,
    )


def write_image_folder(root: Path, classes: tuple[str, ...] = ("left", "right"), n_train: int = 24, n_val: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
                img[:, (ci % 2) * 4 : (ci % 2) * 4 + 4] += 180
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("train-cli")
    (d / "space.yaml").write_text(yaml.safe_dump(MICRO_SPACE))
    (d / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    write_image_folder(d / "data")
    return d


def hwnas(*args: str, cwd: Path, env_extra: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "hwnas", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def train_args(w: Path, out: str, *extra: str) -> list[str]:
    return ["train", "--space", str(w / "space.yaml"), "--data", str(w / "data"), "--out", str(w / out), "--no-progress", *extra]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process (fast); returns (exit code, stdout, stderr)."""
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_keys_and_refusing_an_existing_out(workdir: Path, capsys):
    r = hwnas(*train_args(workdir, "a.pt", "--config", str(workdir / "tiny.yaml"), "--json"), cwd=workdir)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("checkpoint", "epochs", "val_acc_max", "val_acc_min", "seconds"):
        assert key in res
    assert res["epochs"] == 6 and 0 <= res["val_acc_min"] <= 1 and 0 <= res["val_acc_max"] <= 1
    assert Path(res["checkpoint"]) == (workdir / "a.pt").resolve()
    net, meta = load_supernet(workdir / "a.pt")
    assert meta.finished and meta.space["num_classes"] == 2 and net.space.name == "micro"
    assert (workdir / "a.metrics.jsonl").is_file()

    before = (workdir / "a.pt").read_bytes()
    code, _, err = run_cli(capsys, *train_args(workdir, "a.pt", "--config", str(workdir / "tiny.yaml")))
    assert code == 2 and "already exists" in err and "--resume" in err
    assert "Traceback" not in err
    assert (workdir / "a.pt").read_bytes() == before  # nothing the user had is lost

    # --resume with another space: exit 2, naming the checkpoint and the space
    code, _, err = run_cli(capsys, "train", "--space", "mbv3-tiny", "--data", str(workdir / "data"),
                           "--out", str(workdir / "a.pt"), "--resume")
    assert code == 2 and "a.pt" in err and "micro" in err, err

    # damaged checkpoint: exit 2, naming the file
    bad = workdir / "bad.pt"
    bad.write_bytes(before[:1000])
    code, _, err = run_cli(capsys, *train_args(workdir, "bad.pt", "--resume"))
    assert code == 2 and "bad.pt" in err and "damaged" in err, err
    # --resume where nothing exists
    code, _, err = run_cli(capsys, *train_args(workdir, "nothing.pt", "--resume"))
    assert code == 2 and "no checkpoint" in err


def test_bad_data_and_config_give_exit_2(workdir: Path, tmp_path: Path, capsys):
    space = str(workdir / "space.yaml")
    one = write_image_folder(tmp_path / "one", classes=("only",))
    code, _, err = run_cli(capsys, "train", "--space", space, "--data", str(one), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "at least 2 classes" in err, err
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    code, _, err = run_cli(capsys, "train", "--space", space, "--data", str(empty), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "empty" in err, err
    broken = write_image_folder(tmp_path / "broken", n_train=3, n_val=2)
    (broken / "train" / "left" / "001.png").write_bytes(b"not a png")
    code, _, err = run_cli(capsys, "train", "--space", space, "--data", str(broken), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "001.png" in err, err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("schedule: progressive\nphases:\n  full:\n    epochs: -1\n")
    code, _, err = run_cli(capsys, *train_args(workdir, "y.pt", "--config", str(cfg)))
    assert code == 2 and "phases.full.epochs" in err, err
    code, _, err = run_cli(capsys, *train_args(workdir, "y.pt", "--device", "tpu"))
    assert code == 2 and "--device" in err
    code, _, err = run_cli(capsys, *train_args(workdir, "y.pt", "--epochs-scale", "-1"))
    assert code == 2 and "--epochs-scale" in err
    assert not (tmp_path / "x.pt").exists() and not (workdir / "y.pt").exists()


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(workdir: Path, tmp_path: Path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(epochs=2, every=3, batch=4)))  # 12 iterations per epoch, 12 epochs
    ref = hwnas(*train_args(workdir, "ref.pt", "--config", str(cfg), "--json"), cwd=workdir)
    assert ref.returncode == 0, ref.stderr
    ref_res = json.loads(ref.stdout.strip().splitlines()[-1])

    out = workdir / "killed.pt"
    metrics = workdir / "killed.metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", *train_args(workdir, "killed.pt", "--config", str(cfg))],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the second epoch is under way (mid-epoch checkpoints exist)
        if metrics.exists() and metrics.read_text().count('"type": "epoch"') >= 1 and out.exists():
            time.sleep(0.3)
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(out)
    killed_at = state["meta"]["epoch"]
    assert not state["meta"]["finished"] and 1 <= killed_at < 12, killed_at

    r = hwnas(*train_args(workdir, "killed.pt", "--resume", "--json"), cwd=workdir)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["epochs"] == ref_res["epochs"] == 12
    # every step is a function of its position and the saved state: the resumed run is the same run
    assert res["weights_sha256"] == ref_res["weights_sha256"]
    assert res["val_acc"] == ref_res["val_acc"]
    log = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert any(r["type"] == "resume" for r in log)


def test_nan_loss_exits_1_with_a_clear_message(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):

    real = step_mod.training_loss
    monkeypatch.setattr(step_mod, "training_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    out = tmp_path / "nan.pt"
    code = cli_main(["train", "--space", str(workdir / "space.yaml"), "--data", str(workdir / "data"), "--out", str(out),
                     "--config", str(workdir / "tiny.yaml"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "loss became" in err and "last good checkpoint" in err and "Traceback" not in err
    assert load_checkpoint(out)["meta"]["epoch"] == 0  # the initial checkpoint is kept, intact


def test_leaving_the_group_frees_the_ddp_wrapper_before_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A DistributedDataParallel wrapper is in a reference cycle: without a collection it outlives the
    training function and the destroyed group, and may be destroyed only at interpreter exit, where gloo
    aborts ('terminate called without an active exception', seen once in CI)."""
    import gc
    import weakref

    import torch.distributed as dist

    from hwnas.train.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    gc_was = gc.isenabled()
    gc.disable()  # the collector must not run on its own in between
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2), find_unused_parameters=True)
        ddp(torch.randn(4, 3)).sum().backward()
        ref = weakref.ref(ddp)
        cycle: list = [ddp]
        cycle.append(cycle)  # DDP's own cycles depend on torch's version and what ran before: make one for sure
        del ddp, cycle
        assert ref() is not None  # the cycle keeps it
        alive_at_destroy: list[bool] = []
        real_destroy = dist.destroy_process_group
        monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: (alive_at_destroy.append(ref() is not None),
                                                                             real_destroy(*a, **k))[1])
        DistContext(0, 1, 0, owns_group=True).close()
        assert alive_at_destroy == [False] and not dist.is_initialized()
    finally:
        if gc_was:
            gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed")
def test_two_process_data_parallel(workdir: Path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --standalone: torchrun picks a free local rendezvous port itself
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "hwnas",
           *train_args(workdir, "ddp.pt", "--config", str(workdir / "tiny.yaml"), "--json")]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [x for x in r.stdout.strip().splitlines() if x.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    res = json.loads(lines[0])
    assert res["world_size"] == 2 and res["ranks_in_sync"] is True and res["epochs"] == 6
    net, meta = load_supernet(workdir / "ddp.pt")
    assert meta.finished
    from hwnas.train.api import weights_digest

    assert weights_digest(net) == res["weights_sha256"]

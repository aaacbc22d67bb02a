"""`hwnas train --init CKPT` (transfer): what is copied, what starts fresh, the transfer defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hwnas.cli import main as cli_main
from hwnas.errors import UserError
from hwnas.space import Space
from hwnas.supernet import Supernet
from hwnas.train.checkpoint import load_supernet
from hwnas.train.config import TRANSFER_LR_SCALE, default_config, resolve_config, transfer_config
from hwnas.train.transfer import transfer_weights

from test_train_cli import MICRO_SPACE, tiny_config, write_image_folder


def micro(num_classes: int = 2, **stage1) -> Space:
    d = json.loads(json.dumps(MICRO_SPACE))
    d["num_classes"] = num_classes
    d["stages"][1].update(stage1)
    return Space.model_validate(d)


def test_transfer_copies_matching_roles_and_leaves_the_classifier_fresh():
    src = Supernet(micro(2))
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    dst = Supernet(micro(3))
    rep = transfer_weights(dst, src.state_dict(), "src.pt", "micro")
    assert rep.fresh == ["head.classifier.weight", "head.classifier.bias"]
    assert set(rep.unused) == {"head.classifier.weight", "head.classifier.bias"}
    assert len(rep.copied) == len(dst.state_dict()) - 2
    assert torch.equal(dst.stages[1][1].depthwise.transforms["5to3"], src.stages[1][1].depthwise.transforms["5to3"])
    assert torch.equal(dst.stem[1].running_var, src.stem[1].running_var)
    assert not torch.equal(dst.head.classifier.bias, src.head.classifier.bias + 0)  # fresh: zeros, not src's ones
    # the same class count: the classifier is still fresh (new data, new classes)
    same = Supernet(micro(2))
    assert "head.classifier.weight" in transfer_weights(same, src.state_dict(), "src.pt", "micro").fresh


def test_transfer_leaves_a_wider_stage_fresh_and_refuses_an_unrelated_supernet():
    src = Supernet(micro(2))
    wider = Supernet(micro(2, out_channels=24))  # stage 1 and the head input are wider
    rep = transfer_weights(wider, src.state_dict(), "src.pt", "micro")
    assert "stages.1.0.project.weight" in rep.fresh and "stages.0.0.expand_conv.weight" in rep.copied
    assert "head.final_expand.0.weight" in rep.fresh
    with pytest.raises(UserError, match="--init other.pt: no tensor"):
        transfer_weights(src, {"x.weight": torch.zeros(3)}, "other.pt", "resnet")


def test_transfer_defaults_are_short_and_gentle():
    sp = micro(2)
    base, tr = default_config(sp, "/data"), transfer_config(sp, "/data")
    assert tr.schedule == base.schedule and len(tr.phases) == len(base.phases)
    for b, t in zip(base.phases, tr.phases):
        assert t.lr == pytest.approx(b.lr * TRANSFER_LR_SCALE)
        assert 1 <= t.epochs < b.epochs
    # a partial --config merges onto the transfer defaults, not the from-scratch ones
    cfg = resolve_config(sp, "/data", {"batch_size": 4}, transfer=True)
    assert cfg.batch_size == 4 and cfg.phases[0].lr == tr.phases[0].lr


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("transfer")
    (d / "space.yaml").write_text(yaml.safe_dump(MICRO_SPACE))
    write_image_folder(d / "a", classes=("left", "right"))
    write_image_folder(d / "b", classes=("l0", "r0", "l1"), n_train=16)
    (d / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    code = cli_main(["train", "--space", str(d / "space.yaml"), "--data", str(d / "a"), "--out", str(d / "src.pt"),
                     "--config", str(d / "tiny.yaml"), "--no-progress"])
    assert code == 0
    return d


def test_cli_init_reports_copied_and_fresh_and_starts_from_the_source(source: Path, capsys):
    d = source
    capsys.readouterr()
    # a learning rate too small to move anything: the result still holds the source's weights
    (d / "still.yaml").write_text(yaml.safe_dump({**tiny_config(lr=1e-9), "eval_subnets": 0}))
    args = ["train", "--space", str(d / "space.yaml"), "--data", str(d / "b"), "--out", str(d / "dst.pt"),
            "--init", str(d / "src.pt"), "--config", str(d / "still.yaml"), "--no-progress"]
    assert cli_main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ini = res["init"]
    assert ini["fresh"] == ["head.classifier.weight", "head.classifier.bias"] and ini["copied_count"] > 50
    assert ini["checkpoint"] == str(d / "src.pt")
    src, _ = load_supernet(d / "src.pt")
    dst, meta = load_supernet(d / "dst.pt")
    assert dst.space.num_classes == 3 and meta.finished
    torch.testing.assert_close(dst.stages[1][1].expand_conv.weight, src.stages[1][1].expand_conv.weight, atol=1e-6, rtol=0)
    # human output names it too; --init with --resume, or a missing --init file: exit 2
    (d / "dst.pt").unlink()
    assert cli_main(args) == 0
    assert "init: " in capsys.readouterr().out
    code = cli_main(args + ["--resume"])
    assert code == 2 and "--init" in capsys.readouterr().err
    code = cli_main(args[:-5] + ["--init", str(d / "nope.pt"), "--out", str(d / "x.pt")])
    assert code == 2 and "nope.pt" in capsys.readouterr().err and not (d / "x.pt").exists()

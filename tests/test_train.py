"""Unit tests for hwnas.train: config, phase sampling, losses, BN recalibration, evaluation, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from torch import nn

from hwnas.data import Dataset
from hwnas.errors import TrainingDiverged, UserError
from hwnas.space import Space, load_space, with_classes
from hwnas.supernet import Supernet
from hwnas.train.bn import recalibrate_bn
from hwnas.train.checkpoint import SupernetMeta, load_checkpoint, load_supernet, save_checkpoint
from hwnas.train.config import PHASES, TrainConfig, default_config, progressive_phases, resolve_config
from hwnas.train.ema import WeightEMA, step_decay
from hwnas.train.evaluate import accuracy, evaluate_subnet
from hwnas.train.losses import adaptive_alpha_loss, alpha_divergence, distillation_loss, kd_loss, soft_target_ce, training_loss
from hwnas.train.phases import eval_subnets, phase_space, sample_step
from hwnas.train.schedule import CosineSchedule, make_optimizer
import hwnas.train.step as step_mod


def micro_space(num_classes: int = 2) -> Space:
    """A two-stage space small enough to train in milliseconds, with every elastic dimension."""
    ch = dict(depths=[1, 2, 3], kernels=[3, 5], expands=[2, 3, 4])
    return Space.model_validate(dict(
        name="micro", num_classes=num_classes,
        stem=dict(out_channels=8, kernel=3, stride=1, act="hswish"),
        stages=[dict(out_channels=8, stride=2, act="relu", se=False, **ch),
                dict(out_channels=16, stride=1, act="hswish", se=True, **ch)],
        head=dict(final_expand=16, feature_mix=None, act="hswish", dropout=0.0),
        resolutions=[8, 12],
    ))


def tiny_dataset(n_train: int = 40, n_val: int = 16, seed: int = 0) -> Dataset:
    """Two separable classes: bright left half vs bright right half (plus noise), 8x8 RGB uint8."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 2
        x = torch.randint(0, 60, (n, 3, 8, 8), generator=g)
        x[y == 0, :, :, :4] += 180
        x[y == 1, :, :, 4:] += 180
        return x.to(torch.uint8), y.to(torch.int64)

    tx, ty = make(n_train)
    vx, vy = make(n_val)
    return Dataset("tiny", ["a", "b"], tx, ty, vx, vy, (0.4, 0.4, 0.4), (0.3, 0.3, 0.3), f"tiny{seed}")


# ---------------------------------------------------------------- config


def test_default_configs_are_valid_and_digits_do_not_flip():
    tiny = load_space("mbv3-tiny")
    d = default_config(tiny, "digits")
    assert d.flip is False and default_config(tiny, "/some/folder").flip is True
    assert d.schedule == "sandwich" and [p.name for p in d.phases] == ["sandwich"]
    ofa = default_config(load_space("mbv3-imagenet"), "/imagenet", schedule="progressive")
    assert [p.name for p in ofa.phases] == list(PHASES)
    assert [p.epochs for p in ofa.phases] == [180, 125, 25, 125, 25, 125]
    assert [p.subnets_per_step for p in ofa.phases] == [1, 1, 2, 2, 4, 4]
    assert [p.teacher for p in ofa.phases] == ["none"] + ["frozen"] * 5
    assert [p.reorder_channels for p in ofa.phases] == [False] * 4 + [True] * 2
    delayed = default_config(tiny, "/x", schedule="delayed")
    assert [(p.name, p.sampler, p.teacher) for p in delayed.phases] == [("full", "random", "none"), ("sandwich", "sandwich", "inplace")]
    with pytest.raises(UserError, match="schedule: 'ofa' is not one of"):
        default_config(tiny, "digits", schedule="ofa")


def test_config_file_partial_override_and_field_errors(tmp_path: Path):
    sp = load_space("mbv3-tiny")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"batch_size": 16, "schedule": "progressive", "phases": {"full": {"lr": 0.5}}}))
    cfg = resolve_config(sp, "digits", f)
    base = default_config(sp, "digits", schedule="progressive")
    assert cfg.batch_size == 16 and cfg.phase("full").lr == 0.5
    assert cfg.phase("full").epochs == base.phase("full").epochs  # untouched fields keep the defaults
    assert cfg.phase("kernel") == base.phase("kernel")

    f.write_text(yaml.safe_dump({"schedule": "progressive", "phases": {"kernel": {"lr": -1}}}))
    with pytest.raises(UserError, match=r"c\.yaml: phases\.kernel\.lr"):
        resolve_config(sp, "digits", f)
    f.write_text(yaml.safe_dump({"phases": {"kernel": {"lr": 0.1}}}))  # the default schedule has no 'kernel' phase
    with pytest.raises(UserError, match=r"phases\.kernel: no phase of that name .*sandwich.*schedule"):
        resolve_config(sp, "digits", f)
    f.write_text(yaml.safe_dump({"batch_sise": 3}))
    with pytest.raises(UserError, match="batch_sise"):
        resolve_config(sp, "digits", f)
    f.write_text(yaml.safe_dump({"phases": {"sandwich": {"epochs": 1, "warmup_epochs": 2}}}))
    with pytest.raises(UserError, match="warmup_epochs"):
        resolve_config(sp, "digits", f)
    f.write_text(yaml.safe_dump({"phases": {"sandwich": {"teacher": "inplace", "sampler": "random"}}}))
    with pytest.raises(UserError, match=r"phases\.sandwich: .*inplace.*sandwich"):  # named, not numbered
        resolve_config(sp, "digits", f)
    f.write_text(yaml.safe_dump({"phases": {"sandwich": None}}))
    with pytest.raises(UserError, match=r"phases\.sandwich must be a mapping"):
        resolve_config(sp, "digits", f)
    zero = {"schedule": "progressive", "phases": {p: {"epochs": 0} for p in PHASES}}
    with pytest.raises(UserError, match="at least one phase"):
        resolve_config(sp, "digits", zero)
    dup = {"phases": [dict(name="a", epochs=1, lr=0.1), dict(name="a", epochs=1, lr=0.1)]}
    with pytest.raises(UserError, match="unique.*a"):
        resolve_config(sp, "digits", dup)
    custom = resolve_config(sp, "digits", {"schedule": "mine", "phases": [dict(name="k", epochs=2, lr=0.1, elastic={"kernel": 0})]})
    assert [p.name for p in custom.phases] == ["k"] and custom.phase("k").elastic == {"kernel": 0}
    f.write_text("[1, 2]")
    with pytest.raises(UserError, match="mapping"):
        resolve_config(sp, "digits", f)


def test_epochs_scale_keeps_every_training_phase():
    cfg = default_config(load_space("mbv3-imagenet"), "x", schedule="progressive")
    s = cfg.scaled(0.001)
    assert all(p.epochs == 1 for p in s.phases)
    assert all(p.warmup_epochs <= 1 for p in s.phases)
    assert cfg.scaled(2.0).phase("full").epochs == 360
    # a re-plan of the running phase keeps its warm-up; other phases scale theirs
    re = cfg.with_epochs({"full": 90, "kernel": 62.5}, keep_warmup="full")
    assert re.phase("full").warmup_epochs == cfg.phase("full").warmup_epochs
    assert re.phase("kernel").warmup_epochs == pytest.approx(cfg.phase("kernel").warmup_epochs * 0.5)
    with pytest.raises(UserError, match="epochs-scale"):
        cfg.scaled(0)


# ---------------------------------------------------------------- phases


def test_phase_space_restricts_choices():
    sp = micro_space()
    ofa = {p.name: p for p in default_config(sp, "x", schedule="progressive").phases}
    expect = {  # (kernels, depths, expands) allowed in each phase
        "full": ([5], [3], [4]),
        "kernel": ([3, 5], [3], [4]),
        "depth1": ([3, 5], [2, 3], [4]),
        "depth2": ([3, 5], [1, 2, 3], [4]),
        "expand1": ([3, 5], [1, 2, 3], [3, 4]),
        "expand2": ([3, 5], [1, 2, 3], [2, 3, 4]),
    }
    for name, (ks, ds, es) in expect.items():
        phase = ofa[name].model_copy(update={"subnets_per_step": 2})
        r = phase_space(sp, phase)
        assert r.resolutions == sp.resolutions
        for st in r.stages:
            assert (st.kernels, st.depths, st.expands) == (ks, ds, es), name
        seen_k, seen_d, seen_e = set(), set(), set()
        for step in range(60):
            _, subs = sample_step(sp, phase, 0, seed=0, epoch=0, step=step)
            assert len(subs) == 2
            for s in subs:
                seen_d.update(s.depths)
                seen_k.update(k for row in s.kernels for k in row)
                seen_e.update(e for row in s.expands for e in row)
        assert (sorted(seen_k), sorted(seen_d), sorted(seen_e)) == (ks, ds, es), name


def test_sandwich_step_trains_largest_then_smallest_then_random():
    sp = micro_space()
    default = default_config(sp, "x").phases[0]
    assert default.sampler == "sandwich" and default.subnets_per_step == 3  # small images: 1 random draw
    phase = default.model_copy(update={"subnets_per_step": 4})
    seen = set()
    for step in range(20):
        res, subs = sample_step(sp, phase, 0, seed=1, epoch=0, step=step)
        assert len(subs) == 4 and all(s.resolution == res for s in subs)
        assert subs[0] == sp.largest(res) and subs[1] == sp.smallest(res)
        seen.update(s.model_dump_json() for s in subs[2:])
    assert len(seen) > 10  # the rest are random draws


def test_largest_random_step_trains_largest_then_random_draws_only():
    sp = micro_space()
    phase = default_config(sp, "x").phases[0].model_copy(update={"sampler": "largest_random", "subnets_per_step": 4})
    smallest_second = 0
    seen = set()
    for step in range(40):
        res, subs = sample_step(sp, phase, 0, seed=1, epoch=0, step=step)
        assert len(subs) == 4 and subs[0] == sp.largest(res)
        smallest_second += subs[1] == sp.smallest(res)
        seen.update(s.model_dump_json() for s in subs[1:])
    assert smallest_second < 20  # the smallest is not forced into every step
    assert len(seen) > 20


def test_depth_weights_skew_the_named_stage_of_random_draws_only():
    sp = micro_space()
    base = default_config(sp, "x").phases[0].model_copy(update={"subnets_per_step": 4})
    skewed = base.model_copy(update={"depth_weights": {0: [0, 1, 3]}})
    first, second = [], []
    for step in range(200):
        res, subs = sample_step(sp, skewed, 0, seed=2, epoch=0, step=step)
        assert subs[0] == sp.largest(res) and subs[1] == sp.smallest(res)  # the sandwich's ends are not drawn
        first += [s.depths[0] for s in subs[2:]]
        second += [s.depths[1] for s in subs[2:]]
    assert 1 not in first  # weight 0: never drawn
    assert 0.65 < first.count(3) / len(first) < 0.85  # 3/4 expected
    assert all(0.25 < second.count(d) / len(second) < 0.42 for d in (1, 2, 3))  # stage 1 stays uniform
    # no weights: exactly the draws of before (the default's runs reproduce)
    plain = base.model_copy(update={"depth_weights": {}})
    assert sample_step(sp, plain, 0, 2, 0, 3) == sample_step(sp, base, 0, 2, 0, 3)


def test_depth_weights_are_checked_in_the_config_and_against_the_space(tmp_path: Path, tiny_data: str):
    from hwnas.train.api import train_supernet

    phase = default_config(micro_space(), "x").phases[0].model_dump()
    for bad in ({0: [0, 0, 0]}, {0: [1, -1, 1]}, {-1: [1, 1, 1]}):
        with pytest.raises(ValueError, match="weights|stage indices"):
            TrainConfig.model_validate(dict(phases=[dict(phase, depth_weights=bad)]))
    for bad, words in (({0: [1, 2]}, "2 weights for its 3"), ({2: [1, 1, 1]}, "stages 0..1")):
        cfg = _tiny_cfg(schedule="sandwich", phases=[dict(phase, epochs=1, warmup_epochs=0, depth_weights=bad)])
        with pytest.raises(UserError, match=words):
            train_supernet(micro_space(), tiny_data, tmp_path / "w.pt", config=cfg, progress=False)
        assert not (tmp_path / "w.pt").exists()  # refused before anything is written


def test_step_sampling_is_a_pure_function_of_the_position():
    sp = micro_space()
    phase = default_config(sp, "x", schedule="progressive").phase("expand2")
    a = sample_step(sp, phase, 5, 3, 1, 7)
    b = sample_step(sp, phase, 5, 3, 1, 7)
    c = sample_step(sp, phase, 5, 3, 1, 8)
    assert a == b
    assert a != c
    res, subs = a
    assert all(s.resolution == res for s in subs)
    names = [n for n, _ in eval_subnets(sp, 2, seed=0)]
    assert names == ["smallest", "largest", "random0", "random1"]
    assert eval_subnets(sp, 2, 0) == eval_subnets(sp, 2, 0)


# ---------------------------------------------------------------- losses and schedule


def test_kd_loss_is_soft_cross_entropy_minimised_at_the_teacher():
    torch.manual_seed(1)
    t = torch.randn(6, 5)
    s = torch.randn(6, 5, requires_grad=True)
    p = F.softmax(t / 2.0, 1)
    manual = -(p * F.log_softmax(s / 2.0, 1)).sum(1).mean() * 4.0
    assert torch.allclose(kd_loss(s, t, 2.0), manual)
    # KL >= 0: the loss at the teacher's logits is its minimum (the teacher's entropy) and the gradient vanishes
    at_teacher = t.clone().requires_grad_(True)
    loss_t = kd_loss(at_teacher, t, 1.0)
    loss_t.backward()
    assert at_teacher.grad is not None and at_teacher.grad.abs().max() < 1e-6
    assert kd_loss(s, t, 1.0) > loss_t
    assert torch.allclose(soft_target_ce(s, F.one_hot(torch.tensor([1, 0, 2, 3, 4, 0]), 5).float()),
                          F.cross_entropy(s, torch.tensor([1, 0, 2, 3, 4, 0])))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    hard = F.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.allclose(training_loss(s, y, None, label_smoothing=0.1, kd_weight=1.0, kd_temperature=1.0), hard)
    both = training_loss(s, y, t, label_smoothing=0.1, kd_weight=0.5, kd_temperature=1.0)
    assert torch.allclose(both, hard + 0.5 * kd_loss(s, t, 1.0))


def _exact_alpha_div(s: torch.Tensor, t: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_alpha(p || q) straight from its definition, differentiable in the student (no clipping)."""
    p, q = F.softmax(t, 1), F.softmax(s, 1)
    return (q * ((p / q) ** alpha - 1)).sum(1) / (alpha * (alpha - 1))


@pytest.mark.parametrize("alpha", [-1.0, 0.5, 2.0])
def test_alpha_divergence_value_and_gradient_match_the_definition(alpha):
    torch.manual_seed(2)
    t = torch.randn(5, 4)
    s = torch.randn(5, 4, requires_grad=True)
    value, surrogate = alpha_divergence(s, t, alpha, clip=1e9)
    exact = _exact_alpha_div(s, t, alpha)
    assert torch.allclose(value, exact.detach(), atol=1e-6) and (value >= -1e-7).all()
    (g_sur,) = torch.autograd.grad(surrogate.sum(), s)
    (g_exact,) = torch.autograd.grad(exact.sum(), s)
    assert torch.allclose(g_sur, g_exact, atol=1e-5)
    # alpha = 1 is KL(teacher || student): the soft-target CE's gradient
    v1, s1 = alpha_divergence(s, t, 1.0)
    (g1,) = torch.autograd.grad(s1.mean(), s)
    (g_kd,) = torch.autograd.grad(kd_loss(s, t, 1.0), s)
    assert torch.allclose(g1, g_kd, atol=1e-6)
    p = F.softmax(t, 1)
    assert torch.allclose(v1, (p * (p.log() - F.log_softmax(s, 1))).sum(1), atol=1e-6)


def test_adaptive_alpha_loss_takes_the_larger_divergence_per_sample_and_clips():
    torch.manual_seed(3)
    t = torch.randn(8, 6) * 3
    s = torch.randn(8, 6, requires_grad=True)
    v_lo, _ = alpha_divergence(s, t, -1.0)
    v_hi, _ = alpha_divergence(s, t, 1.0)
    assert (v_lo > v_hi).any() and (v_lo < v_hi).any()  # both sides are picked in this batch
    loss = adaptive_alpha_loss(s, t)
    assert torch.allclose(loss, torch.maximum(v_lo, v_hi).mean())
    loss.backward()
    g_ada = s.grad.clone()
    # each sample's gradient is the one of its larger divergence
    s.grad = None
    _, sl = alpha_divergence(s, t, -1.0)
    _, sh = alpha_divergence(s, t, 1.0)
    torch.where(v_lo > v_hi, sl, sh).mean().backward()
    assert torch.allclose(g_ada, s.grad, atol=1e-7)
    # at the teacher: zero divergence, zero gradient
    at_t = t.clone().requires_grad_(True)
    zero = adaptive_alpha_loss(at_t, t)
    zero.backward()
    assert abs(float(zero.detach())) < 1e-5 and at_t.grad.abs().max() < 1e-6
    # a student certain of a class the teacher rules out: the clipped weights keep the gradient bounded
    far_s = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    far_t = torch.tensor([[-30.0, 0.0, 0.0]])
    adaptive_alpha_loss(far_s, far_t).backward()
    assert torch.isfinite(far_s.grad).all() and far_s.grad.abs().max() <= 5.0 + 1e-4


def test_training_loss_with_the_alpha_divergence_and_the_config_field():
    torch.manual_seed(4)
    t, s = torch.randn(6, 5), torch.randn(6, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    hard = F.cross_entropy(s, y)
    got = training_loss(s, y, t, label_smoothing=0.0, kd_weight=0.5, kd_temperature=2.0, kd_divergence="alpha")
    assert torch.allclose(got, hard + 0.5 * 4.0 * adaptive_alpha_loss(s / 2.0, t / 2.0))
    assert not torch.allclose(got, training_loss(s, y, t, label_smoothing=0.0, kd_weight=0.5, kd_temperature=2.0))
    with pytest.raises(ValueError, match="unknown divergence"):
        distillation_loss(s, t, 1.0, "js")
    base = default_config(load_space("mbv3-tiny"), "digits").model_dump()
    assert base["kd_divergence"] == "kl"
    assert TrainConfig.model_validate(dict(base, kd_divergence="alpha")).kd_divergence == "alpha"
    with pytest.raises(ValidationError, match="kd_divergence"):
        TrainConfig.model_validate(dict(base, kd_divergence="js"))


def test_cosine_schedule_resumes_with_its_saved_shape():
    a = CosineSchedule(0.1, total_iters=100, warmup_iters=5)
    a.step_count, a.total = 40, 60  # a time-budgeted run shortened it mid-phase
    b = CosineSchedule(0.1, total_iters=100, warmup_iters=5)
    b.load_state_dict(a.state_dict())
    assert (b.total, b.warmup, b.lr) == (60, 5, a.lr)


def test_cosine_schedule_and_no_decay_groups():
    sch = CosineSchedule(1.0, total_iters=10, warmup_iters=2)
    lrs = [sch.lr_at(t) for t in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] < 0.05
    net = Supernet(micro_space())
    opt = make_optimizer(net, 0.1, 0.9, True, 1e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    bn_weights = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bn_weights <= {id(p) for p in no_decay["params"]}
    assert opt.defaults["nesterov"] is True


# ---------------------------------------------------------------- BN recalibration and evaluation


def _first_bn_input(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.stem[0](x) if hasattr(net, "stem") else x


@pytest.mark.parametrize("kind", ["static", "supernet"])
def test_recalibrate_bn_gives_exact_statistics(kind: str):
    sp = micro_space()
    sup = Supernet(sp)
    sub = sp.validate_subnet(dict(resolution=8, depths=[2, 1], kernels=[[3, 5], [3]], expands=[[2, 3], [2]]))
    ds = tiny_dataset(n_train=37)
    net: torch.nn.Module
    if kind == "static":
        net = sup.extract(sub)
    else:
        sup.set_active(sub)
        net = sup
    net.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(7.0)
    recalibrate_bn(net, ds.train_x, 8, ds.mean, ds.std, batch_size=37)  # one batch: stats of all images
    assert not net.training  # mode restored
    from hwnas.data import augment_batch

    x = augment_batch(ds.train_x, 8, ds.mean, ds.std, train=False)
    with torch.no_grad():
        h = net.stem[0](x)
    bn = net.stem[1]
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1  # restored
    if kind == "supernet":
        # the first elastic block runs expand 2 -> 16 of its 32 channels: only that slice is re-estimated
        ebn = sup.stages[0][0].expand_bn
        assert torch.all(ebn.running_mean[16:] == 5.0) and not torch.any(ebn.running_mean[:16] == 5.0)
        assert torch.all(sup.stages[0][2].expand_bn.running_mean == 5.0)  # inactive block untouched
    # several batches: the batch-size-weighted average of per-batch statistics
    recalibrate_bn(net, ds.train_x, 8, ds.mean, ds.std, batch_size=20)
    parts = [h[:20], h[20:]]
    m_avg = sum(p.shape[0] * p.mean((0, 2, 3)) for p in parts) / 37
    v_avg = sum(p.shape[0] * p.var((0, 2, 3), unbiased=True) for p in parts) / 37
    assert torch.allclose(bn.running_mean, m_avg, atol=1e-5)
    assert torch.allclose(bn.running_var, v_avg, rtol=1e-4, atol=1e-6)


def test_evaluate_subnet_leaves_supernet_unchanged():
    sp = micro_space()
    sup = Supernet(sp)
    sup.train()
    active = sp.smallest()
    sup.set_active(active)
    before = {k: v.clone() for k, v in sup.state_dict().items()}
    ds = tiny_dataset()
    sub = sp.sample(seed=3)
    acc = evaluate_subnet(sup, sub, ds)
    assert 0.0 <= acc <= 1.0
    after = sup.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sup.training and sup.active == active
    # and it is the accuracy of the extracted, recalibrated network
    net = sup.extract(sub)
    recalibrate_bn(net, ds.train_x, sub.resolution, ds.mean, ds.std)
    assert acc == accuracy(net, ds.val_x, ds.val_y, sub.resolution, ds.mean, ds.std)


def test_accuracy_counts_correct_predictions():
    class Oracle(torch.nn.Module):  # predicts class 1 iff the right half is brighter
        def forward(self, x):
            right = x[:, :, :, x.shape[3] // 2:].mean((1, 2, 3))
            left = x[:, :, :, : x.shape[3] // 2].mean((1, 2, 3))
            return torch.stack([left, right], 1)

    ds = tiny_dataset()
    assert accuracy(Oracle(), ds.val_x, ds.val_y, 8, ds.mean, ds.std, batch_size=5) == 1.0
    flipped = 1 - ds.val_y
    assert accuracy(Oracle(), ds.val_x, flipped, 8, ds.mean, ds.std) == 0.0


# ---------------------------------------------------------------- checkpoints


def _meta(space: Space) -> dict:
    cfg = default_config(space, "tiny")
    return SupernetMeta(space=space.model_dump(mode="json"), data="tiny", data_fingerprint="f", config=cfg.model_dump(mode="json"),
                        phase="kernel", epoch=3, finished=False, metrics={"acc": {"largest": 0.5}}).model_dump(mode="json")


def test_checkpoint_round_trip_weights_only(tmp_path: Path):
    sp = micro_space(num_classes=3)
    net = Supernet(sp)
    opt = make_optimizer(net, 0.1, 0.9, True, 1e-4)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"meta": _meta(sp), "model": net.state_dict(), "optimizer": opt.state_dict(),
                           "rng": {"torch": torch.get_rng_state()}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # plain data and tensors only
    assert raw["format"] == "hwnas-supernet" and raw["meta"]["epoch"] == 3
    state = load_checkpoint(path)
    opt2 = make_optimizer(Supernet(sp), 0.1, 0.9, True, 1e-4)
    opt2.load_state_dict(state["optimizer"])
    loaded, meta = load_supernet(path, space=sp)
    assert meta.phase == "kernel" and meta.get_space() == sp
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    # the classifier width is ignored when checking the space
    load_supernet(path, space=with_classes(sp, 10))
    with pytest.raises(UserError, match="mbv3-tiny"):
        load_supernet(path, space=load_space("mbv3-tiny"))
    other = sp.model_copy(update={"resolutions": [8]})
    with pytest.raises(UserError, match="different structure"):
        load_supernet(path, space=other)


def test_damaged_and_foreign_checkpoints_name_the_file(tmp_path: Path):
    sp = micro_space()
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"meta": _meta(sp), "model": Supernet(sp).state_dict()})
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"bad\.pt: damaged"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match=r"foreign\.pt: not an hwnas"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match=r"missing\.pt: no such"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------- the training loop in-process


def _tiny_cfg(**over) -> TrainConfig:
    phases = progressive_phases([1] * 6, [0.05] * 6, [0] * 6, [1, 1, 2, 2, 2, 2])
    d = dict(schedule="progressive", phases=phases, batch_size=8, eval_subnets=1, flip=False, checkpoint_every_seconds=0)
    d.update(over)
    return TrainConfig.model_validate(d)


@pytest.fixture()
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> str:
    """Route DATA 'tinydata' to the in-memory dataset (the data loader itself is tested in test_data.py)."""
    import hwnas.train.api as api

    real = api.load_dataset
    monkeypatch.setattr(api, "load_dataset", lambda spec: tiny_dataset() if spec == "tinydata" else real(spec))
    return "tinydata"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, tiny_data: str, monkeypatch: pytest.MonkeyPatch):
    import hwnas.train.api as api

    calls = {"n": 0}
    real_loss = step_mod.training_loss

    def flaky(*a, **k):  # finite for the whole first phase (5 steps), then NaN
        calls["n"] += 1
        loss = real_loss(*a, **k)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(step_mod, "training_loss", flaky)
    # the cost probe (which also computes losses, on a copy) is not under test here
    monkeypatch.setattr(api, "probe_costs", lambda model, cfg, *a, **k: ({p.name: 0.01 for p in cfg.phases}, [], {}))
    out = tmp_path / "sn.pt"
    with pytest.raises(TrainingDiverged, match=r"loss became nan in phase kernel.*sn\.pt.*kept"):
        api.train_supernet(micro_space(), tiny_data, out, config=_tiny_cfg(), progress=False)
    state = load_checkpoint(out)
    assert state["meta"]["epoch"] == 1 and state["meta"]["phase"] == "kernel"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    net, meta = load_supernet(out)
    assert meta.metrics["phase"] == "full"


def test_train_in_process_result_and_checkpoint(tmp_path: Path, tiny_data: str, monkeypatch: pytest.MonkeyPatch):
    import hwnas.train.api as api

    reorders: list[str] = []
    real_reorder = Supernet.reorder_channels

    def counting(self):
        reorders.append("x")
        return real_reorder(self)

    monkeypatch.setattr(Supernet, "reorder_channels", counting)
    out = tmp_path / "sn.pt"
    res = api.train_supernet(micro_space(), tiny_data, out, config=_tiny_cfg(), progress=False)
    assert len(reorders) == 2  # once at the start of each expand phase
    assert res["epochs"] == 6 and res["finished"] and res["checkpoint"] == str(out.resolve())
    net, meta = load_supernet(out, space=micro_space())
    assert meta.finished and meta.epoch == 6 and meta.data == "tinydata"
    assert res["val_acc_max"] == meta.metrics["acc"]["largest"]
    assert res["weights_sha256"] == api.weights_digest(net)
    state = load_checkpoint(out)
    assert state["teacher"] is not None  # the phase-1 network distils the later phases
    lines = [yaml.safe_load(x) for x in api.metrics_path(out).read_text().splitlines()]
    assert [r["phase"] for r in lines if r["type"] == "eval"] == list(PHASES)
    # a finished checkpoint resumes to the same result without training
    again = api.train_supernet(micro_space(), tiny_data, out, resume=True, progress=False)
    assert again["weights_sha256"] == res["weights_sha256"] and again["epochs"] == 6
    with pytest.raises(UserError, match="already exists"):
        api.train_supernet(micro_space(), tiny_data, out, config=_tiny_cfg(), progress=False)
    with pytest.raises(UserError, match="differ from the config"):
        api.train_supernet(micro_space(), tiny_data, out, config=_tiny_cfg(seed=1), resume=True, progress=False)


def test_in_place_distillation_teaches_with_the_largest_subnet_of_the_step(monkeypatch: pytest.MonkeyPatch):
    """Sandwich step: the largest subnet learns from labels, every other one also from its detached logits."""

    sp = micro_space()
    cfg = default_config(sp, "x").model_copy(update={"kd_weight": 1.0})  # the full weight, not the small-image default's half
    phase = cfg.phases[0]
    net = Supernet(sp)
    calls: list[torch.Tensor | None] = []
    outputs: list[torch.Tensor] = []
    real = step_mod.training_loss

    def spy(logits, labels, teacher_logits, **k):
        calls.append(teacher_logits)
        outputs.append(logits.detach())
        return real(logits, labels, teacher_logits, **k)

    monkeypatch.setattr(step_mod, "training_loss", spy)
    ds = tiny_dataset(n_train=8)
    _, subs = sample_step(sp, phase, 0, 0, 0, 0)
    x = ds.train_x.float() / 255
    loss = step_mod.step_loss(net, net, x, ds.train_y, subs, phase, cfg, None)
    assert calls[0] is None and len(calls) == phase.subnets_per_step == len(subs) >= 3
    assert all(c is not None and torch.equal(c, outputs[0]) for c in calls[1:])
    assert torch.isfinite(loss) and any(p.grad is not None for p in net.parameters())


def test_val_subset_is_fixed_and_smaller():
    ds = tiny_dataset(n_val=16)
    a, b = ds.with_val_subset(6), ds.with_val_subset(6)
    assert a.val_x.shape[0] == 6 and torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert a.fingerprint != ds.fingerprint and a.train_x is ds.train_x
    assert ds.with_val_subset(100) is ds


# ---------------------------------------------------------------- recipe knobs: kd_start, zero_init_residual


def test_zero_init_residual_makes_every_depth_the_same_function_at_first():
    """With each residual block starting as the identity, a subnet computes the same logits whatever the
    depth, kernel and expand of its residual blocks; without it, depth changes the function."""
    sp = micro_space()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    a = dict(depths=[1, 1], kernels=[[3], [3]], expands=[[2], [2]], resolution=12)  # the non-residual first blocks alone
    b = dict(depths=[3, 3], kernels=[[3, 5, 3], [3, 5, 5]], expands=[[2, 4, 3], [2, 3, 4]], resolution=12)
    outs = {}
    for zero in (False, True):
        torch.manual_seed(0)
        net = Supernet(sp)
        if zero:
            net.zero_init_residual()
        net.eval()
        with torch.no_grad():
            outs[zero] = [(net.set_active(s), net(x))[1] for s in (a, b)]
    assert torch.equal(outs[True][0], outs[True][1])  # x + 0 * y is x, exactly
    assert not torch.allclose(outs[False][0], outs[False][1], rtol=1e-2, atol=0.0)  # logits are small at init: relative


def test_zero_init_residual_config_reaches_the_trained_supernet(tmp_path: Path, tiny_data: str):
    from hwnas.train.api import train_supernet

    cfg = TrainConfig.model_validate(dict(
        schedule="custom", batch_size=8, eval_subnets=0, flip=False, checkpoint_every_seconds=0, zero_init_residual=True,
        phases=[dict(name="s", epochs=0.2, lr=1e-9, sampler="sandwich", subnets_per_step=2, teacher="inplace",
                     elastic={"kernel": 0, "depth": 0, "expand": 0})]))
    train_supernet(micro_space(), tiny_data, tmp_path / "z.pt", config=cfg, progress=False)
    sup, _ = load_supernet(tmp_path / "z.pt")
    residual = [blk for stage in sup.stages for blk in stage if blk.residual]
    assert residual and all(float(blk.project_bn.weight.detach().abs().max()) < 1e-6 for blk in residual)  # lr ~0: still zero
    first = [blk for stage in sup.stages for blk in stage if not blk.residual]
    assert all(float(blk.project_bn.weight.detach().abs().min()) > 0.5 for blk in first)


def _micro_step(**over):
    """One sandwich step's inputs on the micro space: config (with `over`), phase, subnets, a batch, a seeded supernet."""
    sp = micro_space()
    cfg = default_config(sp, "x").model_copy(update=over)
    phase = cfg.phases[0]
    _, subs = sample_step(sp, phase, 0, seed=0, epoch=0, step=0)
    x = torch.randn(6, 3, subs[0].resolution, subs[0].resolution, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.manual_seed(0)
    return cfg, phase, subs, x, y, Supernet(sp)


def test_step_loss_before_kd_start_uses_labels_alone():
    """teach=False (the steps before kd_start) gives exactly the loss of kd_weight 0; teach=True adds
    the in-place teacher's soft targets."""
    from hwnas.train.step import step_loss

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=1.0)

    def loss(c: TrainConfig, teach: bool) -> float:
        net.zero_grad()
        return float(step_loss(net, net, x, y, subs, phase, c, None, teach))

    off = loss(cfg, False)
    assert off == pytest.approx(loss(cfg.model_copy(update={"kd_weight": 0.0}), True), rel=1e-6)
    assert loss(cfg, True) > off + 1e-4


def test_kd_start_is_a_share_of_the_phase():
    with pytest.raises(Exception, match="kd_start"):
        TrainConfig.model_validate(dict(default_config(micro_space(), "x").model_dump(), kd_start=1.0))


def test_small_image_sandwich_default_decays_weights_more_than_digits():
    """The CIFAR-size sandwich default trains with weight decay 5e-4 (measured better on real images); digits and the
    other schedules keep the field's default."""
    from hwnas.space import load_space
    from hwnas.train.config import default_config

    cifar = load_space("mbv3-cifar")
    assert default_config(cifar, "cifar10-small").weight_decay == 5e-4
    assert default_config(cifar, "cifar10-small", "progressive").weight_decay == 3e-5
    assert default_config(load_space("mbv3-tiny"), "digits").weight_decay == 3e-5


def test_small_image_sandwich_default_draws_a_view_per_subnet_with_label_smoothing():
    """Measured at 18.7 epochs on cifar10-small (BENCHMARKS.md): the small-image sandwich default trains each subnet
    of a step on its own view, with label smoothing 0.1; digits and the other presets keep one shared view."""
    cifar = load_space("mbv3-cifar")
    d = default_config(cifar, "cifar10-small")
    assert d.augment_per_subnet and d.label_smoothing == 0.1
    assert not default_config(cifar, "cifar10-small", "progressive").augment_per_subnet
    assert not default_config(load_space("mbv3-tiny"), "digits").augment_per_subnet


def test_small_image_sandwich_default_regularizes_the_largest_only():
    """Measured better on cifar10-small (BENCHMARKS.md); digits and the other schedules keep every subnet regularized."""
    from hwnas.space import load_space

    cifar = load_space("mbv3-cifar")
    assert default_config(cifar, "cifar10-small").regularize == "largest"
    assert default_config(cifar, "cifar10-small", "progressive").regularize == "all"
    assert default_config(load_space("mbv3-tiny"), "digits").regularize == "all"
    assert TrainConfig.model_validate(dict(schedule="custom", phases=[dict(name="f", epochs=1, lr=0.1)])).regularize == "all"


def test_short_runs_keep_the_full_recipe_unless_a_threshold_is_set():
    """The small-image sandwich default keeps its regularisers for any length of run (with them kept to the largest
    subnet the short-run recipe measured no better at 7 and 11 epochs, BENCHMARKS.md); `regularize_from_epochs`, set
    in a config, still turns them off for runs planned below it."""
    cifar = load_space("mbv3-cifar")
    d = default_config(cifar, "cifar10-small")
    assert d.regularize_from_epochs is None
    for epochs in (3.0, 7.0, 11.0, 20.0):
        run = d.with_epochs({"sandwich": epochs}).for_planned_epochs()
        assert run.label_smoothing == 0.1 and run.augment_per_subnet and run.cutout == 0.25
    for cfg in (default_config(cifar, "cifar10-small", "progressive"), default_config(load_space("mbv3-tiny"), "digits")):
        assert cfg.regularize_from_epochs is None
        assert cfg.scaled(0.01).for_planned_epochs().label_smoothing == cfg.label_smoothing
    mine = resolve_config(cifar, "cifar10-small", {"regularize_from_epochs": 14})
    assert mine.regularize_from_epochs == 14
    short = mine.with_epochs({"sandwich": 11.0}).for_planned_epochs()
    assert short.label_smoothing == 0 and not short.augment_per_subnet and short.cutout == 0
    assert short.for_planned_epochs() == short
    at = mine.with_epochs({"sandwich": 14.0}).for_planned_epochs()
    assert at.label_smoothing == 0.1 and at.augment_per_subnet and at.cutout == 0.25
    assert short.model_copy(update={"label_smoothing": 0.1, "augment_per_subnet": True, "cutout": 0.25}) == \
        mine.with_epochs({"sandwich": 11.0})
    with pytest.raises(UserError, match="regularize_from_epochs"):
        resolve_config(cifar, "cifar10-small", {"regularize_from_epochs": 0})


def test_a_short_run_stores_and_trains_the_short_run_recipe(tmp_path: Path, tiny_data: str, monkeypatch, capsys):
    """A run planned below regularize_from_epochs trains one shared view per step without label smoothing, says so
    before it starts, stores that config, and resumes with the config it was given."""
    import hwnas.train.api as api

    real = api.step_loss
    seen: list[tuple[int, float]] = []

    def spy(model, forward, x, y, subs, phase, cfg, *a, **k):
        if model.training and torch.is_grad_enabled():
            seen.append((len({id(t) for t in x}) if isinstance(x, list) else 1, cfg.label_smoothing))
        return real(model, forward, x, y, subs, phase, cfg, *a, **k)

    import hwnas.train.probe as probe

    monkeypatch.setattr(api, "step_loss", spy)
    monkeypatch.setattr(probe, "step_loss", spy)  # the cost probe's steps too: they come first
    cfg = TrainConfig.model_validate(dict(
        schedule="custom", batch_size=8, eval_subnets=0, checkpoint_every_seconds=0, augment_per_subnet=True,
        label_smoothing=0.1, regularize_from_epochs=1.0,
        phases=[dict(name="s", epochs=0.2, lr=0.01, sampler="sandwich", subnets_per_step=3, teacher="inplace",
                     elastic={"kernel": 0, "depth": 0, "expand": 0})]))
    out = tmp_path / "short.pt"
    res = api.train_supernet(micro_space(), tiny_data, out, config=cfg, progress=True)
    assert "fewer than regularize_from_epochs 1: no label smoothing, one shared view per step" in capsys.readouterr().err
    run_steps = seen[2 * probe.PROBE_STEPS:]  # the cost probe's steps (each timed one after an untimed one) come first
    assert seen[0] == (3, 0.1)  # the probe measured the configured recipe
    assert run_steps and all(s == (1, 0.0) for s in run_steps)
    _, meta = load_supernet(out)
    stored = TrainConfig.model_validate(meta.config)
    assert stored.label_smoothing == 0 and not stored.augment_per_subnet and stored.regularize_from_epochs == 1.0
    again = api.train_supernet(micro_space(), tiny_data, out, config=cfg, resume=True, progress=False)
    assert again["weights_sha256"] == res["weights_sha256"]
    # the same run planned above the threshold keeps both
    seen.clear()
    api.train_supernet(micro_space(), tiny_data, tmp_path / "long.pt", config=cfg.model_copy(update={"regularize_from_epochs": 0.1}),
                       progress=False)
    assert seen[-1] == (3, 0.1)


def test_same_recipe_compares_a_budgeted_run_with_its_short_run_recipe():
    from hwnas.train.resume import same_recipe

    asked = default_config(load_space("mbv3-cifar"), "cifar10-small").model_copy(update={"regularize_from_epochs": 14.0})
    stored = asked.with_epochs({"sandwich": 9.0}).for_planned_epochs().model_copy(update={"time_budget_s": 600.0, "eval_at": "end"})
    assert stored.label_smoothing == 0
    assert same_recipe(asked, stored)
    assert not same_recipe(asked.model_copy(update={"seed": 1}), stored)
    long = asked.with_epochs({"sandwich": 20.0}).model_copy(update={"time_budget_s": 600.0, "eval_at": "end"})
    assert same_recipe(asked, long) and not same_recipe(asked.model_copy(update={"label_smoothing": 0.0}), long)
    short = long.model_copy(update={"eval_subnets": 0})  # a short budget's plan evaluated the two ends only
    assert same_recipe(asked, short)
    unbudgeted = asked.for_planned_epochs()
    assert not same_recipe(asked, unbudgeted.model_copy(update={"eval_subnets": 0}))  # only a plan may change it


def test_training_run_gives_each_subnet_its_own_view_when_configured(tmp_path: Path, tiny_data: str, monkeypatch):
    """The training loop hands step_loss one batch per subnet, distinct tensors, only with augment_per_subnet."""
    import hwnas.train.api as api

    real = api.step_loss
    seen: list[list[torch.Tensor]] = []

    def spy(model, forward, x, *a, **k):
        if model.training and torch.is_grad_enabled():
            seen.append(list(x))
        return real(model, forward, x, *a, **k)

    monkeypatch.setattr(api, "step_loss", spy)
    for per in (False, True):
        seen.clear()
        cfg = TrainConfig.model_validate(dict(
            schedule="custom", batch_size=8, eval_subnets=0, checkpoint_every_seconds=0, augment_per_subnet=per,
            phases=[dict(name="s", epochs=0.2, lr=0.01, sampler="sandwich", subnets_per_step=3, teacher="inplace",
                         elastic={"kernel": 0, "depth": 0, "expand": 0})]))
        api.train_supernet(micro_space(), tiny_data, tmp_path / f"v{per}.pt", config=cfg, progress=False)
        assert seen and all(len(xs) == 3 for xs in seen)
        distinct = [len({id(t) for t in xs}) for xs in seen]
        assert distinct == ([3] * len(seen) if per else [1] * len(seen))
        if per:
            assert not any(torch.equal(xs[0], xs[1]) for xs in seen)


def test_usage_scaling_averages_each_weight_over_the_subnets_that_used_it():
    """grad_scaling 'usage': a step's summed gradient, per element, times n / (subnets whose gradient touched it).
    Checked against each subnet's own gradient computed separately: weights only the largest subnet uses get n times
    its gradient, weights every subnet uses keep the plain sum."""
    from hwnas.train.step import step_loss

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=0.0, zero_init_residual=False, regularize="all")

    def grads(c: TrainConfig, ss: list) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        step_loss(net, net, x, y, ss, phase, c, None)
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in net.named_parameters()}

    each = [grads(cfg, [s]) for s in subs]
    summed = grads(cfg, subs)
    scaled = grads(cfg.model_copy(update={"grad_scaling": "usage"}), subs)
    n = len(subs)
    only_largest = shared = 0
    for name in summed:
        used = sum((g[name] != 0).float() for g in each)
        torch.testing.assert_close(summed[name], sum(g[name] for g in each), rtol=1e-5, atol=1e-7)
        expect = summed[name] * n / used.clamp_min(1)
        torch.testing.assert_close(scaled[name], expect, rtol=1e-5, atol=1e-7)
        only_largest += int(((used == 1) & (each[0][name] != 0)).sum())
        shared += int((used == n).sum())
    assert only_largest > 0 and shared > 0  # both kinds of weight exist in this step


def test_regularize_largest_smooths_the_labels_of_the_largest_only():
    """regularize 'largest' (BigNAS): the step's loss is the largest's label-smoothed loss plus the others' plain
    ones; 'all' smooths every subnet's."""
    from hwnas.train.step import step_loss

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=0.0, label_smoothing=0.2, regularize="all")
    assert phase.sampler == "sandwich" and len(subs) == 3
    with torch.no_grad():  # away from the initial uniform prediction, where smoothing changes nothing
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))

    def loss(c: TrainConfig, ss: list) -> float:
        net.zero_grad(set_to_none=True)
        return float(step_loss(net, net, x, y, ss, phase, c, None))

    plain = cfg.model_copy(update={"label_smoothing": 0.0})
    smoothed = [loss(cfg, [s]) for s in subs]
    bare = [loss(plain, [s]) for s in subs]
    assert all(abs(a - b) > 1e-4 for a, b in zip(smoothed, bare))  # smoothing changes each subnet's loss
    largest_only = loss(cfg.model_copy(update={"regularize": "largest"}), subs)
    assert largest_only == pytest.approx((smoothed[0] + bare[1] + bare[2]) / 3, rel=1e-5)
    assert loss(cfg, subs) == pytest.approx(sum(smoothed) / 3, rel=1e-5)


def test_regularized_subnets_follow_the_sampler():
    from hwnas.train.step import regularized

    cfg, phase, *_ = _micro_step(regularize="all")
    assert regularized(cfg, phase, 3) == [True, True, True]
    largest = cfg.model_copy(update={"regularize": "largest"})
    assert regularized(largest, phase, 3) == [True, False, False]
    assert regularized(largest, phase.model_copy(update={"sampler": "largest_random"}), 2) == [True, False]
    assert regularized(largest, phase.model_copy(update={"sampler": "random"}), 2) == [False, False]
    with pytest.raises(Exception, match="regularize"):
        TrainConfig.model_validate(dict(cfg.model_dump(), regularize="middle"))


@pytest.mark.parametrize("per_subnet", [False, True])
def test_cutout_goes_to_the_regularized_subnets_views_only(per_subnet: bool):
    """With one shared view, the largest's copy has the hole and the others keep the view whole; with a view per
    subnet, only the regularized ones have a hole. Outside the hole the largest's copy is the shared view."""
    from hwnas.data import load_dataset
    from hwnas.train.step import step_inputs

    ds = load_dataset("digits")
    cfg, *_ = _micro_step(cutout=0.5, augment_per_subnet=per_subnet, regularize="largest")
    xb = ds.train_x[:16]
    phase = cfg.phases[0]
    assert phase.sampler == "sandwich"  # the largest first: its view alone is regularized
    xs = step_inputs(xb, 16, ds, cfg, phase, 3, torch.Generator().manual_seed(0), torch.device("cpu"))
    holes = [int((x == 0).all(dim=1).sum()) for x in xs]  # pixels zero in every channel: the square (64 per image)
    assert holes[0] >= 16 * 16 and holes[1] < 16 * 4 and holes[2] < 16 * 4
    if not per_subnet:
        assert torch.equal(xs[1], xs[2])
        outside = (xs[0] != 0).any(dim=1, keepdim=True).expand_as(xs[0])
        assert torch.equal(xs[0][outside], xs[1][outside])
    else:
        assert not torch.equal(xs[1], xs[2])


def test_grad_scaling_is_validated_and_defaults_to_sum():
    cfg = default_config(load_space("mbv3-cifar"), "cifar10-small")
    assert cfg.grad_scaling == "sum"
    with pytest.raises(Exception, match="grad_scaling"):
        TrainConfig.model_validate(dict(cfg.model_dump(), grad_scaling="mean"))


# ---------------------------------------------------------------- the weights' moving average


def test_step_decay_halves_after_the_halflife():
    d = step_decay(0.5, 40)
    assert d ** 20 == pytest.approx(0.5, rel=1e-9)
    assert step_decay(2.0, 40) > d  # a longer horizon forgets more slowly
    with pytest.raises(ValueError):
        step_decay(0.0, 40)


def test_average_is_the_bias_corrected_weighted_mean_of_the_weights_seen():
    net = nn.Linear(2, 1)
    ema = WeightEMA(net, decay=0.9)
    values = [1.0, -2.0, 3.0, 0.5]
    for value in values:
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
    # the n-th newest weighs 0.9**n; the starting (random) weights do not count at all
    ages = 0.9 ** torch.arange(len(values) - 1, -1, -1, dtype=torch.float64)
    mean = float((ages * torch.tensor(values, dtype=torch.float64)).sum() / ages.sum())
    expected = torch.full_like(net.weight, mean)
    assert torch.allclose(ema.shadow[ema.names.index("weight")], expected, atol=1e-6)
    assert ema.current_decay() == pytest.approx(1 - 0.1 / (1 - 0.9 ** 5))

    live = net.weight.detach().clone()
    with ema.applied(net):
        assert torch.allclose(net.weight, expected, atol=1e-6)
    assert torch.equal(net.weight, live)  # the live weights come back exactly

    other = WeightEMA(nn.Linear(2, 1), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 4 and all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow))
    ema.reset(net)
    assert ema.updates == 0 and torch.equal(ema.shadow[ema.names.index("weight")], live)


def _ema_cfg(halflife: float) -> TrainConfig:
    return TrainConfig.model_validate(dict(
        schedule="custom", batch_size=8, eval_subnets=0, flip=False, checkpoint_every_seconds=0,
        ema_halflife_epochs=halflife, kd_weight=0,
        phases=[dict(name="s", epochs=2, lr=0.05, sampler="sandwich", subnets_per_step=2,
                     elastic={"kernel": 0, "depth": 0, "expand": 0})]))


def test_a_run_stores_the_average_and_trains_the_same_live_weights(tmp_path: Path, tiny_data: str):
    from hwnas.train.api import train_supernet

    plain = train_supernet(micro_space(), tiny_data, tmp_path / "plain.pt", config=_ema_cfg(0.0), progress=False)
    # a horizon far below one step: the average is the live weights, so the run must match the plain one exactly
    instant = train_supernet(micro_space(), tiny_data, tmp_path / "instant.pt", config=_ema_cfg(1e-6), progress=False)
    assert instant["weights_sha256"] == plain["weights_sha256"]
    avg = train_supernet(micro_space(), tiny_data, tmp_path / "avg.pt", config=_ema_cfg(1.0), progress=False)
    assert avg["weights_sha256"] != plain["weights_sha256"]
    state = load_checkpoint(tmp_path / "avg.pt")
    assert state["meta"]["finished"] and state["ema"] is None  # the average became the model
    a, p = state["model"], load_checkpoint(tmp_path / "plain.pt")["model"]
    bn_stats = [k for k in a if "running" in k]
    assert bn_stats and all(torch.equal(a[k], p[k]) for k in bn_stats)  # statistics are not averaged


def test_the_average_resumes_with_the_run(tmp_path: Path, tiny_data: str, monkeypatch: pytest.MonkeyPatch):
    """A run cut after its 3rd step and resumed ends with the same averaged weights as an uncut one."""
    from hwnas.train.api import train_supernet

    cfg = _ema_cfg(1.0).model_copy(update={"checkpoint_every_iters": 1})
    ref = train_supernet(micro_space(), tiny_data, tmp_path / "ref.pt", config=cfg, progress=False)
    real, calls = WeightEMA.update, {"n": 0}

    def cut_at_the_fourth(self: WeightEMA, model: nn.Module) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(self, model)

    monkeypatch.setattr(WeightEMA, "update", cut_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(micro_space(), tiny_data, tmp_path / "cut.pt", config=cfg, progress=False)
    assert load_checkpoint(tmp_path / "cut.pt")["ema"]["updates"] == 3
    monkeypatch.setattr(WeightEMA, "update", real)
    res = train_supernet(micro_space(), tiny_data, tmp_path / "cut.pt", resume=True, progress=False)
    assert res["weights_sha256"] == ref["weights_sha256"]


# ---------------------------------------------------------------- augment_per_subnet, cutout


def test_step_inputs_share_one_draw_by_default_and_draw_per_subnet_when_asked():
    """augment_per_subnet off: every subnet of a step trains on one augmented batch, drawn exactly as a plain augment_batch call
    would (so the default's random stream is unchanged); augment_per_subnet: distinct draws, one per subnet, the
    first of them the same as the shared draw, all reproducible from the seed."""
    from hwnas.data import augment_batch
    from hwnas.train.step import step_inputs

    ds = tiny_dataset(n_train=16)
    cfg = default_config(micro_space(), "x").model_copy(update={"regularize": "all"})  # every view as augment_batch draws it
    dev = torch.device("cpu")

    def draw(c: TrainConfig) -> list[torch.Tensor]:
        return step_inputs(ds.train_x, 12, ds, c, c.phases[0], 3, torch.Generator().manual_seed(5), dev)

    shared = draw(cfg.model_copy(update={"augment_per_subnet": False}))
    plain = augment_batch(ds.train_x, 12, ds.mean, ds.std, train=True, generator=torch.Generator().manual_seed(5), flip=cfg.flip,
                          cutout=cfg.cutout)
    assert len(shared) == 3 and all(x is shared[0] for x in shared) and torch.equal(shared[0], plain)
    per = draw(cfg.model_copy(update={"augment_per_subnet": True}))
    assert len(per) == 3 and torch.equal(per[0], plain)
    assert not torch.equal(per[0], per[1]) and not torch.equal(per[1], per[2])
    again = draw(cfg.model_copy(update={"augment_per_subnet": True}))
    assert all(torch.equal(a, b) for a, b in zip(per, again))


def test_step_loss_trains_each_subnet_on_its_own_batch():
    """A list of batches: subnet i's loss is computed on batch i (checked against each subnet alone on its batch);
    a list of the wrong length is refused."""
    from hwnas.train.step import step_loss

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=0.0, regularize="all")  # each subnet alone: smoothed alike
    xs = [x, x.flip(-1), x * 0.5][: len(subs)]
    assert len(xs) == len(subs) == 3
    each = [float(step_loss(net, net, [xi], y, [s], phase, cfg, None)) for xi, s in zip(xs, subs)]
    together = float(step_loss(net, net, xs, y, subs, phase, cfg, None))
    assert together == pytest.approx(sum(each) / 3, rel=1e-5)
    assert together != pytest.approx(float(step_loss(net, net, x, y, subs, phase, cfg, None)), rel=1e-4)
    with pytest.raises(ValueError, match="2 input batches for 3 subnets"):
        step_loss(net, net, xs[:2], y, subs, phase, cfg, None)


def test_kd_view_student_teaches_each_student_on_its_own_view(monkeypatch):
    """kd_view 'student': each student's soft target is the largest's prediction on that student's batch (checked
    against the largest run on it by hand), also when two students share one batch the largest did not see;
    'teacher' gives the largest's prediction on its own batch. With one shared batch both are the same target."""

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=1.0, regularize="all")
    assert phase.teacher == "inplace" and len(subs) == 3
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(x.shape, generator=g) for _ in subs]
    seen: list[torch.Tensor | None] = []
    real = step_mod.subnet_loss

    def spy(logits, yy, soft, c, reg):
        seen.append(None if soft is None else soft.clone())
        return real(logits, yy, soft, c, reg)

    def targets(c: TrainConfig, batches: list[torch.Tensor]) -> list[torch.Tensor | None]:
        seen.clear()
        net.zero_grad()
        step_mod.step_loss(net, net, batches, y, subs, phase, c, None)
        return list(seen)

    student = cfg.model_copy(update={"kd_view": "student"})
    monkeypatch.setattr(step_mod, "subnet_loss", spy)
    on_student, on_teacher = targets(student, xs), targets(cfg, xs)
    shared = [targets(c, [x] * 3) for c in (student, cfg)]
    students_share = targets(student, [xs[0], xs[1], xs[1]])
    with torch.no_grad():
        net.set_active(subs[0])
        by_hand = [net(xi).float() for xi in xs]
    assert on_student[0] is None and on_teacher[0] is None  # the largest learns from the labels
    for i in (1, 2):
        assert torch.allclose(on_student[i], by_hand[i], atol=1e-5)
        assert torch.allclose(on_teacher[i], by_hand[0], atol=1e-5)
        assert not torch.allclose(on_student[i], on_teacher[i], atol=1e-3)
        assert torch.equal(shared[0][i], shared[1][i])
        assert torch.allclose(students_share[i], by_hand[1], atol=1e-5)


def test_cutout_in_the_training_config_blanks_a_square_of_each_training_image():
    from hwnas.train.step import step_inputs

    ds = tiny_dataset(n_train=16)
    cfg = default_config(micro_space(), "x").model_copy(update={"cutout": 0.5, "flip": False})
    x = step_inputs(ds.train_x, 8, ds, cfg, cfg.phases[0], 1, torch.Generator().manual_seed(0), torch.device("cpu"))[0]
    zero_pixels = (x == 0).all(dim=1).flatten(1).sum(1)  # the hole holds the mean: 0 in every channel
    assert bool((zero_pixels >= 4).all())  # a 4x4 square, at least a quarter of it inside the 8x8 image
    with pytest.raises(Exception, match="cutout"):
        TrainConfig.model_validate(dict(cfg.model_dump(), cutout=1.0))


def test_frozen_teacher_labels_the_view_each_subnet_sees():
    """With one batch per subnet the frozen teacher runs on each subnet's own batch; with one shared batch, once."""
    from hwnas.train.step import step_loss

    cfg, _, subs, x, y, net = _micro_step(kd_weight=1.0)
    phase = cfg.phases[0].model_copy(update={"teacher": "frozen", "sampler": "random"})
    seen: list[torch.Tensor] = []

    class Teacher(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append(inp)
            return torch.zeros(inp.shape[0], 2)

    step_loss(net, net, x, y, subs, phase, cfg, Teacher())
    assert len(seen) == 1 and seen[0] is x
    seen.clear()
    xs = [x, x.flip(-1), x * 0.5]
    step_loss(net, net, xs, y, subs, phase, cfg, Teacher())
    assert len(seen) == 3 and all(a is b for a, b in zip(seen, xs))


def _dropout_space() -> Space:
    """micro_space with a head dropout that changes the logits of nearly every draw."""
    d = micro_space().model_dump()
    d["head"] = dict(d["head"], dropout=0.5)
    return Space.model_validate(d)


@pytest.mark.parametrize("regularize,largest_only,want", [
    ("largest", ["label_smoothing", "cutout"], "every"), ("largest", ["dropout"], "first"), ("all", ["dropout"], "every")])
def test_largest_only_dropout_trains_only_the_largest_with_dropout(monkeypatch: pytest.MonkeyPatch, regularize,
                                                                    largest_only, want):
    """With 'dropout' in largest_only (and regularize 'largest') the other subnets of a step run their dropout in eval
    mode (their logits do not depend on the random state), BN stays on batch statistics, and the model is back in
    train mode after the step; the largest keeps its dropout."""

    sp = _dropout_space()
    cfg = default_config(sp, "x").model_copy(update=dict(regularize=regularize, largest_only=largest_only))
    phase = cfg.phases[0]
    _, subs = sample_step(sp, phase, 0, seed=0, epoch=0, step=0)
    x = torch.randn(6, 3, subs[0].resolution, subs[0].resolution, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.manual_seed(0)
    net = Supernet(sp)
    net.train()
    bn_modes: list[bool] = []
    net.stem.register_forward_pre_hook(lambda m, a: bn_modes.append(all(b.training for b in net.modules()
                                                                          if isinstance(b, torch.nn.BatchNorm2d))))
    real = step_mod.training_loss
    outs: list[torch.Tensor] = []
    monkeypatch.setattr(step_mod, "training_loss", lambda logits, *a, **k: (outs.append(logits.detach()), real(logits, *a, **k))[1])
    for seed in (1, 2):  # the same step under two random states
        torch.manual_seed(seed)
        net.zero_grad()
        step_mod.step_loss(net, net, x, y, subs, phase, cfg, None)
    n = len(subs)
    assert n >= 3 and len(outs) == 2 * n
    assert all(m.training for m in net.modules()) and all(bn_modes)
    same = [torch.equal(outs[i], outs[n + i]) for i in range(n)]
    assert not same[0]  # the largest: dropout on, a different mask per random state
    assert same[1:] == ([True] * (n - 1) if want == "first" else [False] * (n - 1))


def test_largest_only_names_the_regularisers_the_largest_keeps_to_itself():
    """regularize 'largest' restricts only what largest_only names: label smoothing for every subnet with
    largest_only [cutout], the cutout still for the largest alone; regularize 'all' restricts nothing."""
    from hwnas.train.step import regularized

    base = default_config(micro_space(), "x")
    phase = base.phases[0]
    split = base.model_copy(update=dict(regularize="largest", largest_only=["cutout"]))
    assert regularized(split, phase, 3, "label_smoothing") == [True, True, True]
    assert regularized(split, phase, 3, "cutout") == [True, False, False]
    assert regularized(split, phase, 3, "dropout") == [True, True, True]
    both = base.model_copy(update=dict(regularize="largest"))
    assert regularized(both, phase, 3, "label_smoothing") == regularized(both, phase, 3, "cutout") == [True, False, False]
    assert regularized(base.model_copy(update=dict(regularize="all", largest_only=["dropout"])), phase, 3, "dropout") == [True] * 3
    d = base.model_dump()
    d.pop("largest_only")  # a config stored before the field reads as before
    assert TrainConfig.model_validate(d).largest_only == ["label_smoothing", "cutout"]
    with pytest.raises(ValidationError, match="largest_only"):
        TrainConfig.model_validate(dict(d, largest_only=["weight_decay"]))


def test_cutout_for_the_largest_alone_with_label_smoothing_for_all(monkeypatch: pytest.MonkeyPatch):
    """largest_only [cutout]: every subnet's loss is label-smoothed, and only the largest's view has the hole."""

    cfg, phase, subs, x, y, net = _micro_step(regularize="largest", largest_only=["cutout"], label_smoothing=0.1,
                                              cutout=0.5, augment_per_subnet=False)
    smoothing: list[float] = []
    real = step_mod.training_loss
    monkeypatch.setattr(step_mod, "training_loss", lambda *a, **k: (smoothing.append(k["label_smoothing"]), real(*a, **k))[1])
    step_mod.step_loss(net, net, x, y, subs, phase, cfg, None)
    assert smoothing == [0.1] * len(subs)
    ds = tiny_dataset(n_train=6)
    views = step_mod.step_inputs(ds.train_x, subs[0].resolution, ds, cfg, phase, len(subs), torch.Generator().manual_seed(0),
                            torch.device("cpu"))
    assert not torch.equal(views[0], views[1]) and torch.equal(views[1], views[2])  # one shared view, the largest's cut


def test_largest_every_trains_the_largest_on_every_nth_step_only():
    """largest_every N: the largest takes a gradient on steps 0, N, 2N, ... of an epoch; a random phase has no
    largest, so the field needs a sampler that puts it first; and it is part of what a step costs (its kind)."""
    from hwnas.train.phases import trains_largest

    phase = default_config(micro_space(), "x").phases[0]
    assert [trains_largest(phase, s) for s in range(4)] == [True] * 4
    every3 = phase.model_copy(update={"largest_every": 3})
    assert [trains_largest(every3, s) for s in range(7)] == [True, False, False, True, False, False, True]
    assert every3.kind != phase.kind
    with pytest.raises(ValidationError, match="largest_every"):
        type(phase).model_validate(dict(phase.model_dump(), sampler="random", teacher="none", largest_every=2))
    with pytest.raises(ValidationError, match="largest_every"):
        type(phase).model_validate(dict(phase.model_dump(), sampler="largest_random", subnets_per_step=1, largest_every=2))


@pytest.mark.parametrize("teach", [True, False])
def test_a_step_without_the_largest_trains_the_others_on_its_soft_targets(teach: bool):
    """train_largest False: the gradient and the loss are those of the other subnets alone, taught by the largest's
    prediction on its own view (computed without gradient); before kd_start the largest is not run at all."""
    from hwnas.train.step import subnet_loss

    cfg, phase, subs, x, y, net = _micro_step(kd_weight=1.0, regularize="all")
    assert phase.teacher == "inplace" and len(subs) == 3
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(x.shape, generator=g) for _ in subs]
    with torch.no_grad():  # away from the initial uniform prediction, so a soft target matters
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ran: list[object] = []
    real_set = net.set_active

    def spy(sub):
        ran.append(sub)
        return real_set(sub)

    net.set_active = spy
    net.zero_grad(set_to_none=True)
    got = float(step_mod.step_loss(net, net, xs, y, subs, phase, cfg, None, teach, train_largest=False))
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    assert (subs[0] in ran) is teach  # the largest runs only to teach
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        real_set(subs[0])
        soft = net(xs[0]).float() if teach else None
    want = 0.0
    for xi, s in zip(xs[1:], subs[1:]):
        real_set(s)
        loss = subnet_loss(net(xi), y, soft, cfg, True)
        loss.backward()
        want += float(loss.detach()) / 2
    assert got == pytest.approx(want, rel=1e-5)
    by_hand = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert by_hand.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], by_hand[n], rtol=1e-4, atol=1e-6)
    net.zero_grad(set_to_none=True)
    step_mod.step_loss(net, net, xs, y, subs, phase, cfg, None, teach, train_largest=True)
    with_largest = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    without = {n for n, g_ in grads.items() if g_.abs().sum() > 0}
    assert without < with_largest  # some weights only the largest uses get no gradient without it


def test_training_loop_and_cost_probe_skip_the_largest_on_the_configured_steps(tmp_path: Path, tiny_data: str, monkeypatch):
    """largest_every 2: the loop trains the largest on the even steps of each epoch; the cost probe times as many
    steps with it as without it, so the plan prices the phase's real mix."""
    import hwnas.train.api as api
    import hwnas.train.probe as probe

    flags: dict[str, list[bool]] = {"loop": [], "probe": []}

    def spy(where: str, real):
        def f(*a, train_largest: bool = True, **k):
            flags[where].append(train_largest)
            return real(*a, train_largest=train_largest, **k)
        return f

    monkeypatch.setattr(api, "step_loss", spy("loop", api.step_loss))
    monkeypatch.setattr(probe, "step_loss", spy("probe", probe.step_loss))
    cfg = TrainConfig.model_validate(dict(
        schedule="custom", batch_size=8, eval_subnets=0, checkpoint_every_seconds=0,
        phases=[dict(name="s", epochs=2, lr=0.01, sampler="sandwich", subnets_per_step=3, teacher="inplace",
                     largest_every=2, elastic={"kernel": 0, "depth": 0, "expand": 0})]))
    api.train_supernet(micro_space(), tiny_data, tmp_path / "le.pt", config=cfg, progress=False)
    assert flags["loop"] == [True, False, True, False, True] * 2  # 40 images / batch 8: 5 steps per epoch
    assert flags["probe"] and flags["probe"].count(True) == flags["probe"].count(False)

"""The elastic supernet: exact extraction, elastic layers, channel reordering, cost counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hwnas import Supernet, load_space
from hwnas.space import PRESETS, macs, params
from hwnas.supernet.elastic import ElasticBatchNorm, ElasticDepthwise

from helpers import perturb


@pytest.mark.parametrize("name", list(PRESETS))
def test_extracted_subnet_matches_supernet(name):
    space = load_space(name)
    net = Supernet(space)
    perturb(net)
    net.eval()
    for seed in range(3):
        sub = space.sample(seed=seed)
        if space.name.startswith("mbv3-imagenet"):
            sub = space.validate_subnet({**sub.model_dump(), "resolution": space.resolutions[0]})
        net.set_active(sub)
        x = torch.randn(2, 3, sub.resolution, sub.resolution)
        with torch.no_grad():
            ref = net(x)
            static = net.extract(sub)
            out = static(x)
        assert ref.abs().max() > 1e-3  # a meaningful signal, not all zeros
        rel = ((out - ref).abs().max() / ref.abs().max()).item()
        assert rel <= 1e-5, rel
        kinds = {type(m).__name__ for m in static.modules()}
        assert not any(k.startswith("Elastic") for k in kinds), kinds
        assert net.active == sub  # extraction leaves the supernet as it was


@pytest.mark.parametrize("name", list(PRESETS))
def test_analytic_macs_and_params_match_the_extracted_network(name):
    space = load_space(name)
    net = Supernet(space).eval()
    counted = {"macs": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            counted["macs"] += k * out.shape[1] * out.shape[2] * out.shape[3]
        elif isinstance(m, nn.Linear):
            counted["macs"] += m.in_features * m.out_features

    for seed in range(2):
        sub = space.sample(seed=seed)
        static = net.extract(sub)
        hs = [m.register_forward_hook(hook) for m in static.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        counted["macs"] = 0
        with torch.no_grad():
            static(torch.randn(1, 3, sub.resolution, sub.resolution))
        for h in hs:
            h.remove()
        assert counted["macs"] == macs(space, sub)
        assert sum(p.numel() for p in static.parameters()) == params(space, sub)


def test_reorder_channels_keeps_largest_function_and_sorts_importance():
    space = load_space("mbv3-tiny")
    net = Supernet(space)
    perturb(net)
    net.eval()
    net.set_active(space.largest())
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        small_before = copy.deepcopy(net)
        net.reorder_channels()
        after = net(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    changed = False
    for stage, stage_old in zip(net.stages, small_before.stages):
        for blk, old in zip(stage, stage_old):
            imp = blk.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])
            changed |= not torch.equal(blk.project.weight, old.project.weight)
    assert changed  # a random init is not already sorted: the permutation really happened


def test_elastic_kernel_is_centre_crop_through_learned_transform():
    dw = ElasticDepthwise(4, [3, 5, 7], stride=1)
    w7 = dw.weight.detach()
    # identity transforms: the 3x3 kernel is the centre of the 7x7 one
    torch.testing.assert_close(dw.active_weight(4, 3).detach(), w7[:, :, 2:5, 2:5])
    with torch.no_grad():
        dw.transforms["5to3"].mul_(2.0)
    torch.testing.assert_close(dw.active_weight(4, 3).detach(), 2 * w7[:, :, 2:5, 2:5])
    torch.testing.assert_close(dw.active_weight(4, 5).detach(), w7[:, :, 1:6, 1:6])
    # gradients reach both transforms when the smallest kernel runs
    out = dw(torch.randn(1, 4, 6, 6), kernel=3).sum()
    out.backward()
    assert dw.transforms["7to5"].grad is not None and dw.transforms["7to5"].grad.abs().sum() > 0
    assert dw.transforms["5to3"].grad.abs().sum() > 0


def test_elastic_bn_updates_only_active_statistics():
    bn = ElasticBatchNorm(8).train()
    bn(torch.randn(4, 5, 3, 3) * 3 + 1)
    assert torch.all(bn.running_mean[5:] == 0) and torch.all(bn.running_var[5:] == 1)
    assert torch.all(bn.running_mean[:5] != 0)


def test_supernets_hold_their_own_active_subnet():
    space = load_space("mbv3-tiny")
    a, b = Supernet(space), Supernet(space)
    a.set_active(space.smallest())
    b.set_active(space.largest())
    assert a.active == space.smallest() and b.active == space.largest()


def test_set_active_rejects_invalid_subnet():
    space = load_space("mbv3-tiny")
    net = Supernet(space)
    bad = space.smallest().model_dump()
    bad["depths"][0] = 7
    with pytest.raises(ValueError, match="depths"):
        net.set_active(bad)


def test_training_forward_backward_reaches_only_active_weights():
    space = load_space("mbv3-tiny")
    net = Supernet(space).train()
    sub = space.smallest()
    net.set_active(sub)
    net(torch.randn(4, 3, sub.resolution, sub.resolution)).sum().backward()
    blk = net.stages[0][0]
    g = blk.expand_conv.weight.grad
    mid = blk.plan(sub.kernels[0][0], sub.expands[0][0], 12).mid_channels
    assert g[:mid].abs().sum() > 0 and torch.all(g[mid:] == 0)
    assert net.stages[0][2].expand_conv.weight.grad is None  # beyond the active depth


def test_zero_init_residual_static_net_matches_the_zero_init_supernet():
    """A fresh static network with zero-initialised residual blocks computes what the supernet's extraction
    of the same subnet computes after `Supernet.zero_init_residual` (one initialisation, two code paths), and
    only the residual blocks' last BN scales are zeroed."""
    from hwnas.space import build_plan
    from hwnas.supernet import StaticNet, zero_init_residual

    space = load_space("mbv3-tiny")
    sub = space.sample(rng=__import__("numpy").random.default_rng(3))
    torch.manual_seed(0)
    sup = Supernet(space)
    sup.zero_init_residual()
    net = StaticNet(build_plan(space, sub))
    net.load_state_dict(sup.extract(sub).state_dict())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sup.eval(), net.eval()
    torch.nn.init.ones_(next(b for b in net.blocks if b.plan.residual).project[1].weight)  # undo one, then redo all
    zero_init_residual(net)
    after = net.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed == []  # the static function zeroes exactly what the supernet's did
    residual = [b for b in net.blocks if b.plan.residual]
    assert residual and all(float(b.project[1].weight.detach().abs().max()) == 0 for b in residual)
    assert all(float(b.project[1].weight.detach().abs().min()) > 0 for b in net.blocks if not b.plan.residual)
    x = torch.randn(2, 3, sub.resolution, sub.resolution)
    sup.set_active(sub)
    with torch.no_grad():
        assert torch.allclose(sup(x), net(x), atol=1e-6)

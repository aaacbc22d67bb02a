"""`hwnas import-ofa` and `hwnas.load_supernet`, without the `ofa` package.

The fixture writes an OFA-style state dict from what this file states about OFA's layout (key
names spelled out here, not taken from hwnas's mapping) and a reference forward written from OFA's
semantics, so a changed key, a transposed kernel matrix, a wrong SE width or activation fails here.
scripts/verify_ofa_import.py checks the same against OFA's own code.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import hwnas
from hwnas.cli import main
from hwnas.errors import UserError
from hwnas.space import load_space
from hwnas.space.models import make_divisible
from hwnas.space.presets import with_classes
from hwnas.supernet.ofa_import import supernet_from_ofa


def _kernel_pairs(kernels: list[int]) -> list[tuple[int, int]]:
    ks = sorted(kernels)
    return list(zip(ks[1:], ks[:-1]))  # (big, small): (5, 3), (7, 5)


def fake_ofa_state_dict(space, num_classes: int, seed: int = 0, block_word: str = "conv") -> dict[str, torch.Tensor]:
    """Random tensors under OFA's OFAMobileNetV3 key names (block_word: 'conv' today, 'mobile_inverted_conv' in
    the published checkpoints)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(key: str, *shape: int) -> None:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5

    def bn(p: str, c: int) -> None:
        sd[f"{p}.weight"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{p}.bias"] = 0.2 * torch.randn(c, generator=g)
        sd[f"{p}.running_mean"] = 0.2 * torch.randn(c, generator=g)
        sd[f"{p}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{p}.num_batches_tracked"] = torch.tensor(7)

    c0, c1 = space.stem_channels, space.first_block_channels
    conv("first_conv.conv.weight", c0, 3, 3, 3)
    bn("first_conv.bn", c0)
    conv(f"blocks.0.{block_word}.depth_conv.conv.weight", c0, 1, 3, 3)
    bn(f"blocks.0.{block_word}.depth_conv.bn", c0)
    conv(f"blocks.0.{block_word}.point_linear.conv.weight", c1, c0, 1, 1)
    bn(f"blocks.0.{block_word}.point_linear.bn", c1)
    n, cin = 1, c1
    for i, st in enumerate(space.stages):
        cout = space.stage_channels(i)
        for j in range(st.max_depth):
            b_in = cin if j == 0 else cout
            mid = make_divisible(round(b_in * max(st.expands)), 8)
            p = f"blocks.{n}.{block_word}"
            conv(f"{p}.inverted_bottleneck.conv.conv.weight", mid, b_in, 1, 1)
            bn(f"{p}.inverted_bottleneck.bn.bn", mid)
            k = max(st.kernels)
            conv(f"{p}.depth_conv.conv.conv.weight", mid, 1, k, k)
            for big, small in _kernel_pairs(st.kernels):
                sd[f"{p}.depth_conv.conv.{big}to{small}_matrix"] = torch.eye(small * small) + 0.2 * torch.randn(
                    small * small, small * small, generator=g)
            bn(f"{p}.depth_conv.bn.bn", mid)
            if st.se:
                se_mid = make_divisible(mid // 4, 8)
                conv(f"{p}.depth_conv.se.fc.reduce.weight", se_mid, mid, 1, 1)
                sd[f"{p}.depth_conv.se.fc.reduce.bias"] = 0.1 * torch.randn(se_mid, generator=g)
                conv(f"{p}.depth_conv.se.fc.expand.weight", mid, se_mid, 1, 1)
                sd[f"{p}.depth_conv.se.fc.expand.bias"] = 0.1 * torch.randn(mid, generator=g)
            conv(f"{p}.point_linear.conv.conv.weight", cout, mid, 1, 1)
            bn(f"{p}.point_linear.bn.bn", cout)
            n += 1
        cin = cout
    fe, fm = space.head_channels
    conv("final_expand_layer.conv.weight", fe, cin, 1, 1)
    bn("final_expand_layer.bn", fe)
    conv("feature_mix_layer.conv.weight", fm, fe, 1, 1)
    sd["classifier.linear.weight"] = 0.05 * torch.randn(num_classes, fm, generator=g)
    sd["classifier.linear.bias"] = 0.05 * torch.randn(num_classes, generator=g)
    return sd


# ---- OFA's forward, written from its semantics, on the OFA state dict itself ----

def _hswish(x):
    return x * F.relu6(x + 3.0) / 6.0


def _act(name, x):
    return F.relu(x) if name == "relu" else _hswish(x)


def _bn(sd, p, x):
    c = x.shape[1]
    return F.batch_norm(x, sd[f"{p}.running_mean"][:c], sd[f"{p}.running_var"][:c], sd[f"{p}.weight"][:c],
                        sd[f"{p}.bias"][:c], False, 0.0, 1e-5)


def _ofa_kernel(sd, p, channels, kernels, k):
    """OFA's DynamicSeparableConv2d.get_active_filter: from the largest kernel down, centre crop then
    F.linear with `{big}to{small}_matrix` (x @ M^T), until the active size."""
    w = sd[f"{p}.depth_conv.conv.conv.weight"][:channels]
    for big, small in _kernel_pairs(kernels)[::-1]:  # 7to5, then 5to3
        if big <= k:
            break
        s = (big - small) // 2
        crop = w[:, :, s:s + small, s:s + small].reshape(channels, small * small)
        w = F.linear(crop, sd[f"{p}.depth_conv.conv.{big}to{small}_matrix"]).reshape(channels, 1, small, small)
    return w


def ofa_reference_logits(sd, space, sub, x):
    stem = space.stem  # OFA: 3x3 stride 2; mbv3-tiny keeps the layout with a stride-1 stem
    x = _hswish(_bn(sd, "first_conv.bn", F.conv2d(x, sd["first_conv.conv.weight"], None, stem.stride, stem.kernel // 2)))
    c = x.shape[1]
    y = F.relu(_bn(sd, "blocks.0.conv.depth_conv.bn", F.conv2d(x, sd["blocks.0.conv.depth_conv.conv.weight"], None, 1, 1, 1, c)))
    y = _bn(sd, "blocks.0.conv.point_linear.bn", F.conv2d(y, sd["blocks.0.conv.point_linear.conv.weight"]))
    x = x + y if y.shape == x.shape else y
    n = 1
    for i, st in enumerate(space.stages):
        cout = space.stage_channels(i)
        for j in range(st.max_depth):
            p = f"blocks.{n}.conv"
            n += 1
            if j >= sub.depths[i]:
                continue
            k, e, cin = sub.kernels[i][j], sub.expands[i][j], x.shape[1]
            stride = st.stride if j == 0 else 1
            mid = make_divisible(round(cin * e), 8)
            y = _act(st.act, _bn(sd, f"{p}.inverted_bottleneck.bn.bn",
                                 F.conv2d(x, sd[f"{p}.inverted_bottleneck.conv.conv.weight"][:mid, :cin])))
            w = _ofa_kernel(sd, p, mid, st.kernels, k)
            y = _act(st.act, _bn(sd, f"{p}.depth_conv.bn.bn", F.conv2d(y, w, None, stride, k // 2, 1, mid)))
            if st.se:
                r = make_divisible(mid // 4, 8)
                s = y.mean(3, keepdim=True).mean(2, keepdim=True)
                s = F.relu(F.conv2d(s, sd[f"{p}.depth_conv.se.fc.reduce.weight"][:r, :mid], sd[f"{p}.depth_conv.se.fc.reduce.bias"][:r]))
                s = F.conv2d(s, sd[f"{p}.depth_conv.se.fc.expand.weight"][:mid, :r], sd[f"{p}.depth_conv.se.fc.expand.bias"][:mid])
                y = y * (F.relu6(s + 3.0) / 6.0)
            y = _bn(sd, f"{p}.point_linear.bn.bn", F.conv2d(y, sd[f"{p}.point_linear.conv.conv.weight"][:cout, :mid]))
            x = x + y if stride == 1 and cin == cout else y
    x = _hswish(_bn(sd, "final_expand_layer.bn", F.conv2d(x, sd["final_expand_layer.conv.weight"])))
    x = _hswish(F.conv2d(x.mean(3, keepdim=True).mean(2, keepdim=True), sd["feature_mix_layer.conv.weight"]))
    return F.linear(x.flatten(1), sd["classifier.linear.weight"], sd["classifier.linear.bias"])


@pytest.fixture
def tiny():
    return with_classes(load_space("mbv3-tiny"), 5)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_imported_supernet_and_extracted_subnets_match_ofa_semantics(tiny):
    sd = fake_ofa_state_dict(tiny, 5, block_word="mobile_inverted_conv")  # the published spelling
    net = supernet_from_ofa(sd, candidates=[tiny])
    assert net.space.num_classes == 5
    ref_sd = {k.replace(".mobile_inverted_conv.", ".conv."): v for k, v in sd.items()}
    subs = [tiny.largest(), tiny.smallest()] + [tiny.sample(seed=s) for s in range(4)]
    assert any(k != max(tiny.stages[0].kernels) for s in subs for ks in s.kernels for k in ks)
    for sub in subs:
        x = torch.randn(2, 3, sub.resolution, sub.resolution)
        with torch.no_grad():
            ref = ofa_reference_logits(ref_sd, tiny, sub, x)
            net.set_active(sub)
            got = net(x)
            got_static = net.extract(sub).eval()(x)
        assert ref.abs().max() > 1e-3
        assert _rel(got, ref) <= 1e-5, sub
        assert _rel(got_static, ref) <= 1e-5, sub


def test_kernel_transform_is_ofa_linear_map_on_the_centre_crop(tiny):
    """Pins direction and order: k3 = ((crop5(w7) @ M75^T) crop3) @ M53^T, with non-symmetric matrices."""
    sd = fake_ofa_state_dict(tiny, 5)
    p = "blocks.1.conv"
    m75 = torch.randn(25, 25, generator=torch.Generator().manual_seed(3))
    m53 = torch.randn(9, 9, generator=torch.Generator().manual_seed(4))
    sd[f"{p}.depth_conv.conv.7to5_matrix"], sd[f"{p}.depth_conv.conv.5to3_matrix"] = m75, m53
    net = supernet_from_ofa(sd, candidates=[tiny])
    dw = net.stages[0][0].depthwise
    w7 = sd[f"{p}.depth_conv.conv.conv.weight"]
    c = w7.shape[0]
    w5 = (w7[:, :, 1:6, 1:6].reshape(c, 25) @ m75.T).reshape(c, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(c, 9) @ m53.T).reshape(c, 1, 3, 3)
    with torch.no_grad():
        assert torch.equal(dw.active_weight(c, 7), w7)
        torch.testing.assert_close(dw.active_weight(c, 5), w5)
        torch.testing.assert_close(dw.active_weight(c, 3), w3)
        assert not torch.allclose(w3, (w5[:, :, 1:4, 1:4].reshape(c, 9) @ m53).reshape(c, 1, 3, 3))


def test_key_layout_of_one_elastic_block(tiny):
    """The OFA names hwnas reads for one SE block (a rename in either project must show up here)."""
    sd = fake_ofa_state_dict(tiny, 5)
    block = sorted(k[len("blocks.4.conv."):] for k in sd if k.startswith("blocks.4.conv."))  # stage 1 (depth 3 each), first block, with SE
    bn = ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
    expected = sorted(
        ["inverted_bottleneck.conv.conv.weight", "depth_conv.conv.conv.weight", "depth_conv.conv.7to5_matrix",
         "depth_conv.conv.5to3_matrix", "depth_conv.se.fc.reduce.weight", "depth_conv.se.fc.reduce.bias",
         "depth_conv.se.fc.expand.weight", "depth_conv.se.fc.expand.bias", "point_linear.conv.conv.weight"]
        + [f"{m}.bn.bn.{b}" for m in ("inverted_bottleneck", "depth_conv", "point_linear") for b in bn]
    )
    assert block == expected
    net = supernet_from_ofa(sd, candidates=[tiny])
    blk = net.stages[1][0]
    assert torch.equal(blk.se.reduce.weight, sd["blocks.4.conv.depth_conv.se.fc.reduce.weight"])
    assert torch.equal(blk.project_bn.running_var, sd["blocks.4.conv.point_linear.bn.bn.running_var"])
    assert torch.equal(net.head.classifier.weight, sd["classifier.linear.weight"])
    assert torch.equal(net.first_block.project[1].bias, sd["blocks.0.conv.point_linear.bn.bias"])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda sd: sd.pop("blocks.3.conv.depth_conv.conv.5to3_matrix"), r"tensor blocks\.3\.conv\.depth_conv\.conv\.5to3_matrix: missing"),
        (lambda sd: sd.update({"blocks.99.conv.point_linear.conv.conv.weight": torch.zeros(1)}), r"tensor blocks\.99\..*unexpected"),
        (lambda sd: sd.update({"blocks.2.conv.point_linear.bn.bn.weight": torch.zeros(3)}), r"tensor blocks\.2\.conv\.point_linear\.bn\.bn\.weight: shape \(3,\)"),
        (lambda sd: sd.update({"first_conv.conv.weight": torch.zeros(40, 3, 3, 3)}), r"tensor first_conv\.conv\.weight: shape \(40, 3, 3, 3\)"),
        (lambda sd: sd.pop("classifier.linear.weight"), r"tensor classifier\.linear\.weight: missing"),
    ],
)
def test_bad_checkpoints_name_the_tensor(tiny, mutate, match):
    sd = fake_ofa_state_dict(tiny, 5)
    mutate(sd)
    with pytest.raises(UserError, match=match):
        supernet_from_ofa(sd, candidates=[tiny])


def test_static_layer_spellings_are_accepted_as_ofa_does(tiny):
    """OFA's load_state_dict also takes `.bn.` for `.bn.bn.` and `.linear.linear.` for `.linear.`."""
    sd = fake_ofa_state_dict(tiny, 5)
    odd = {k.replace(".bn.bn.", ".bn.").replace("classifier.linear.", "classifier.linear.linear."): v for k, v in sd.items()}
    net = supernet_from_ofa(odd, candidates=[tiny])
    assert torch.equal(net.stages[0][0].expand_bn.running_mean, sd["blocks.1.conv.inverted_bottleneck.bn.bn.running_mean"])
    assert torch.equal(net.head.classifier.bias, sd["classifier.linear.bias"])


def test_num_batches_tracked_is_optional(tiny):
    sd = {k: v for k, v in fake_ofa_state_dict(tiny, 5).items() if not k.endswith("num_batches_tracked")}
    assert supernet_from_ofa(sd, candidates=[tiny]).space == tiny


@pytest.mark.parametrize("name, width", [("mbv3-imagenet", 1.0), ("mbv3-imagenet-w1.2", 1.2)])
def test_cli_import_detects_width_and_classes_and_load_supernet_reads_it(tmp_path, capsys, name, width):
    space = load_space(name)
    sd = fake_ofa_state_dict(space, 7)
    src = tmp_path / "ofa.pth"
    torch.save({"state_dict": sd} if width == 1.0 else sd, src)
    out = tmp_path / "hw.pt"
    assert main(["import-ofa", "--checkpoint", str(src), "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["space"] == name and r["num_classes"] == 7 and r["checkpoint"] == str(out)
    net = hwnas.load_supernet(out)
    assert net.space == with_classes(space, 7) and not net.training
    assert r["params"] == sum(p.numel() for p in net.parameters())
    assert torch.equal(net.stages[4][3].depthwise.transforms["7to5"], sd["blocks.20.conv.depth_conv.conv.7to5_matrix"])
    # a failed import leaves an existing --out as it was; a good one replaces it
    before = out.read_bytes()
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in sd.items() if k != "feature_mix_layer.conv.weight"}, bad)
    assert main(["import-ofa", "--checkpoint", str(bad), "--out", str(out)]) == 2
    assert "feature_mix_layer.conv.weight: missing" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["import-ofa", "--checkpoint", str(src), "--out", str(out)]) == 0


def test_cli_rejects_other_architectures_and_unsafe_files(tmp_path, capsys):
    resnet = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"input_stem.0.conv.weight": torch.zeros(32, 3, 3, 3)}}, resnet)
    assert main(["import-ofa", "--checkpoint", str(resnet), "--out", str(tmp_path / "a.pt")]) == 2
    assert "first_conv.conv.weight" in capsys.readouterr().err
    pickled = tmp_path / "code.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": _Unsafe()}, pickled)
    assert main(["import-ofa", "--checkpoint", str(pickled), "--out", str(tmp_path / "b.pt")]) == 2
    assert "weights-only" in capsys.readouterr().err
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


class _Unsafe:  # needs code to unpickle: weights_only=True refuses it
    pass


def test_load_supernet_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        hwnas.load_supernet(tmp_path / "nope.pt")


def test_w12_preset_has_ofa_widths():
    """OFA w1.2: make_divisible(w * 1.2, 8) for every width, head included (first block keeps stride 1, no expand)."""
    sp = load_space("mbv3-imagenet-w1.2")
    assert (sp.stem_channels, sp.first_block_channels) == (24, 24)
    assert [sp.stage_channels(i) for i in range(5)] == [32, 48, 96, 136, 192]
    assert sp.head_channels == (1152, 1536)
    assert sp.model_copy(update={"name": "mbv3-imagenet", "width_mult": 1.0}) == load_space("mbv3-imagenet")

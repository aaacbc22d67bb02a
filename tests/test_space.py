"""Search spaces, subnets, encoding and the analytic cost model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwnas.errors import UserError
from hwnas.space import PRESETS, Encoding, load_space, macs, params
from hwnas.space.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=list(PRESETS))
def space(request):
    return load_space(request.param)


def test_ofa_space_is_exactly_as_published():
    sp = load_space("mbv3-imagenet")
    assert sp.num_subnets_per_resolution() == 7371**5
    assert sp.resolutions == list(range(128, 225, 4)) and len(sp.resolutions) == 25
    assert [sp.stage_channels(i) for i in range(5)] == [24, 40, 80, 112, 160]
    assert [s.stride for s in sp.stages] == [2, 2, 2, 1, 2]
    assert [s.se for s in sp.stages] == [False, True, False, True, True]
    assert [s.act for s in sp.stages] == ["relu", "relu", "hswish", "hswish", "hswish"]
    assert sp.head_channels == (960, 1280)
    plan = build_plan(sp, sp.largest())
    assert plan.blocks[0].expand == 1 and plan.blocks[0].residual  # OFA's fixed first block
    # SE bottleneck at expand 6: stage 2's first block sees 24 channels (mid 144 -> 40),
    # its later blocks 40 channels (mid 240 -> make_divisible(60, 8) = 64)
    assert plan.blocks[1 + 4].se_channels == 40 and plan.blocks[1 + 5].se_channels == 64
    assert plan.head.in_size == 7  # 224 / 32


def test_preset_files_are_in_sync_with_presets(space):
    path = ROOT / "supernets" / f"{space.name}.yaml"
    assert load_space(str(path)) == space
    assert yaml.safe_load(path.read_text())["name"] == space.name


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("stages"), "stages"),
        (lambda d: d["stages"][0].update(kernels=[3, 4]), "kernels"),
        (lambda d: d["stages"][0].update(depths=[3, 2]), "depths"),
        (lambda d: d.update(resolutions=[32, 24]), "resolutions"),
        (lambda d: d.update(default_resolution=999), "default_resolution"),
        (lambda d: d.update(colour="blue"), "colour"),
    ],
)
def test_bad_space_file_names_the_field(tmp_path, mutate, field):
    d = PRESETS["mbv3-tiny"]().to_file_dict()
    mutate(d)
    p = tmp_path / "space.json"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match=field) as e:
        load_space(str(p))
    assert str(p) in str(e.value)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UserError, match="mbv3-cifar"):
        load_space("resnet50")


def test_broken_yaml_is_a_user_error(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_space(str(p))


def test_sampling_is_seeded_valid_and_covers_choices(space):
    a = [space.sample(seed=s) for s in range(200)]
    b = [space.sample(seed=s) for s in range(200)]
    assert a == b
    assert len({x.key() for x in a}) > 150
    seen_k = {k for x in a for ks in x.kernels for k in ks}
    seen_d = {d for x in a for d in x.depths}
    seen_r = {x.resolution for x in a}
    assert seen_k == set(space.stages[0].kernels)
    assert seen_d == set(space.stages[0].depths)
    assert seen_r == set(space.resolutions)


def test_smallest_and_largest_bound_the_cost(space):
    lo, hi = macs(space, space.smallest()), macs(space, space.largest())
    for s in range(20):
        m = macs(space, space.sample(seed=s))
        assert lo <= m <= hi


@pytest.mark.parametrize(
    "patch, field",
    [
        (dict(resolution=33), "subnet.resolution"),
        (dict(depths=[9, 2, 2]), "subnet.depths.0"),
        (dict(depths=[1, 1]), "subnet.depths"),
        (dict(kernels=[[4], [3], [3]]), "subnet.kernels.0.0"),
        (dict(expands=[[2, 2], [2], [2]]), "subnet.expands.0"),
        (dict(space="mbv3-cifar"), "subnet.space"),
        (dict(extra=1), "extra"),
    ],
)
def test_subnet_validation_names_the_field(patch, field):
    sp = load_space("mbv3-tiny")
    d = sp.smallest().model_dump()
    d.update(patch)
    with pytest.raises(UserError) as e:
        sp.validate_subnet(d)
    assert field in str(e.value)


def test_subnet_canonical_json_round_trip(space):
    sub = space.sample(seed=3)
    text = sub.to_json()
    again = space.validate_subnet(text)
    assert again == sub and again.to_json() == text
    assert json.loads(text)["space"] == space.name


def test_encoding_round_trip_and_canonical_form(space):
    enc = Encoding(space)
    up = enc.upper()
    assert up.shape == (enc.length,)
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = rng.integers(0, up + 1)
        sub = enc.decode(x)
        c = enc.encode(sub)
        assert np.array_equal(c, enc.canonical(x))
        assert enc.decode(c) == sub
        # inactive genes carry no information: changing them changes nothing
        inactive = ~enc.active_mask(x)
        y = x.copy()
        y[inactive] = up[inactive]
        assert enc.decode(y) == sub
        assert np.array_equal(enc.canonical(y), c)


def test_encoding_rejects_bad_genomes():
    enc = Encoding(load_space("mbv3-tiny"))
    with pytest.raises(ValueError, match="length"):
        enc.decode(np.zeros(enc.length + 1, dtype=int))
    bad = np.zeros(enc.length, dtype=int)
    bad[0] = 99
    with pytest.raises(ValueError, match="range"):
        enc.decode(bad)


def test_onehot_distinguishes_subnets_and_ignores_inactive():
    sp = load_space("mbv3-tiny")
    enc = Encoding(sp)
    a, b = enc.encode(sp.smallest()), enc.encode(sp.largest())
    assert not np.array_equal(enc.onehot(a), enc.onehot(b))
    c = a.copy()
    c[~enc.active_mask(a)] = 1
    assert np.array_equal(enc.onehot(a), enc.onehot(c))


def test_params_grow_with_expand_and_depth():
    sp = load_space("mbv3-cifar")
    small = sp.smallest()
    d = small.model_dump()
    d["expands"][0][0] = 6
    assert params(sp, sp.validate_subnet(d)) > params(sp, small)
    assert macs(sp, sp.validate_subnet(d)) > macs(sp, small)

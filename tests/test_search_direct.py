"""Choosing a subnet without a supernet (time budgets too short to train one): the data's own
resolution, within the latency budget, the largest subnet that still gets enough epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.latency.model import LatencyModel
from hwnas.search.direct import choose_for_time, feasible_subnets, native_resolution, resolution_for, uniform_subnets
from hwnas.space import Encoding, Space
from hwnas.space.cost import macs
from tests.test_train import micro_space, tiny_dataset


class MacsLatency:
    """A fake latency model: 1 ms per million MACs (a LatencyModel by the protocol)."""

    def __init__(self, space: Space):
        self.space, self.enc = space, Encoding(space)

    @property
    def resolutions(self) -> list[int]:
        return list(self.space.resolutions)

    def predict(self, subnet) -> float:
        return macs(self.space, subnet) / 1e6

    def predict_genomes(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.predict(self.enc.decode(x)) for x in np.atleast_2d(X)])

    def min_latency_ms(self) -> float:
        return min(self.predict(self.space.smallest().model_copy(update={"resolution": r})) for r in self.resolutions)


def test_native_resolution_is_the_closest_to_the_images():
    sp = micro_space().model_copy(update={"resolutions": [24, 28, 32, 36, 40]})
    assert native_resolution(sp, 32) == 32
    assert native_resolution(sp, 30) == 28  # a tie goes to the smaller
    assert native_resolution(sp, 64) == 40 and native_resolution(sp, 8) == 24


def test_feasible_subnets_are_within_the_budget_and_include_fitting_uniform_nets():
    sp = micro_space()
    model = MacsLatency(sp)
    assert isinstance(model, LatencyModel)
    uni = uniform_subnets(sp, 12)
    assert len(uni) == 3 * 2 * 3 and all(len(set(s.depths)) == 1 for s in uni)
    budget = float(np.median([model.predict(s) for s in uni]))
    feas, _ = feasible_subnets(sp, model, budget, 12, pool=300)
    assert feas and all(model.predict(s) <= budget and s.resolution == 12 for s in feas)
    assert {s.key() for s in uni if model.predict(s) <= budget} <= {s.key() for s in feas}
    assert len({s.key() for s in feas}) == len(feas)


def test_resolution_falls_back_below_the_native_one_when_nothing_fits_there():
    sp = micro_space()
    model = MacsLatency(sp)
    at8 = model.predict(sp.smallest().model_copy(update={"resolution": 8}))
    at12 = model.predict(sp.smallest().model_copy(update={"resolution": 12}))
    assert at8 < at12
    r, feas, lat = resolution_for(sp, model, (at8 + at12) / 2, image_size=12)
    assert r == 8 and feas
    assert set(lat) == {s.key() for s in feas}  # the predictions the direct route re-chooses by, one per feasible subnet
    assert all(abs(lat[s.key()] - model.predict(s)) < 1e-9 and lat[s.key()] <= (at8 + at12) / 2 for s in feas)
    r, _, _ = resolution_for(sp, model, at12 * 1.01, image_size=12)
    assert r == 12


def test_choose_for_time_takes_the_largest_that_gets_enough_epochs():
    sp = micro_space()
    feas, _ = feasible_subnets(sp, MacsLatency(sp), 1e9, 12, pool=300)
    cost = lambda s: 1.0 + macs(sp, s) / 1e5  # noqa: E731  seconds per epoch, linear in MACs
    m = sorted(macs(sp, s) for s in feas)
    mid = m[len(m) // 2]
    train_s = 12.0 * (1.0 + mid / 1e5) * (1 + 1e-9)  # exactly 12 epochs of the median-MACs subnet
    pick, ep = choose_for_time(sp, feas, cost, train_s, min_epochs=12.0)
    assert macs(sp, pick) == mid and ep == pytest.approx(12.0)
    assert all(macs(sp, s) <= mid or train_s / cost(s) < 12.0 for s in feas)
    # not even the smallest gets its epochs: the smallest
    pick, ep = choose_for_time(sp, feas, cost, 1.0, min_epochs=12.0)
    assert macs(sp, pick) == m[0] and ep < 12.0


def test_step_seconds_leaves_the_network_and_random_streams_alone():
    from hwnas.space import build_plan
    from hwnas.supernet import StaticNet
    from hwnas.train.standalone import step_seconds

    sp = micro_space()
    torch.manual_seed(0)
    net = StaticNet(build_plan(sp, sp.largest().model_copy(update={"resolution": 8})))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.random.get_rng_state()
    s = step_seconds(net, tiny_dataset(), resolution=8, steps=2)
    assert s > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(state, torch.random.get_rng_state())


def _attempt(predicted: float, measured: float, budget: float):
    from types import SimpleNamespace

    return SimpleNamespace(predicted_latency_ms=predicted, measured_latency_ms=measured, within_budget=measured <= budget)


def test_rechoose_scales_predictions_by_the_worst_measured_ratio():
    """After a miss, the next candidate is chosen by the same rule among untried subnets whose prediction,
    scaled by the measured/predicted ratio, fits; none fitting gives the fastest predicted untried one."""
    from hwnas.generate.direct import rechoose

    sp = micro_space()
    model = MacsLatency(sp)
    feas, _ = feasible_subnets(sp, model, 1e9, 12, pool=300)
    budget = float(np.median([model.predict(s) for s in feas]))
    feas = [s for s in feas if model.predict(s) <= budget]
    first = max(feas, key=lambda s: macs(sp, s))
    p0 = model.predict(first)
    atts = [_attempt(p0, 1.25 * p0, budget), _attempt(p0, 1.1 * p0, budget)]  # the worst ratio (1.25) counts
    cost = lambda s: 1.0  # noqa: E731  every subnet trains the same epochs: the rule takes the largest that fits
    pred = {s.key(): model.predict(s) for s in feas}
    nxt = rechoose(sp, pred, feas, [first], atts, budget, cost, 100.0)
    assert nxt.key() != first.key() and model.predict(nxt) * 1.25 <= budget
    assert all(model.predict(s) * 1.25 > budget or macs(sp, s) <= macs(sp, nxt) for s in feas if s.key() != first.key())
    # a ratio no subnet survives: the fastest predicted one not tried yet
    nxt = rechoose(sp, pred, feas, [first], [_attempt(p0, 100 * p0, budget)], budget, cost, 100.0)
    assert model.predict(nxt) == min(model.predict(s) for s in feas if s.key() != first.key())
    assert rechoose(sp, pred, feas, feas, atts, budget, cost, 100.0) is None  # every one tried


def test_fallback_pick_prefers_the_accepted_then_the_fastest_within_then_the_fastest():
    from hwnas.generate.direct import fallback_pick

    subs = ["a", "b", "c"]
    assert fallback_pick(subs, [_attempt(1, 1.2, 1), _attempt(1, 1.1, 1), _attempt(1, 0.9, 1)]) == "c"
    assert fallback_pick(subs, [_attempt(1, 0.99, 1), _attempt(1, 0.95, 1), _attempt(1, 1.3, 1)]) == "b"
    assert fallback_pick(subs, [_attempt(1, 1.4, 1), _attempt(1, 1.2, 1), _attempt(1, 1.3, 1)]) == "b"


def test_run_direct_measures_again_after_a_miss_and_trains_what_fits_with_its_margin(monkeypatch):
    """The first choice measures 20% over its prediction: the route chooses again under the measured
    ratio, accepts a candidate only MARGIN under the budget, and trains that one."""
    import time
    from types import SimpleNamespace

    import hwnas.train.standalone as standalone
    from hwnas.generate.direct import MARGIN, run_direct

    # step timing as on a fast machine, whatever the load: every subnet trains enough epochs, so the first choice is
    # the largest within the budget (on a loaded machine the epochs rule picked a small one that fit at once)
    monkeypatch.setattr(standalone, "step_seconds", lambda *a, **k: 1e-5)

    sp = micro_space()
    model = MacsLatency(sp)
    ds = tiny_dataset()
    budget = float(np.median([model.predict(s) for s in uniform_subnets(sp, 12)]))
    seen = []

    def check(cand):
        measured = 1.2 * cand.predicted_latency_ms  # this machine runs 20% slower than the table says
        seen.append(cand.subnet)
        return SimpleNamespace(subnet=cand.subnet.model_dump(mode="json"), predicted_latency_ms=cand.predicted_latency_ms,
                               measured_latency_ms=measured, within_budget=measured <= budget)

    run = run_direct(sp, None, model, ds, budget, deadline=time.perf_counter() + 4.0, supernet_epochs=0.1, device="cpu",
                     progress=False, log=lambda m: None, check=check, reserve_s=lambda s: 0.5)
    assert len(seen) >= 2 and model.predict(seen[0]) * 1.2 > budget  # the first choice missed
    assert run.subnet.key() == seen[-1].key() and 1.2 * model.predict(run.subnet) <= budget * (1 - MARGIN)
    assert run.train["iters"] >= 1 and run.attempts[-1].measured_latency_ms <= budget * (1 - MARGIN)
    assert f"the first {len(seen) - 1} candidate(s) measured over the budget" in run.reason


def test_run_direct_mirrors_images_only_when_the_data_allows(monkeypatch):
    """Digits are not mirror-invariant: the training config says flip false, and the direct route's training
    must not mirror them either (it once used the single-network recipe's flip=True for any data)."""
    import time
    from types import SimpleNamespace

    import hwnas.train.standalone as standalone
    from hwnas.generate.direct import run_direct

    sp = micro_space()
    model = MacsLatency(sp)
    budget = float(max(model.predict(s) for s in uniform_subnets(sp, 12)))
    flips = []
    real = standalone.augment_batch

    def spy(*a, **k):
        flips.append(k.get("flip"))
        return real(*a, **k)

    monkeypatch.setattr(standalone, "augment_batch", spy)

    def check(cand):
        return SimpleNamespace(subnet=cand.subnet.model_dump(mode="json"), predicted_latency_ms=cand.predicted_latency_ms,
                               measured_latency_ms=0.5 * budget, within_budget=True)

    for flip in (False, True):
        flips.clear()
        run = run_direct(sp, None, model, tiny_dataset(), budget, deadline=time.perf_counter() + 2.0, supernet_epochs=0.1,
                         device="cpu", progress=False, log=lambda m: None, check=check, reserve_s=lambda s: 0.5, flip=flip)
        assert run.train["iters"] >= 1 and flips and set(flips) == {flip}
        assert run.train["recipe"]["flip"] is flip

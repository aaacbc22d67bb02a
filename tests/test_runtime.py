"""hwnas.runtime: export, sessions, measurement statistics, INT8 quantisation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.errors import UserError
from hwnas.runtime import (
    MeasureProtocol, export_onnx, export_onnx_bytes, fix_input_shape, make_session, measure_latency, ortbench,
    quantize_static_qdq, stats_from_samples,
)

FAST = MeasureProtocol(warmup_runs=2, warmup_s=0.0, min_repeats=9, min_time_s=0.0, rounds=1, max_remeasure=0)


def _net(cout: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 4)).eval()


def test_export_matches_torch_with_dynamic_batch_and_metadata(tmp_path):
    net = _net()
    path = export_onnx(net, torch.randn(1, 3, 10, 10), tmp_path / "m.onnx", metadata={"hwnas.space": "demo"})
    m = onnx.load(str(path))
    assert {p.key: p.value for p in m.metadata_props}["hwnas.space"] == "demo"
    assert [o.name for o in m.graph.output] == ["logits"]
    x = torch.randn(3, 3, 10, 10)  # batch 3 through a graph exported at batch 1
    (y,) = make_session(path).run(None, {"input": x.numpy()})
    np.testing.assert_allclose(y, net(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary behind


def test_fix_input_shape_pins_free_dimensions():
    data = export_onnx_bytes(_net(), torch.randn(1, 3, 10, 10), dynamic_spatial=True)
    dims = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims][2:] == ["height", "width"]
    fixed = onnx.load_from_string(fix_input_shape(data, (1, 3, 6, 6))).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in fixed] == [1, 3, 6, 6]
    # the free-spatial graph runs at another size (what the profiler relies on)
    s = make_session(data, dim_overrides={"batch": 1, "height": 14, "width": 14})
    assert s.run(None, {"input": np.zeros((1, 3, 14, 14), np.float32)})[0].shape == (1, 4)


def test_make_session_rejects_unknown_provider_and_bad_threads():
    data = export_onnx_bytes(_net(), torch.randn(1, 3, 8, 8))
    with pytest.raises(UserError, match="CPUExecutionProvider"):
        make_session(data, provider="NoSuchExecutionProvider")
    with pytest.raises(UserError, match="--threads"):
        make_session(data, threads=0)
    with pytest.raises(UserError, match="no such ONNX file"):
        make_session("/nonexistent/model.onnx")


def test_session_uses_deployment_options():
    s = make_session(export_onnx_bytes(_net(), torch.randn(1, 3, 8, 8)), threads=2)
    o = s.get_session_options()
    assert o.intra_op_num_threads == 2 and o.inter_op_num_threads == 1
    assert str(o.graph_optimization_level).endswith("ORT_ENABLE_ALL")


def test_summary_statistics_are_exact():
    st = stats_from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st.median_ms == 3.0 and st.mean_ms == pytest.approx(22.0)
    assert st.mad_ms == 1.0 and st.repeats == 5
    assert st.p10_ms == pytest.approx(1.4) and st.p90_ms == pytest.approx(61.6)
    assert st.rel_spread == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        stats_from_samples([])


def test_measure_latency_orders_small_and_large_graphs():
    small = make_session(export_onnx_bytes(_net(4), torch.randn(1, 3, 8, 8)))
    big_net = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 64, 64, 3, padding=1) for i in range(4)]).eval()
    big = make_session(export_onnx_bytes(big_net, torch.randn(1, 3, 48, 48), output_name="out"))
    a = measure_latency(small, (1, 3, 8, 8), protocol=FAST)
    b = measure_latency(big, (1, 3, 48, 48), protocol=FAST)
    assert a.repeats >= 9 and a.p10_ms <= a.median_ms <= a.p90_ms
    assert b.median_ms > 5 * a.median_ms


def test_measure_many_interleaves_and_reports_every_job(tmp_path):
    data = export_onnx_bytes(_net(), torch.randn(1, 3, 8, 8))
    jobs = [{"key": f"j{i}", "model": data, "shape": [1, 3, 8, 8], "dim_overrides": {}} for i in range(3)]
    proto = dict(FAST.model_dump(), rounds=3, min_repeats=12)
    res = ortbench.measure_many(jobs, proto, progress=False)
    assert sorted(res) == ["j0", "j1", "j2"]
    assert all(r["repeats"] == 12 for r in res.values())  # 4 timed runs in each of 3 rounds


def test_quantize_static_qdq_produces_close_int8_model(tmp_path):
    net = _net(16)
    f = export_onnx(net, torch.randn(1, 3, 12, 12), tmp_path / "f.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    q = quantize_static_qdq(f, tmp_path / "q.onnx", calib)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = calib[:4]
    yf = make_session(f).run(None, {"input": x})[0]
    yq = make_session(q).run(None, {"input": x})[0]
    assert np.corrcoef(yf.ravel(), yq.ravel())[0, 1] > 0.98
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "q.onnx"]  # no leftovers


def test_quantize_many_in_processes_gives_the_same_graphs_in_order_as_one_process(monkeypatch):
    """INT8 profiles quantise their graphs in parallel processes: the result must not depend on how many,
    and each graph comes back in its own place (graphs of different shapes, so a swap would show); where no
    process pool can start, the same graphs come from this process."""
    import concurrent.futures

    from hwnas.runtime.quantize import quantize_many

    jobs = [(export_onnx_bytes(_net(c), torch.randn(1, 3, r, r)), (1, 3, r, r)) for c, r in ((8, 8), (12, 10), (4, 6))]
    ticks: list[int] = []
    serial = quantize_many(jobs, workers=1)
    parallel = quantize_many(jobs, workers=2, on_done=lambda: ticks.append(1))
    assert parallel == serial and len(ticks) == 3

    def no_pool(*a, **k):
        raise OSError("no semaphores here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    assert quantize_many(jobs, workers=2) == serial
    for (f, shape), q in zip(jobs, parallel):
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load_from_string(q).graph.node}
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        yf, yq = make_session(f).run(None, {"input": x})[0], make_session(q).run(None, {"input": x})[0]
        assert np.corrcoef(yf.ravel(), yq.ravel())[0, 1] > 0.95  # this graph's own quantised twin


class _CountingSession:
    """An InferenceSession that counts how it is called (plain session.run, or run_with_iobinding)."""

    def __init__(self, session):
        self._s, self.runs, self.bound_runs = session, 0, 0

    def run(self, *a, **k):
        self.runs += 1
        return self._s.run(*a, **k)

    def run_with_iobinding(self, *a, **k):
        self.bound_runs += 1
        return self._s.run_with_iobinding(*a, **k)

    def __getattr__(self, name):
        return getattr(self._s, name)


def test_whole_networks_are_timed_as_called_unless_the_protocol_says_io_binding():
    """A timing harness calls session.run with numpy arrays: whole networks are timed that way by default, so
    tables, validation and generate's check measure what a deployment sees; io-binding stays for older tables."""
    data = export_onnx_bytes(_net(), torch.randn(1, 3, 8, 8))
    assert MeasureProtocol().net_call == "session-run"
    called = _CountingSession(make_session(data))
    st = measure_latency(called, (1, 3, 8, 8), protocol=FAST)
    assert called.bound_runs == 0 and called.runs >= FAST.warmup_runs + st.repeats
    bound = _CountingSession(make_session(data))
    st = measure_latency(bound, (1, 3, 8, 8), protocol=FAST.model_copy(update={"net_call": "io-binding"}))
    assert bound.runs == 1 and bound.bound_runs >= FAST.warmup_runs + st.repeats  # one run sizes the outputs
    with pytest.raises(ValueError, match="net_call"):
        ortbench.net_runner(called, {}, "bound")
    with pytest.raises(Exception, match="net_call"):
        MeasureProtocol(net_call="bound")


def test_estimate_keeps_the_fastest_round_or_pools_every_sample():
    rounds = [[1.8, 1.9, 1.8], [1.0, 1.1, 1.0, 1.2], [1.8, 1.7, 1.9]]
    st = ortbench.estimate(rounds, "min-round-median")
    assert st["median_ms"] == pytest.approx(1.05) and st["repeats"] == 10  # the second round's median; every sample counted
    assert st["mad_ms"] == pytest.approx(0.05)  # that round's own dispersion, not the gap between rounds
    assert ortbench.estimate(rounds, "median")["median_ms"] == pytest.approx(1.75)  # pooled: the slow state lasted longer
    assert ortbench.estimate([[], [2.0]], "min-round-median")["median_ms"] == 2.0  # an empty round is no round
    with pytest.raises(ValueError, match="estimator"):
        ortbench.estimate(rounds, "mean")
    with pytest.raises(ValueError, match="no latency samples"):
        ortbench.estimate([[]], "median")


class _SlowHost:
    """A fake clock and a fake model: every call takes 1 ms, or 1.8 ms while the host is slow (calls in
    [slow_from, slow_to)), like a shared VM whose neighbour takes the core for a while."""

    def __init__(self, slow_from: int, slow_to: int) -> None:
        self.ns, self.calls, self.slow = 0, 0, range(slow_from, slow_to)

    def run(self) -> None:
        self.ns += 1_800_000 if self.calls in self.slow else 1_000_000
        self.calls += 1

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


def test_a_host_slowed_for_most_of_the_time_does_not_move_the_measurement(monkeypatch):
    """The host slows every call by 1.8x for the first two thirds of the measurement: the pooled median reads the
    slow speed, the default estimator the machine's own (the fastest round's median), in the profiler's interleaved
    rounds and for a model timed on its own."""
    import types

    def with_host(host: _SlowHost) -> None:
        monkeypatch.setattr(ortbench, "time", types.SimpleNamespace(perf_counter_ns=host.perf_counter_ns,
                                                                     perf_counter=host.perf_counter))
        monkeypatch.setattr(ortbench, "make_session", lambda *a, **k: None)
        monkeypatch.setattr(ortbench, "random_feed", lambda *a, **k: {})
        monkeypatch.setattr(ortbench, "net_runner", lambda s, f, call: host.run)

    jobs = [{"key": f"j{i}", "model": b"", "shape": [1, 3, 8, 8]} for i in range(2)]
    proto = dict(MeasureProtocol().model_dump(), warmup_runs=0, warmup_s=0.0, revisit_warmup_runs=0, min_time_s=0.0,
                 min_repeats=60, rounds=6, max_remeasure=0)
    # 2 jobs x 6 rounds x 10 runs = 120 calls; the first 80 are slow
    with_host(_SlowHost(0, 80))
    new = ortbench.measure_many(jobs, proto, progress=False)
    assert all(r["median_ms"] == pytest.approx(1.0) and r["repeats"] == 60 for r in new.values())
    with_host(_SlowHost(0, 80))
    old = ortbench.measure_many(jobs, dict(proto, estimator="median"), progress=False)
    assert all(r["median_ms"] == pytest.approx(1.8) for r in old.values())
    # one model on its own: the rounds are spread over min_span_s (here 60 ms: 10 ms each), the first 40 calls slow
    host = _SlowHost(0, 40)
    with_host(host)
    monkeypatch.setattr(ortbench, "random_feed", lambda *a, **k: {})
    st = measure_latency(None, (1, 3, 8, 8), protocol=MeasureProtocol.model_validate(dict(proto, min_span_s=0.06)))
    assert st.median_ms == pytest.approx(1.0) and host.calls >= 60
    host = _SlowHost(0, 40)
    with_host(host)
    st = measure_latency(None, (1, 3, 8, 8), protocol=MeasureProtocol.model_validate(dict(proto, min_span_s=0.06, estimator="median")))
    assert st.median_ms == pytest.approx(1.8)

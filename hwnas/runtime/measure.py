"""ONNX Runtime sessions and latency measurement: one protocol for blocks, subnets and shipped models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hwnas.errors import UserError
from hwnas.runtime import ortbench

if TYPE_CHECKING:  # heavy imports stay lazy: `hwnas latency predict` must not need torch
    import onnxruntime


class MeasureProtocol(BaseModel):
    """How one latency is measured (mirrors `ortbench.DEFAULT_PROTOCOL`, the standalone runner's).

    Warm-up, then timed runs until both a minimum count and a minimum time are reached (capped),
    so fast graphs get many samples and slow ones enough; several interleaved rounds; noisy
    entries re-measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_runs: int = Field(default=ortbench.DEFAULT_PROTOCOL["warmup_runs"], ge=0)
    warmup_s: float = Field(default=ortbench.DEFAULT_PROTOCOL["warmup_s"], ge=0.0)
    revisit_warmup_runs: int = Field(default=ortbench.DEFAULT_PROTOCOL["revisit_warmup_runs"], ge=0)
    min_repeats: int = Field(default=ortbench.DEFAULT_PROTOCOL["min_repeats"], ge=3)
    max_repeats: int = Field(default=ortbench.DEFAULT_PROTOCOL["max_repeats"], ge=3)
    min_time_s: float = Field(default=ortbench.DEFAULT_PROTOCOL["min_time_s"], ge=0.0)
    rounds: int = Field(default=ortbench.DEFAULT_PROTOCOL["rounds"], ge=1)
    noisy_rel_mad: float = Field(default=ortbench.DEFAULT_PROTOCOL["noisy_rel_mad"], gt=0.0)
    max_remeasure: int = Field(default=ortbench.DEFAULT_PROTOCOL["max_remeasure"], ge=0)
    estimator: Literal["min-round-median", "median"] = Field(
        default=ortbench.DEFAULT_PROTOCOL["estimator"],
        description="one latency from a graph's rounds: min-round-median (the lowest of the rounds' medians: a host "
        "that slows down for part of the time does not move it) or median (all samples pooled; tables profiled "
        "before 2026-12-03, which is what a file without this key means)")
    min_span_s: float = Field(
        default=ortbench.DEFAULT_PROTOCOL["min_span_s"], ge=0.0,
        description="a graph timed on its own (a delivered model, a candidate) spreads its rounds over at least this "
        "many seconds, so they see the machine at different moments")
    net_call: Literal["session-run", "io-binding"] = Field(
        default=ortbench.DEFAULT_PROTOCOL["net_call"],
        description="how a whole network is called while timed: session-run (numpy in and out, as an application "
        "calls it; what a timing harness sees) or io-binding (pre-bound buffers, a few microseconds less; the "
        "whole-network protocol of tables profiled before 2026-12-02, which is what a file without this key means)")


LEGACY_PROTOCOL: dict[str, Any] = {"net_call": "io-binding", "estimator": "median", "min_span_s": 0.0}
"""What a stored protocol without one of these keys measured: each key came after tables had been written
(net_call on 2026-12-02; estimator and min_span_s on 2026-12-03)."""


def legacy_protocol(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored protocol (a table's, a bundle runner's) with every missing later key set to what was done before it."""
    return {**LEGACY_PROTOCOL, **stored}


class LatencyStats(BaseModel):
    """Summary of timed runs in milliseconds: the median is what tables and reports use."""

    model_config = ConfigDict(extra="forbid")

    median_ms: float = Field(ge=0.0)
    mean_ms: float = Field(ge=0.0)
    p10_ms: float = Field(ge=0.0)
    p90_ms: float = Field(ge=0.0)
    mad_ms: float = Field(ge=0.0, description="median absolute deviation")
    repeats: int = Field(ge=1)

    @property
    def rel_spread(self) -> float:
        """MAD / median: the dispersion that flags a noisy measurement."""
        return self.mad_ms / self.median_ms if self.median_ms > 0 else 0.0


def stats_from_samples(samples_ms: np.ndarray | list[float]) -> LatencyStats:
    if len(samples_ms) == 0:
        raise ValueError("no latency samples")
    return LatencyStats.model_validate(ortbench.summarize(samples_ms))


# ---------------------------------------------------------------- export


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def make_session(
    model: str | Path | bytes,
    *,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    dim_overrides: dict[str, int] | None = None,
) -> "onnxruntime.InferenceSession":
    """An InferenceSession with deployment options: ORT_ENABLE_ALL, `threads` intra-op threads, one
    inter-op thread, sequential execution (`dim_overrides` pins named free dimensions)."""
    check_target(threads, provider)
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise UserError(f"{p}: no such ONNX file")
        model = str(p)
    return ortbench.make_session(model, threads, provider, dim_overrides)


def check_target(threads: int, provider: str) -> None:
    """UserError for a thread count or execution provider this machine cannot use."""
    if threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    avail = available_providers()
    if provider not in avail:
        raise UserError(f"--provider: '{provider}' is not available in this onnxruntime build; available: {', '.join(avail)}")


def measure_latency(
    session: "onnxruntime.InferenceSession", input_shape: tuple[int, ...], *, protocol: MeasureProtocol | None = None
) -> LatencyStats:
    """Latency (ms) of `session` on a random input of `input_shape`, with dispersion.

    With the min-round-median estimator the protocol's rounds run one after another, each at least
    `min_span_s / rounds` long, and the fastest round's median counts (`ortbench.estimate`); a noisy
    one gets one more round. With "median" (older tables) all samples are pooled and a noisy result
    is re-measured, the least dispersed measurement kept. The network is called as the protocol's
    `net_call` says (by default as an application calls it)."""
    p = (protocol or MeasureProtocol()).model_dump()
    fn = ortbench.net_runner(session, ortbench.random_feed(session, input_shape), p["net_call"])
    ortbench.warm_up(fn, p["warmup_runs"], p["warmup_s"])
    if p["estimator"] == "median":
        best: dict[str, Any] | None = None
        for _ in range(p["max_remeasure"] + 1):
            st = ortbench.summarize(ortbench.time_runs(fn, p["min_repeats"], p["min_time_s"], p["max_repeats"]))
            if best is None or ortbench.rel_spread(st) < ortbench.rel_spread(best):
                best = st
            if ortbench.rel_spread(st) <= p["noisy_rel_mad"]:
                break
        assert best is not None
        return LatencyStats.model_validate(best)
    n = max(1, p["rounds"])
    per_rep = max(3, -(-p["min_repeats"] // n))
    per_time = max(p["min_time_s"], p["min_span_s"]) / n
    rounds = [ortbench.time_runs(fn, per_rep, per_time, max(per_rep, p["max_repeats"] // n)) for _ in range(n)]
    st = ortbench.estimate(rounds, p["estimator"])
    for _ in range(p["max_remeasure"]):
        if ortbench.rel_spread(st) <= p["noisy_rel_mad"]:
            break
        rounds.append(ortbench.time_runs(fn, per_rep, per_time, max(per_rep, p["max_repeats"] // n)))
        st = ortbench.estimate(rounds, p["estimator"])
    return LatencyStats.model_validate(st)


# ---------------------------------------------------------------- quantisation

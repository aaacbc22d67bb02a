"""`hwnas latency validate`: the predictor against fresh whole-subnet measurements.

Two sets are measured. Uniform random subnets show the predictor over the space. A "front" set shows
it where the search looks: half from the fastest decile of the space by MACs, half spread along the
front of (predicted latency, MACs) of a random pool, which is where a searched Pareto front lies (most
MACs per millisecond). Random subnets alone miss the fast end, where errors were largest.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import UserError
from hwnas.latency.pieces import mixed_pool, sample_subnets, spread_evenly
from hwnas.latency.model import LatencyModel, latency_model
from hwnas.latency.profile import calibration_set, export_subnet
from hwnas.latency.table import LatencyTable
from hwnas.runtime import MeasureProtocol, check_target, ortbench
from hwnas.space import Encoding, Space, Subnet
from hwnas.space.cost import macs

FRONT_POOL_PER_SUBNET = 40
"""Pool subnets drawn per front subnet picked (at least 400)."""
REFERENCE_SUBNETS = 8
"""The table's own calibration subnets timed again within validation's passes: their time now against the
time the profiler recorded says how far the machine has drifted since the table was made. On a 2-core VM
whole-network timings moved up to 9% between passes a minute apart (BENCHMARKS.md, issue 10), more than
the run-to-run noise floor shows; without this, that drift reads as predictor error."""
DRIFT_WARN_PCT = 3.0


def random_subnets(space: Space, n: int, seed: int, resolutions: list[int], exclude: set[str]) -> list[Subnet]:
    """`n` distinct uniform random subnets whose keys are not in `exclude`."""
    subs: list[Subnet] = []
    seen = set(exclude)
    s = seed
    while len(subs) < n:
        for sub in sample_subnets(space, n, s, resolutions):
            if sub.key() not in seen and len(subs) < n:
                seen.add(sub.key())
                subs.append(sub)
        s += 7_777_777
    return subs


def pareto_front(latency: np.ndarray, size: np.ndarray) -> list[int]:
    """Indices not dominated in (lower latency, larger size), fastest first."""
    front, best = [], -np.inf
    for i in np.lexsort((-size, latency)):  # by latency, ties: largest first
        if size[i] > best:
            front.append(int(i))
            best = size[i]
    return front


def front_pool(space: Space, pred: LatencyModel, n: int, seed: int, exclude: set[str]) -> list[Subnet]:
    """The distinct random subnets (not in `exclude`) that `front_subnets` picks from."""
    rng = np.random.default_rng([seed, 31_337])
    return mixed_pool(space, rng, max(FRONT_POOL_PER_SUBNET * n, 400), resolutions=pred.resolutions, exclude=exclude)


def front_subnets(space: Space, pred: LatencyModel, n: int, seed: int, exclude: set[str]) -> list[Subnet]:
    """`n` distinct subnets where the search looks (see the module docstring), none in `exclude`.

    The pool mixes uniform draws with draws leaning to small or large choices, so that both the
    fast end and the top of the MACs range are present."""
    subs = front_pool(space, pred, n, seed, exclude)
    if len(subs) < n:
        raise UserError(f"--samples: the space has too few distinct subnets for a front set of {n}")
    size = np.array([macs(space, s) for s in subs], dtype=np.float64)
    lat = pred.predict_genomes(np.stack([Encoding(space).encode(s) for s in subs]))
    by_macs = [int(i) for i in np.argsort(size, kind="stable")]
    fastest = by_macs[: max(len(subs) // 10, n)]
    picked = spread_evenly(fastest, n // 2)
    rest = [i for i in pareto_front(lat, size) if i not in set(picked)]
    picked += spread_evenly(rest, n - len(picked))
    for i in fastest + by_macs:  # a short front: fill from the fast end
        if len(picked) >= n:
            break
        if i not in picked:
            picked.append(i)
    return [subs[i] for i in picked]


def _errors(p: np.ndarray, a: np.ndarray, prefix: str) -> dict[str, float]:
    from scipy.stats import kendalltau

    err = (p - a) / a
    return {
        f"{prefix}within_5pct": float(np.mean(np.abs(err) <= 0.05)),
        f"{prefix}within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        f"{prefix}kendall_tau": float(kendalltau(p, a).statistic) if len(a) > 1 else float("nan"),
        f"{prefix}rmse_ms": float(np.sqrt(np.mean((p - a) ** 2))),
        f"{prefix}mape": float(np.mean(np.abs(err)) * 100),
        f"{prefix}median_abs_err_pct": float(np.median(np.abs(err)) * 100),
        f"{prefix}bias_pct": float(np.mean(err) * 100),
        f"{prefix}measured_ms_min": float(a.min()),
        f"{prefix}measured_ms_max": float(a.max()),
    }


def validate_table(
    table: LatencyTable,
    samples: int,
    *,
    seed: int = 0,
    progress: bool = True,
    space: Space | None = None,
    protocol: MeasureProtocol | None = None,
    front: int | None = None,
) -> dict[str, Any]:
    """Export `samples` fresh random subnets and `front` (default `samples`) front subnets, never the
    calibration ones; measure each twice, in two separate runs. The predictor is compared with the
    first run; the second gives the noise floor."""
    if samples < 2:
        raise UserError(f"--samples: need at least 2, got {samples}")
    space = space or table.get_space()
    pred = latency_model(table, space)
    fp = table.fingerprint
    check_target(fp.threads, fp.provider)
    cal = {s.key() for s in calibration_subnets(table, space)}
    rand = random_subnets(space, samples, seed, pred.resolutions, cal)
    fr = front_subnets(space, pred, samples if front is None else front, seed, cal | {s.key() for s in rand})
    subs = rand + fr
    refs = reference_subnets(table, space)
    t0 = time.time()
    proto = (protocol or table.protocol).model_dump()
    with tempfile.TemporaryDirectory(prefix="hwnas-validate-") as d:
        # the reference networks are timed in the same passes as the subnets, so both see the same machine
        keyed = [(str(i), sub) for i, sub in enumerate(subs)] + [(f"ref{i}", sub) for i, (sub, _) in enumerate(refs)]
        jobs = export_jobs(space, keyed, Path(d), int8=table.int8, bar=ortbench.Progress(len(keyed), "exporting", enabled=progress))
        run_a = ortbench.measure_many(jobs, proto, fp.threads, fp.provider, progress, label="measuring (run 1/2)", chunk=16)
        run_b = ortbench.measure_many(jobs, proto, fp.threads, fp.provider, progress, label="measuring (run 2/2)", chunk=16)
    a = np.array([run_a[str(i)]["median_ms"] for i in range(len(subs))])
    b = np.array([run_b[str(i)]["median_ms"] for i in range(len(subs))])
    p = pred.predict_genomes(np.stack([Encoding(space).encode(s) for s in subs]))
    noise = np.abs(a - b) / ((a + b) / 2)
    n = len(rand)
    drift = machine_drift_pct([(run_a[f"ref{i}"]["median_ms"], run_b[f"ref{i}"]["median_ms"], rec) for i, (_, rec) in enumerate(refs)])
    return {
        "samples": n,
        **_errors(p[:n], a[:n], ""),
        "front_samples": len(fr),
        **_errors(p[n:], a[n:], "front_"),
        "noise_floor_pct": float(np.median(noise) * 100),
        "noise_floor_p90_pct": float(np.percentile(noise, 90) * 100),
        "reference_subnets": len(refs),
        "machine_drift_pct": drift,
        "threads": fp.threads,
        "provider": fp.provider,
        "int8": table.int8,
        "seed": seed,
        "seconds": round(time.time() - t0, 2),
        "_predicted": p[:n].tolist(),
        "_measured": a[:n].tolist(),
        "_measured_again": b[:n].tolist(),
        "_front_predicted": p[n:].tolist(),
        "_front_measured": a[n:].tolist(),
        "_front_measured_again": b[n:].tolist(),
        "_subnets": [sub.model_dump(mode="json") for sub in subs],
    }


def export_jobs(space: Space, keyed: list[tuple[str, Subnet]], folder: Path, *, int8: bool,
                bar: Any = None) -> list[dict[str, Any]]:
    """Export each (key, subnet) as deployed to FOLDER/key.onnx: the measurement jobs `ortbench.measure_many` takes."""
    jobs = []
    for key, sub in keyed:
        f = folder / f"{key}.onnx"
        f.write_bytes(export_subnet(space, sub, int8=int8))
        jobs.append({"key": key, "model": str(f), "shape": [1, space.in_channels, sub.resolution, sub.resolution], "dim_overrides": {}})
        if bar is not None:
            bar.update()
    return jobs


def calibration_subnets(table: LatencyTable, space: Space) -> list[Subnet]:
    """The subnets the table's calibration was fitted on: stored with the points by the current
    profiler; for older tables, as `calibration_set` draws them now (it may draw others than then)."""
    pts = table.calibration.points
    if all(p.subnet is not None for p in pts):
        return [space.validate_subnet(p.subnet) for p in pts]
    return calibration_set(space, sum(p.source == "profile" for p in pts), table.resolutions)


def reference_subnets(table: LatencyTable, space: Space, n: int = REFERENCE_SUBNETS) -> list[tuple[Subnet, float]]:
    """Up to `n` of the table's own calibration subnets (spread over them), with the time the profiler
    recorded for each (fed-back points are not among them). Only tables that store their subnets have
    them: a re-drawn subnet that is not the one measured would read as drift."""
    profiled = [p for p in table.calibration.points if p.source == "profile" and p.subnet is not None]
    if not profiled:
        return []
    pick = np.unique(np.linspace(0, len(profiled) - 1, min(n, len(profiled))).round().astype(int))
    return [(space.validate_subnet(profiled[i].subnet), profiled[i].measured_ms) for i in pick]


def drift_now(table: LatencyTable, space: Space | None = None, *, n: int = REFERENCE_SUBNETS, progress: bool = False) -> float | None:
    """How much slower (+) or faster (-) this machine runs the table's own reference subnets now than when the table
    was profiled, in percent (one more timing of each); None when the table stores none. generate asks after a
    measured miss: a long training can leave the machine slower than it was (seen: +10% on a 2-core VM after 45
    minutes), and the user should know whether the model or the machine missed the budget."""
    space = space or table.get_space()  # the networks exactly as profiled (its classes, not the data's)
    refs = reference_subnets(table, space, n)
    if not refs:
        return None
    fp = table.fingerprint
    with tempfile.TemporaryDirectory(prefix="hwnas-drift-") as d:
        jobs = export_jobs(space, [(f"ref{i}", sub) for i, (sub, _) in enumerate(refs)], Path(d), int8=table.int8)
        run = ortbench.measure_many(jobs, table.protocol.model_dump(), fp.threads, fp.provider, progress,
                                    label="re-timing reference subnets", chunk=16)
    return machine_drift_pct([(run[f"ref{i}"]["median_ms"], run[f"ref{i}"]["median_ms"], rec) for i, (_, rec) in enumerate(refs)])


def machine_drift_pct(times: list[tuple[float, float, float]]) -> float | None:
    """Median of (now / recorded - 1) in percent over the reference networks, `now` being the mean of
    validation's two runs; None without references. Positive: the machine runs the table's own networks
    slower now than when it was profiled."""
    if not times:
        return None
    return float(np.median([((a + b) / 2) / rec - 1 for a, b, rec in times]) * 100)

"""Delivered models' measured latencies fed back into a table's calibration.

`generate` measures every candidate it exports with the deployment protocol: whole networks, at
the budget people actually use, on this machine. Those are the best calibration points there
are, so the table generate profiled for itself learns from them and the next search around that
budget predicts better. The profiler's own points always stay; fed-back points are capped (the
newest kept, a re-measured subnet replacing its older point) so a long-lived cache does not drift
towards one corner of the space; and a refit that would fit the profiler's points clearly worse
is refused (measurements taken on a busy machine disagree with the profile; they are not kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwnas.latency.predictor import LatencyPredictor, fit_calibration
from hwnas.latency.table import Calibration, CalibrationPoint, LatencyTable
from hwnas.space import Space, Subnet

MAX_DELIVERED_POINTS = 24
"""Fed-back points kept in a table (the profiler's 80 stay the majority)."""
PROFILE_FIT_GUARD = 0.02
"""A refit may fit the profiler's own points at most this much worse (mean |error| / measured)."""


@dataclass(frozen=True)
class Feedback:
    """The outcome: `table` is the refitted table, or None when nothing was kept (`reason` says why)."""

    table: LatencyTable | None
    added: int
    error_before: float
    """Mean |predicted - measured| / measured of the old calibration on the new measurements."""
    error_after: float
    reason: str = ""


def _mape(cal: Calibration, points: Sequence[CalibrationPoint]) -> float:
    if not points:
        return 0.0
    m = np.array([p.measured_ms for p in points])
    return float(np.mean(np.abs(np.array(cal.apply(list(points))) - m) / m))


def feed_back(table: LatencyTable, space: Space, measured: Sequence[tuple[Subnet, float]]) -> Feedback:
    """`table` with these whole-subnet measurements (subnet, ms) added to its calibration points and the
    calibration refitted; subnets at resolutions the table lacks are skipped."""
    pred = LatencyPredictor(table, space)
    fresh: dict[str, CalibrationPoint] = {}
    for sub, ms in measured:
        if sub.resolution in pred.resolutions and ms > 0:
            pt = pred.calibration_point(sub, ms)
            fresh[_key(pt)] = pt  # the latest measurement of a subnet counts
    old = table.calibration
    if not fresh:
        return Feedback(None, 0, 0.0, 0.0, "no measurement at a resolution the table covers")
    new_pts = list(fresh.values())
    profile_pts = [p for p in old.points if p.source == "profile"]
    kept = [p for p in old.points if p.source != "profile" and _key(p) not in fresh]
    delivered = (kept + new_pts)[-MAX_DELIVERED_POINTS:]
    cal = fit_calibration(profile_pts + delivered)
    before, after = _mape(old, new_pts), _mape(cal, new_pts)
    if profile_pts and _mape(cal, profile_pts) > _mape(old, profile_pts) + PROFILE_FIT_GUARD:
        return Feedback(None, 0, before, after,
                        f"the measurements disagree with the profile (refitting would fit the profiler's own subnets "
                        f"{100 * _mape(cal, profile_pts):.1f}% off instead of {100 * _mape(old, profile_pts):.1f}%): "
                        "measured on a busier machine than the table?")
    out = LatencyTable.model_validate({**table.model_dump(mode="json"), "calibration": cal.model_dump(mode="json")})
    return Feedback(out, len(new_pts), before, after)


def _key(p: CalibrationPoint) -> str:
    import json

    return json.dumps(p.subnet, sort_keys=True)

"""Latency prediction from a TABLE: sum of piece entries, corrected by the fitted calibration."""

from __future__ import annotations

import numpy as np

from hwnas.errors import UserError
from hwnas.latency.pieces import net_keys, net_mparams, piece_mparams, slot_keys
from hwnas.latency.table import Calibration, CalibrationPoint, LatencyTable, check_table_space
from hwnas.space import Encoding, Space, Subnet, build_plan, with_classes


def _lstsq_rel(F: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Least squares on relative error: minimise sum(((F @ c) - m) / m)^2."""
    coef, *_ = np.linalg.lstsq(F / m[:, None], np.ones_like(m), rcond=None)
    return coef


def _loo_mape(F: np.ndarray, m: np.ndarray) -> float:
    errs = []
    for i in range(len(m)):
        keep = np.arange(len(m)) != i
        c = _lstsq_rel(F[keep], m[keep])
        errs.append(abs(F[i] @ c - m[i]) / m[i])
    return float(np.mean(errs))


RES_TERMS_MIN_POINTS = 6
"""Whole subnets needed at every resolution before a term per resolution is a candidate."""


MIN_CALIBRATION_POINTS = 3
"""Whole-subnet measurements a calibration needs at least (a profile's calibration subnets likewise)."""


def fit_calibration(points: list[CalibrationPoint]) -> Calibration:
    """Fit the calibration on whole subnets measured end to end.

    Candidate forms: measured ~ a*cold_sum | b*hot_sum | both, + offset + per_piece*pieces, each
    with or without + per_mparam*mparams, and each also with the scale of the cold sum and the
    offset varying per resolution (form linear-res-v1: a piece's cost inside a network depends on
    the feature-map sizes, and the fixed cost of a run on the input size; measured on mbv3-imagenet,
    the single form erred most at the small resolutions). Least squares on relative error (small
    networks, where fixed overheads matter most, count as much as large ones: the search cares
    about percentages around a budget). The form with the lowest leave-one-out error wins, so an
    extra term is only used when it predicts unseen subnets better."""
    if len(points) < MIN_CALIBRATION_POINTS:
        raise UserError(f"calibration needs at least {MIN_CALIBRATION_POINTS} whole-subnet measurements, got {len(points)}")
    n = len(points)
    res = np.array([p.resolution for p in points])
    cols = {
        "scale": np.array([p.pieces_sum_ms for p in points]),
        "scale_hot": np.array([p.pieces_hot_sum_ms for p in points]),
        "offset": np.ones(n),
        "per_piece": np.array([p.pieces for p in points], dtype=np.float64),
        "per_mparam": np.array([p.mparams for p in points], dtype=np.float64),
    }
    levels = sorted(set(res.tolist()))
    by_res = len(levels) > 1 and all(np.sum(res == r) >= RES_TERMS_MIN_POINTS for r in levels)
    for r in levels[1:] if by_res else []:  # deltas against the smallest resolution
        cols[f"scale@{r}"] = cols["scale"] * (res == r)
        cols[f"offset@{r}"] = (res == r).astype(np.float64)
    res_cols = [f"{k}@{r}" for r in levels[1:] for k in ("scale", "offset")] if by_res else []
    m = np.array([p.measured_ms for p in points])
    common = ["offset"] + (["per_piece"] if np.ptp(cols["per_piece"]) > 0 and n >= 5 else [])
    bases = [["scale"]]
    if np.all(cols["scale_hot"] > 0):
        bases += [["scale_hot"], ["scale", "scale_hot"]]
    extras = [[]] + ([["per_mparam"]] if np.ptp(cols["per_mparam"]) > 0 and n >= 8 else [])
    best: tuple[float, dict[str, float]] | None = None
    for base in bases:
        for extra in extras:
            for per_res in ([[]] + ([res_cols] if res_cols and "scale" in base else [])):
                names = base + common + extra + per_res
                if n <= len(names) + 1:
                    continue
                F = np.stack([cols[k] for k in names], axis=1)
                coef = dict(zip(names, _lstsq_rel(F, m)))
                scales = [coef.get("scale", 0.0) + coef.get(f"scale@{r}", 0.0) for r in levels] if "scale" in base else []
                if any(coef[k] < 0 for k in base) or any(v < 0 for v in scales):
                    continue
                loo = _loo_mape(F, m)
                if best is None or loo < best[0]:
                    best = (loo, coef)
    if best is None:  # too few or degenerate points: a pure ratio
        best = (0.0, {"scale": float(np.median(m / cols["scale"]))})
    loo, coef = best
    get = lambda k: float(coef.get(k, 0.0))  # noqa: E731
    pred = sum(get(k) * cols[k] for k in cols)
    err = (pred - m) / m
    res_scale = {r: get(f"scale@{r}") for r in levels[1:] if f"scale@{r}" in coef}
    res_offset = {r: get(f"offset@{r}") for r in levels[1:] if f"offset@{r}" in coef}
    return Calibration(
        form="linear-res-v1" if res_scale else "linear-v1",
        scale=get("scale"), scale_hot=get("scale_hot"), offset_ms=get("offset"), per_piece_ms=get("per_piece"),
        per_mparam_ms=get("per_mparam"), res_scale=res_scale, res_offset_ms=res_offset, loo_mape=loo,
        fit_mape=float(np.mean(np.abs(err))), fit_max_abs_pct=float(np.max(np.abs(err)) * 100),
        raw_sum_bias_pct=float(np.mean((cols["scale"] - m) / m) * 100), points=list(points),
    )


class LatencyPredictor:
    """Predicts the whole-network latency (ms) of any subnet of `space` on the table's target.

    Lookups are arranged like the genome (per stage: first/later block x kernel x expand), so a
    population of genomes is predicted with a few vectorised gathers."""

    def __init__(self, table: LatencyTable, space: Space):
        check_table_space(table, space)
        self.table, self.space = table, space
        self.encoding = Encoding(space)
        self._resolutions = [r for r in space.resolutions if r in table.resolutions]
        if not self._resolutions:
            raise UserError(f"table resolutions {table.resolutions} share none with space '{space.name}' ({space.resolutions})")
        self._cal = table.calibration
        self._scale_t = np.array([self._cal.scale_at(r) for r in self._resolutions])
        self._offset_t = np.array([self._cal.offset_at(r) for r in self._resolutions])
        self._nfix = 1 if space.first_block is not None else 0
        # the head is keyed by the class count; a table profiled with another class count still
        # serves (only the final classifier differs) by using its own head entry
        head_space = space if self._has_head(space) else with_classes(space, table.num_classes)
        R = len(self._resolutions)
        self._res_map = np.full(len(space.resolutions), -1, dtype=np.int64)
        for t, r in enumerate(self._resolutions):
            self._res_map[space.resolutions.index(r)] = t
        self._base = np.zeros(R)
        self._base_mp = np.zeros(R)
        self._stage = [np.zeros((R, 2, len(s.kernels), len(s.expands))) for s in space.stages]
        self._stage_hot = [np.zeros((R, 2, len(s.kernels), len(s.expands))) for s in space.stages]
        self._base_hot = np.zeros(R)
        self._stage_mp = [np.zeros((R, 2, len(s.kernels), len(s.expands))) for s in space.stages]
        for t, r in enumerate(self._resolutions):
            sk = slot_keys(space, r)
            hs = slot_keys(head_space, r) if head_space is not space else sk
            hk = hs.head
            self._base[t] = self._get(sk.stem) + self._get(hk) + (self._get(sk.fixed) if sk.fixed else 0.0)
            self._base_hot[t] = self._hot(sk.stem) + self._hot(hk) + (self._hot(sk.fixed) if sk.fixed else 0.0)
            self._base_mp[t] = sum(piece_mparams(sk.plans[k]) for k in (sk.stem, sk.fixed) if k) + piece_mparams(hs.plans[hk])
            for i, (first, later) in enumerate(sk.stages):
                for pos, rows in enumerate((first, later)):
                    if rows is None:
                        continue
                    for ki, row in enumerate(rows):
                        for ei, key in enumerate(row):
                            self._stage[i][t, pos, ki, ei] = self._get(key)
                            self._stage_hot[i][t, pos, ki, ei] = self._hot(key)
                            self._stage_mp[i][t, pos, ki, ei] = piece_mparams(sk.plans[key])
        self._head_space = head_space

    def _has_head(self, space: Space) -> bool:
        return slot_keys(space, self._resolutions[0]).head in self.table.entries

    def _get(self, key: str) -> float:
        e = self.table.entries.get(key)
        if e is None:
            raise UserError(f"table: entries: no entry for '{key}' (the table is damaged or incomplete; profile again)")
        return e.median_ms

    def _hot(self, key: str) -> float:
        if self._cal.scale_hot == 0:
            return 0.0
        e = self.table.entries.get(key)
        if e is None or e.hot_median_ms is None:
            raise UserError(f"table: entries: '{key}' has no hot_median_ms, which the calibration uses (damaged table; profile again)")
        return e.hot_median_ms

    @property
    def resolutions(self) -> list[int]:
        return list(self._resolutions)

    def _calibrate(self, t: np.ndarray, raw: np.ndarray, hot: np.ndarray, pieces: np.ndarray, mparams: np.ndarray) -> np.ndarray:
        """The calibration's linear form, `t` indexing the table's resolutions."""
        c = self._cal
        return self._scale_t[t] * raw + c.scale_hot * hot + self._offset_t[t] + c.per_piece_ms * pieces + c.per_mparam_ms * mparams

    def raw_sum(self, subnet: Subnet) -> tuple[float, int]:
        """(sum of piece entries, number of pieces) for one subnet: the calibration's main inputs."""
        keys = self._keys(subnet)
        return float(sum(self._get(k) for k in keys)), len(keys)

    def _keys(self, subnet: Subnet) -> list[str]:
        sub = self.space.validate_subnet(subnet)
        if sub.resolution not in self._resolutions:
            raise UserError(f"subnet.resolution: {sub.resolution} is not covered by the table (resolutions {self._resolutions})")
        return net_keys(build_plan(self._head_space, sub))

    def calibration_point(self, subnet: Subnet, measured_ms: float, source: str = "delivered") -> CalibrationPoint:
        """A whole-subnet measurement as the calibration sees it (its piece sums next to the measured time),
        computed the way the profiler computes its own points."""
        sub = self.space.validate_subnet(subnet)
        keys = self._keys(sub)
        entries = [self.table.entries[k] for k in keys]
        hot = sum(e.hot_median_ms or 0.0 for e in entries) if all(e.hot_median_ms for e in entries) else 0.0
        return CalibrationPoint(resolution=sub.resolution, pieces=len(keys), pieces_sum_ms=sum(e.median_ms for e in entries),
                                pieces_hot_sum_ms=hot, mparams=net_mparams(build_plan(self._head_space, sub)),
                                measured_ms=float(measured_ms), source=source,
                                subnet=sub.model_dump(mode="json"))

    def predict(self, subnet: Subnet) -> float:
        """Predicted latency (ms) of one subnet."""
        keys = self._keys(subnet)
        raw = sum(self._get(k) for k in keys)
        hot = sum(self._hot(k) for k in keys)
        sub = self.space.validate_subnet(subnet)
        mp = net_mparams(build_plan(self._head_space, sub))
        t = np.array([self._resolutions.index(sub.resolution)])
        return float(self._calibrate(t, np.array([raw]), np.array([hot]), np.array([len(keys)]), np.array([mp]))[0])

    def predict_genomes(self, X: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each genome row of `X` ([n, Encoding(space).length] ints)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.int64))
        enc = self.encoding
        if X.shape[1] != enc.length:
            raise ValueError(f"genomes must have {enc.length} genes, got {X.shape[1]}")
        if (X < 0).any() or (X > enc.upper()).any():
            raise ValueError("a genome has a gene outside its choice range")
        t = self._res_map[X[:, 0]]
        if (t < 0).any():
            bad = sorted({self.space.resolutions[i] for i in X[t < 0, 0]})
            raise UserError(f"resolutions {bad} are not covered by the table (it has {self._resolutions})")
        raw = self._base[t].copy()
        hot = self._base_hot[t].copy()
        mp = self._base_mp[t].copy()
        pieces = np.full(len(X), 2 + self._nfix, dtype=np.float64)
        for i, s in enumerate(self.space.stages):
            depth = np.asarray(s.depths)[X[:, 1 + i]]
            pieces += depth
            sl = enc.block_slice(i)
            T, H, P = self._stage[i], self._stage_hot[i], self._stage_mp[i]
            for j in range(s.max_depth):
                k = X[:, sl.start + 2 * j]
                e = X[:, sl.start + 2 * j + 1]
                on = depth > j
                raw += np.where(on, T[t, min(j, 1), k, e], 0.0)
                hot += np.where(on, H[t, min(j, 1), k, e], 0.0)
                mp += np.where(on, P[t, min(j, 1), k, e], 0.0)
        return self._calibrate(t, raw, hot, pieces, mp)

    def min_latency_ms(self) -> float:
        """The exact minimum predicted latency over the covered space.

        Given the resolution and the depths, every block slot contributes independently
        (the resolution's scale*entry + scale_hot*hot entry + per_mparam*params + per_piece), so each slot takes its cheapest choice and each stage its
        cheapest depth; the minimum over resolutions is then exact."""
        c = self._cal
        best = np.inf
        for t in range(len(self._resolutions)):
            scale = self._scale_t[t]
            total = scale * self._base[t] + c.scale_hot * self._base_hot[t] + c.per_mparam_ms * self._base_mp[t] + self._offset_t[t] + c.per_piece_ms * (2 + self._nfix)
            for i, s in enumerate(self.space.stages):
                cost = scale * self._stage[i][t] + c.scale_hot * self._stage_hot[i][t] + c.per_mparam_ms * self._stage_mp[i][t] + c.per_piece_ms
                first = cost[0].min()
                later = cost[1].min() if s.max_depth > 1 else 0.0
                total += min(first + (d - 1) * later for d in s.depths)
            best = min(best, float(total))
        return best

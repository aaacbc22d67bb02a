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


def fit_calibration(points: list[CalibrationPoint]) -> Calibration:
    """Fit measured ~ scale*sum + offset + per_piece*pieces [+ per_mparam*mparams] on whole subnets.

    Relative weighting keeps small networks (where fixed overheads matter most) as well predicted
    as large ones; the search cares about percentages around a budget, not absolute ms. The
    parameter term is used only if it lowers the leave-one-out error (no overfitting on few points)."""
    if len(points) < 3:
        raise UserError(f"calibration needs at least 3 whole-subnet measurements, got {len(points)}")
    s = np.array([p.pieces_sum_ms for p in points])
    n = np.array([p.pieces for p in points], dtype=np.float64)
    w = np.array([p.mparams for p in points], dtype=np.float64)
    m = np.array([p.measured_ms for p in points])
    names = ["scale", "offset"]
    cols = [s, np.ones_like(s)]
    if np.ptp(n) > 0 and len(points) >= 5:
        names.append("per_piece")
        cols.append(n)
    F = np.stack(cols, axis=1)
    coef = dict(zip(names, _lstsq_rel(F, m)))
    loo = _loo_mape(F, m) if len(points) > len(names) + 1 else 0.0
    if np.ptp(w) > 0 and len(points) >= 8:
        F2 = np.concatenate([F, w[:, None]], axis=1)
        loo2 = _loo_mape(F2, m)
        c2 = dict(zip(names + ["per_mparam"], _lstsq_rel(F2, m)))
        if loo2 < loo and c2["scale"] > 0:
            coef, loo = c2, loo2
    if coef["scale"] <= 0:  # degenerate data (e.g. all subnets alike): fall back to a pure ratio
        coef = {"scale": float(np.median(m / s)), "offset": 0.0}
    scale, offset = float(coef["scale"]), float(coef["offset"])
    per_piece, per_mp = float(coef.get("per_piece", 0.0)), float(coef.get("per_mparam", 0.0))
    pred = scale * s + offset + per_piece * n + per_mp * w
    err = (pred - m) / m
    return Calibration(
        scale=scale, offset_ms=offset, per_piece_ms=per_piece, per_mparam_ms=per_mp, loo_mape=loo,
        fit_mape=float(np.mean(np.abs(err))), fit_max_abs_pct=float(np.max(np.abs(err)) * 100),
        raw_sum_bias_pct=float(np.mean((s - m) / m) * 100), points=list(points),
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
        self._stage_mp = [np.zeros((R, 2, len(s.kernels), len(s.expands))) for s in space.stages]
        for t, r in enumerate(self._resolutions):
            sk = slot_keys(space, r)
            hs = slot_keys(head_space, r) if head_space is not space else sk
            hk = hs.head
            self._base[t] = self._get(sk.stem) + self._get(hk) + (self._get(sk.fixed) if sk.fixed else 0.0)
            self._base_mp[t] = sum(piece_mparams(sk.plans[k]) for k in (sk.stem, sk.fixed) if k) + piece_mparams(hs.plans[hk])
            for i, (first, later) in enumerate(sk.stages):
                for pos, rows in enumerate((first, later)):
                    if rows is None:
                        continue
                    for ki, row in enumerate(rows):
                        for ei, key in enumerate(row):
                            self._stage[i][t, pos, ki, ei] = self._get(key)
                            self._stage_mp[i][t, pos, ki, ei] = piece_mparams(sk.plans[key])
        self._head_space = head_space

    def _has_head(self, space: Space) -> bool:
        return slot_keys(space, self._resolutions[0]).head in self.table.entries

    def _get(self, key: str) -> float:
        e = self.table.entries.get(key)
        if e is None:
            raise UserError(f"table: entries: no entry for '{key}' (the table is damaged or incomplete; profile again)")
        return e.median_ms

    @property
    def resolutions(self) -> list[int]:
        return list(self._resolutions)

    def _calibrate(self, raw: np.ndarray, pieces: np.ndarray, mparams: np.ndarray) -> np.ndarray:
        c = self._cal
        return c.scale * raw + c.offset_ms + c.per_piece_ms * pieces + c.per_mparam_ms * mparams

    def raw_sum(self, subnet: Subnet) -> tuple[float, int]:
        """(sum of piece entries, number of pieces) for one subnet: the calibration's main inputs."""
        sub = self.space.validate_subnet(subnet)
        if sub.resolution not in self._resolutions:
            raise UserError(f"subnet.resolution: {sub.resolution} is not covered by the table (resolutions {self._resolutions})")
        plan = build_plan(self._head_space, sub)
        keys = net_keys(plan)
        return float(sum(self._get(k) for k in keys)), len(keys)

    def predict(self, subnet: Subnet) -> float:
        """Predicted latency (ms) of one subnet."""
        raw, n = self.raw_sum(subnet)
        mp = net_mparams(build_plan(self._head_space, self.space.validate_subnet(subnet)))
        return float(self._calibrate(np.array([raw]), np.array([n]), np.array([mp]))[0])

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
        mp = self._base_mp[t].copy()
        pieces = np.full(len(X), 2 + self._nfix, dtype=np.float64)
        for i, s in enumerate(self.space.stages):
            depth = np.asarray(s.depths)[X[:, 1 + i]]
            pieces += depth
            sl = enc.block_slice(i)
            T, P = self._stage[i], self._stage_mp[i]
            for j in range(s.max_depth):
                k = X[:, sl.start + 2 * j]
                e = X[:, sl.start + 2 * j + 1]
                on = depth > j
                raw += np.where(on, T[t, min(j, 1), k, e], 0.0)
                mp += np.where(on, P[t, min(j, 1), k, e], 0.0)
        return self._calibrate(raw, pieces, mp)

    def min_latency_ms(self) -> float:
        """The exact minimum predicted latency over the covered space.

        Given the resolution and the depths, every block slot contributes independently
        (scale*entry + per_mparam*params + per_piece), so each slot takes its cheapest choice and each stage its
        cheapest depth; the minimum over resolutions is then exact."""
        c = self._cal
        best = np.inf
        for t in range(len(self._resolutions)):
            total = c.scale * self._base[t] + c.per_mparam_ms * self._base_mp[t] + c.offset_ms + c.per_piece_ms * (2 + self._nfix)
            for i, s in enumerate(self.space.stages):
                cost = c.scale * self._stage[i][t] + c.per_mparam_ms * self._stage_mp[i][t] + c.per_piece_ms
                first = cost[0].min()
                later = cost[1].min() if s.max_depth > 1 else 0.0
                total += min(first + (d - 1) * later for d in s.depths)
            best = min(best, float(total))
        return best

"""Profiling: measure every distinct piece of a space (here, or on a device via a bundle), fit the
calibration on whole subnets, write a TABLE; measure whole subnets; validate a table."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnas.cache import digest
from hwnas.errors import UserError
from hwnas.fileio import format_validation_error, read_structured, write_json
from hwnas.latency.pieces import (
    all_pieces, compose, export_piece, input_shape, mixed_pool, net_keys, net_mparams, piece_overrides, sample_subnets,
    spread_evenly, structure_key,
)
from hwnas.latency.predictor import MIN_CALIBRATION_POINTS, fit_calibration
from hwnas.latency.table import (
    CalibrationPoint, EntryStats, Fingerprint, LatencyTable, NoiseReport, now_iso, space_digest,
)
from hwnas.progress import log as _log
from hwnas.runtime import LatencyStats, MeasureProtocol, check_target, legacy_protocol, ortbench
from hwnas.space import Space, Subnet, build_plan, plan_cost

CALIBRATION_SEED = 1_000_003  # calibration subnets; `latency validate` draws others and excludes these
DEFAULT_CALIBRATION_SUBNETS = 80
CAL_PREFIX = "net:"


class ProfileOptions(BaseModel):
    """How much a profile measures, for callers that profile on the user's behalf (`generate`): tests and
    benchmarks shrink it; users get the defaults (`hwnas profile --calibration-subnets` is the CLI's knob)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_subnets: int = Field(default=DEFAULT_CALIBRATION_SUBNETS, ge=MIN_CALIBRATION_POINTS,
                                     description="whole subnets measured to fit the predictor")
    protocol: MeasureProtocol = Field(default_factory=MeasureProtocol, description="how each graph is timed")


def check_resolutions(space: Space, resolutions: list[int] | None) -> list[int]:
    if not resolutions:
        return list(space.resolutions)
    bad = [r for r in resolutions if r not in space.resolutions]
    if bad:
        raise UserError(f"--resolutions: {bad} not in space '{space.name}' resolutions {space.resolutions}")
    return sorted(set(int(r) for r in resolutions))


def _quantize(model: bytes, shape: tuple[int, ...]) -> bytes:
    from hwnas.runtime.quantize import quantize_many

    return quantize_many([(model, shape)], workers=1)[0]


@dataclass
class ProfilePlan:
    """Everything to measure for one table: piece graphs (one per structure) and calibration nets."""

    space: Space
    resolutions: list[int]
    int8: bool
    graphs: dict[str, bytes] = field(default_factory=dict)  # graph file name -> ONNX bytes
    entries: list[dict[str, Any]] = field(default_factory=list)  # key, graph, shape, dim_overrides
    calibration: list[dict[str, Any]] = field(default_factory=list)  # + subnet

    def jobs(self, where: Path | None = None) -> list[dict[str, Any]]:
        return [
            {"key": e["key"], "model": str(where / e["file"]) if where else self.graphs[e["file"]], "shape": e["shape"],
             "dim_overrides": e["dim_overrides"], "cyclic": cyclic}
            for group, cyclic in ((self.entries, True), (self.calibration, False))
            for e in group
        ]


FAST_END_SHARE = 0.25
"""Share of the calibration subnets taken from the fast end of the space (its lowest decile by
MACs). Uniform random subnets alone left the fast end, where searches pick their models, to
extrapolation: there the predictor erred by 13% (median), all in one direction."""
WIDE_SHARE = 0.25
"""Share spread evenly in MACs over a pool that leans to small and to large choices, the largest
subnets included. Uniform draws cluster in the middle of the MACs range: a front found by a search
reaches far above it (mbv3-cifar: random subnets up to 1.85 ms, the front up to 3.4 ms), and there a
calibration fitted on random subnets under-predicted by up to 20%."""


def calibration_set(space: Space, n: int, resolutions: list[int]) -> list[Subnet]:
    """The whole subnets the calibration is fitted on: uniform random ones, plus FAST_END_SHARE of
    them spread over the fast end and WIDE_SHARE spread over the whole MACs range (deterministic).
    Tables store them with their points; `latency validate` excludes them."""
    n_fast = int(n * FAST_END_SHARE) if n >= 8 else 0
    n_wide = int(n * WIDE_SHARE) if n >= 8 else 0
    uniform = sample_subnets(space, n - n_fast - n_wide, CALIBRATION_SEED, resolutions)
    if n_fast == 0:
        return uniform
    cost = lambda s: plan_cost(build_plan(space, s))[0]  # noqa: E731
    rng = np.random.default_rng([CALIBRATION_SEED, 7])
    pool = mixed_pool(space, rng, 40 * n_fast, tilt=(-3.0, 0.0), resolutions=resolutions, exclude={s.key() for s in uniform})
    by_macs = sorted(pool, key=cost)
    fast = spread_evenly(by_macs[: max(len(by_macs) // 10, n_fast)], n_fast)
    taken = {s.key() for s in uniform + fast}
    wide_pool = mixed_pool(space, np.random.default_rng([CALIBRATION_SEED, 11]), 40 * n_wide, resolutions=resolutions, exclude=taken)
    # the largest subnet at every resolution first: the top of the range is where extrapolation hurt
    tops = [t for t in (space.largest(r) for r in resolutions) if t.key() not in taken][:n_wide]
    top_keys = {t.key() for t in tops}
    rest = [s for s in sorted(wide_pool, key=cost) if s.key() not in top_keys]
    return uniform + fast + tops + spread_evenly(rest, n_wide - len(tops))


def make_plan(
    space: Space, resolutions: list[int], *, int8: bool = False, calibration_subnets: int = DEFAULT_CALIBRATION_SUBNETS, progress: bool = True,
    quantize_workers: int | None = None,
) -> ProfilePlan:
    """Export each distinct piece structure once, and compose the calibration subnets from them; for int8 quantise
    them all in `quantize_workers` processes (default: one per core, `quantize_many`)."""
    pieces = all_pieces(space, resolutions)
    structs: dict[str, Any] = {}
    for key, p in pieces.items():
        structs.setdefault(structure_key(p), p)
    plan = ProfilePlan(space, resolutions, int8)
    names: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    bar = ortbench.Progress(len(structs), "exporting", enabled=progress)
    for i, (skey, p) in enumerate(structs.items()):
        name = f"pieces/{i:04d}.onnx"
        plan.graphs[name] = export_piece(p)
        names[skey], shapes[name] = name, tuple(input_shape(p))
        bar.update()
    for key, p in pieces.items():
        plan.entries.append({"key": key, "file": names[structure_key(p)], "shape": list(input_shape(p)), "dim_overrides": piece_overrides(p)})
    # calibration: whole subnets composed of the float piece graphs (for int8 quantised as a whole, below)
    subs = calibration_set(space, calibration_subnets, resolutions)
    for j, sub in enumerate(subs):
        netplan = build_plan(space, sub)
        parts = [plan.graphs[names[structure_key(p)]] for p in (netplan.stem, *netplan.blocks, netplan.head)]
        shape = [1, space.in_channels, sub.resolution, sub.resolution]
        name = f"nets/{j:03d}.onnx"
        plan.graphs[name] = compose(parts, space.in_channels, sub.resolution, space.num_classes)
        shapes[name] = tuple(shape)
        plan.calibration.append({"key": f"{CAL_PREFIX}{j}", "file": name, "shape": shape, "dim_overrides": {}, "subnet": sub.model_dump()})
    if int8:  # every graph, pieces and nets alike, quantised in parallel processes (the bulk of an INT8 plan)
        from hwnas.runtime.quantize import quantize_many

        files = list(plan.graphs)
        bar = ortbench.Progress(len(files), "quantising", enabled=progress)
        done = quantize_many([(plan.graphs[f], shapes[f]) for f in files], workers=quantize_workers, on_done=bar.update)
        plan.graphs = dict(zip(files, done))
    return plan


def build_table(
    space: Space,
    resolutions: list[int],
    int8: bool,
    fingerprint: dict[str, Any],
    protocol: MeasureProtocol,
    results: dict[str, dict[str, Any]],
    calibration: list[dict[str, Any]],
    *,
    source: str,
    seconds: float,
    created: str | None = None,
    where: str = "results",
) -> LatencyTable:
    """Entries + calibration fitted on whole subnets -> a validated LatencyTable."""
    pieces = all_pieces(space, resolutions)
    entries: dict[str, EntryStats] = {}
    try:
        for key in pieces:
            if key not in results:
                raise UserError(f"{where}: results: no measurement for piece '{key}'")
            entries[key] = EntryStats.model_validate(results[key])
        points = []
        for c in calibration:
            if c["key"] not in results:
                raise UserError(f"{where}: results: no measurement for calibration subnet '{c['key']}'")
            sub = space.validate_subnet(c["subnet"])
            netplan = build_plan(space, sub)
            keys = net_keys(netplan)
            st = EntryStats.model_validate(results[c["key"]])
            points.append(CalibrationPoint(
                resolution=sub.resolution, pieces=len(keys), pieces_sum_ms=sum(entries[k].median_ms for k in keys),
                pieces_hot_sum_ms=sum(entries[k].hot_median_ms or 0.0 for k in keys) if all(entries[k].hot_median_ms for k in keys) else 0.0,
                mparams=net_mparams(netplan), measured_ms=st.median_ms, subnet=sub.model_dump(mode="json"),
            ))
    except ValidationError as e:
        raise UserError(format_validation_error(f"{where}", e)) from None
    cal = fit_calibration(points)
    try:
        return LatencyTable(
            space=space.name, space_digest=space_digest(space), space_definition=space.model_dump(mode="json"),
            num_classes=space.num_classes, resolutions=resolutions, int8=int8, fingerprint=Fingerprint.model_validate(fingerprint),
            protocol=protocol, source=source, created=created or now_iso(), seconds=round(seconds, 2), entries=entries, calibration=cal,
        )
    except ValidationError as e:
        raise UserError(format_validation_error(where, e)) from None


def profile_space(
    space: Space,
    out: str | Path,
    *,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    resolutions: list[int] | None = None,
    int8: bool = False,
    progress: bool = True,
    protocol: MeasureProtocol | None = None,
    calibration_subnets: int = DEFAULT_CALIBRATION_SUBNETS,
) -> LatencyTable:
    """Measure every distinct piece of `space` on this machine, fit the calibration, write TABLE `out`."""
    check_target(threads, provider)
    res = check_resolutions(space, resolutions)
    protocol = protocol or MeasureProtocol()
    t0 = time.time()
    plan = make_plan(space, res, int8=int8, calibration_subnets=calibration_subnets, progress=progress)
    jobs = plan.jobs()
    _log(progress, f"measuring {len(plan.entries)} pieces and {len(plan.calibration)} calibration subnets "
                   f"({threads} thread{'s' if threads > 1 else ''}, {provider}{', int8' if int8 else ''})")
    results, noise = measure_checked(jobs, plan.calibration, protocol, threads, provider, progress)
    fp = ortbench.fingerprint(provider, threads, 1)
    table = build_table(space, res, int8, fp, protocol, results, plan.calibration, source="local", seconds=time.time() - t0, where=str(out))
    table = table.model_copy(update={"noise": noise})
    table.save(out)
    return table


def busy_limit(threads: int) -> float:
    """Cores that other processes may keep busy on average while we measure before the machine counts
    as busy: half a core, or a quarter of the cores we leave free on larger machines. (A table profiled
    on 2 cores beside one CPU-bound job validated at 71% within +-10% on the quiet machine; the same
    space profiled quietly, at 93%.)"""
    import os

    return max(0.5, 0.25 * ((os.cpu_count() or 1) - threads))
REPEAT_NOISE_PCT = 2.0
"""Median disagreement of the same calibration subnets measured twice, once the two runs' common level shift is
taken out, above this: too noisy (quiet: ~0.5%)."""
REPEAT_NOISE_P90_PCT = 6.0
DRIFT_PCT = 5.0
"""A level shift between the two runs above this: the machine's speed is moving too much to trust the table.
Below it, a shift moves every prediction alike (the ranking stays, and generate measures the budget). Whole-network
timings were seen to drift together by several percent from one pass to the next (BENCHMARKS.md, issue 10): judged
raw, such a shift alone refused a table whose subnets agreed with each other."""
MAX_ROUNDS = 2
"""Measurement rounds at most: a busy or noisy round is measured once more."""


def judge_noise(others_cores: float, repeat_pct: np.ndarray, *, load_avg_max: float | None, rounds: int,
                threads: int = 1, ratios: np.ndarray | None = None) -> NoiseReport:
    """Trusted unless other processes were busy or the same subnets measured twice disagree. `repeat_pct`:
    |run 1 - run 2| / mean per subnet (%); `ratios`: run 2 / run 1 per subnet, when known: then the two runs'
    common level shift (drift) is judged on its own and the disagreement beyond it (scatter) against the limits."""
    med = float(np.median(repeat_pct)) if len(repeat_pct) else 0.0
    p90 = float(np.percentile(repeat_pct, 90)) if len(repeat_pct) else 0.0
    drift = scatter = scatter90 = None
    if ratios is not None and len(ratios):
        level = float(np.median(ratios))
        left = np.abs(np.asarray(ratios) / level - 1.0) * 100
        drift, scatter, scatter90 = (level - 1.0) * 100, float(np.median(left)), float(np.percentile(left, 90))
    reasons = []
    limit = busy_limit(threads)
    if others_cores > limit:
        reasons.append(f"other processes kept {others_cores:.2f} cores busy while it measured (limit {limit:g})")
    if scatter is None and (med > REPEAT_NOISE_PCT or p90 > REPEAT_NOISE_P90_PCT):
        reasons.append(f"the same subnets measured twice differ by {med:.1f}% (median) / {p90:.1f}% (90th percentile); "
                       f"limits {REPEAT_NOISE_PCT}% / {REPEAT_NOISE_P90_PCT}%")
    if scatter is not None and (scatter > REPEAT_NOISE_PCT or scatter90 > REPEAT_NOISE_P90_PCT):
        reasons.append(f"the same subnets measured twice differ by {scatter:.1f}% (median) / {scatter90:.1f}% (90th "
                       f"percentile) beyond a common shift of {drift:+.1f}%; limits {REPEAT_NOISE_PCT}% / {REPEAT_NOISE_P90_PCT}%")
    if drift is not None and abs(drift) > DRIFT_PCT:
        reasons.append(f"the machine's speed moved by {drift:+.1f}% between two runs of the same subnets (limit "
                       f"{DRIFT_PCT:g}%)")
    rnd = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return NoiseReport(others_cores=round(others_cores, 3), load_avg_max=load_avg_max, repeat_noise_pct=round(med, 3),
                       repeat_noise_p90_pct=round(p90, 3), drift_pct=rnd(drift), scatter_pct=rnd(scatter),
                       scatter_p90_pct=rnd(scatter90), rounds=rounds, trusted=not reasons, reason="; ".join(reasons))


def _disagreement(n: NoiseReport) -> float:
    return n.scatter_pct if n.scatter_pct is not None else n.repeat_noise_pct


def measure_checked(
    jobs: list[dict[str, Any]], calibration: list[dict[str, Any]], protocol: MeasureProtocol, threads: int, provider: str,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], NoiseReport]:
    """Measure everything while watching the machine, then the calibration subnets once more (their
    time: the mean of both runs); a busy or noisy round is measured again (up to MAX_ROUNDS) and the
    quietest round is kept."""
    from hwnas.runtime.load import LoadMonitor

    cal_keys = {c["key"] for c in calibration}
    cal_jobs = [j for j in jobs if j["key"] in cal_keys]
    best: tuple[dict[str, dict[str, Any]], NoiseReport] | None = None
    for rounds in range(1, MAX_ROUNDS + 1):
        mon = LoadMonitor(threads).start()
        results = ortbench.measure_all(jobs, protocol.model_dump(), threads, provider, progress)
        again = ortbench.measure_many(cal_jobs, protocol.model_dump(), threads, provider, progress, label="noise check")
        a = np.array([results[k]["median_ms"] for k in sorted(cal_keys)])
        b = np.array([again[k]["median_ms"] for k in sorted(cal_keys)])
        others = mon.others_cores()
        noise = judge_noise(others, np.abs(a - b) / ((a + b) / 2) * 100, load_avg_max=max(mon.load_avg, default=None),
                            rounds=rounds, threads=threads, ratios=b / a)
        if best is None or (not noise.trusted, noise.others_cores, _disagreement(noise)) < (
                not best[1].trusted, best[1].others_cores, _disagreement(best[1])):
            # a calibration subnet's time is the mean of its two runs: whole-network timings drift together by
            # several percent from one pass to the next (BENCHMARKS.md, issue 10), and the fit sees them all
            results = {**results, **{k: dict(results[k], median_ms=(results[k]["median_ms"] + again[k]["median_ms"]) / 2)
                                     for k in cal_keys}}
            best = (results, noise)
        if noise.trusted:
            break
        if rounds < MAX_ROUNDS:
            _log(progress, f"warning: this machine is busy or noisy ({noise.reason}); measuring everything once more")
    assert best is not None
    results, noise = best
    noise = noise.model_copy(update={"rounds": rounds})
    if not noise.trusted:
        _log(True, f"warning: the table is NOT trustworthy: {noise.reason}. Profile again on a quiet machine (close other "
                   f"programs); `hwnas generate` refuses this table unless given --force-table")
    return results, noise


# ---------------------------------------------------------------- bundles (a device we cannot reach)

BUNDLE_FORMAT = "hwnas-profile-bundle"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleItem(_M):
    key: str
    file: str
    shape: list[int]
    dim_overrides: dict[str, int] = Field(default_factory=dict)
    subnet: dict | None = None


class BundleManifest(_M):
    format: str = BUNDLE_FORMAT
    version: int = 1
    bundle_id: str
    space: str
    space_definition: dict
    space_digest: str
    resolutions: list[int]
    int8: bool
    threads: int = Field(ge=1)
    provider: str
    protocol: MeasureProtocol
    created: str
    entries: list[BundleItem]
    calibration: list[BundleItem]


class BundleResults(_M):
    runner_version: int
    bundle_id: str
    fingerprint: Fingerprint
    protocol: dict
    measured_at: str
    seconds: float = Field(ge=0)
    results: dict[str, EntryStats]


def write_bundle(
    space: Space,
    out: str | Path,
    *,
    resolutions: list[int] | None = None,
    int8: bool = False,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    force: bool = False,
    progress: bool = True,
    protocol: MeasureProtocol | None = None,
    calibration_subnets: int = DEFAULT_CALIBRATION_SUBNETS,
) -> Path:
    """Write DIR with piece and calibration ONNX files, manifest.json and runner.py (onnxruntime +
    numpy only). The folder appears complete or not at all (built aside, then renamed)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"--out {out} already exists and is not empty; pass --force to replace it")
    if threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    res = check_resolutions(space, resolutions)
    protocol = protocol or MeasureProtocol()
    plan = make_plan(space, res, int8=int8, calibration_subnets=calibration_subnets, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in plan.graphs.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        ident = digest([space_digest(space), res, int8, [e["key"] for e in plan.entries], [c["subnet"] for c in plan.calibration], now_iso()])
        manifest = BundleManifest(
            bundle_id=ident, space=space.name, space_definition=space.model_dump(mode="json"), space_digest=space_digest(space),
            resolutions=res, int8=int8, threads=threads, provider=provider, protocol=protocol, created=now_iso(),
            entries=[BundleItem.model_validate(e) for e in plan.entries],
            calibration=[BundleItem.model_validate(c) for c in plan.calibration],
        )
        write_json(tmp / "manifest.json", manifest.model_dump(mode="json"), indent=1)
        shutil.copyfile(Path(ortbench.__file__), tmp / "runner.py")
        (tmp / "README.txt").write_text(
            "hwnas profile bundle\n\n"
            "On the target device (needs only python3, numpy and onnxruntime):\n"
            "    python3 runner.py            # optional: --threads N --provider EP\n"
            "It writes results.json here. Copy this folder (or just results.json into it) back and run:\n"
            "    hwnas profile-import --bundle THIS_FOLDER --out TABLE.json\n",
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_model(path: Path, model: type[BaseModel], what: str) -> Any:
    raw = read_structured(path)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise UserError(format_validation_error(f"{path} ({what})", e)) from None


def import_bundle(bundle: str | Path, out: str | Path, *, results: str | Path | None = None) -> LatencyTable:
    """Turn the runner's results.json (validated against the bundle's manifest) into a TABLE."""
    b = Path(bundle)
    if not (b / "manifest.json").is_file():
        raise UserError(f"--bundle {b}: no manifest.json (not a folder written by `hwnas profile-bundle`)")
    man: BundleManifest = _read_model(b / "manifest.json", BundleManifest, "bundle manifest")
    rpath = Path(results) if results else b / "results.json"
    if not rpath.is_file():
        raise UserError(f"{rpath}: no results yet; run `python3 runner.py` in the bundle on the target device first")
    res: BundleResults = _read_model(rpath, BundleResults, "runner results")
    if res.bundle_id != man.bundle_id:
        raise UserError(f"{rpath}: bundle_id: {res.bundle_id} belongs to another bundle (this bundle is {man.bundle_id})")
    try:
        space = Space.model_validate(man.space_definition)
    except ValidationError as e:
        raise UserError(format_validation_error(f"{b / 'manifest.json'} space_definition", e)) from None
    if space_digest(space) != man.space_digest:
        raise UserError(f"{b / 'manifest.json'}: space_digest does not match space_definition (the manifest was edited)")
    wanted = {e.key for e in man.entries} | {c.key for c in man.calibration}
    missing = sorted(wanted - set(res.results))
    if missing:
        raise UserError(f"{rpath}: results: {len(missing)} of {len(wanted)} measurements missing (first: '{missing[0]}'); run the runner again")
    proto_fields = set(MeasureProtocol.model_fields)
    # a runner older than a protocol key measured the way it did before that key
    protocol = MeasureProtocol.model_validate(legacy_protocol({k: v for k, v in res.protocol.items() if k in proto_fields}))
    table = build_table(
        space, man.resolutions, man.int8, res.fingerprint.model_dump(), protocol,
        {k: v.model_dump() for k, v in res.results.items()},
        [c.model_dump() for c in man.calibration], source="bundle", seconds=res.seconds, created=res.measured_at, where=str(rpath),
    )
    table.save(out)
    return table


# ---------------------------------------------------------------- whole subnets

def export_subnet(space: Space, subnet: Subnet, *, int8: bool = False, seed: int = 0) -> bytes:
    """The deployed form of a subnet with random weights: StaticNet exported like `hwnas export`
    does (free batch, static spatial size), quantised to QDQ for int8."""
    import torch

    from hwnas.runtime import export_onnx_bytes
    from hwnas.supernet.static import StaticNet, init_weights

    torch.manual_seed(seed)
    net = StaticNet(build_plan(space, subnet))
    init_weights(net)
    shape = (1, space.in_channels, subnet.resolution, subnet.resolution)
    data = export_onnx_bytes(net.eval(), torch.randn(*shape), dynamic_batch=True)
    return _quantize(data, shape) if int8 else data


def measure_subnet(
    space: Space,
    subnet: Subnet,
    *,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    int8: bool = False,
    protocol: MeasureProtocol | None = None,
) -> LatencyStats:
    """Latency of a whole static subnet (random weights), measured with the table protocol."""
    from hwnas.runtime import make_session, measure_latency

    sub = space.validate_subnet(subnet)
    sess = make_session(export_subnet(space, sub, int8=int8), threads=threads, provider=provider)
    return measure_latency(sess, (1, space.in_channels, sub.resolution, sub.resolution), protocol=protocol)

"""The latency TABLE file: validated on read and on write.

It records what was measured (one entry per distinct piece, median and spread), on what
(the target's fingerprint), how (the protocol), and the calibration that turns a sum of
piece entries into a whole-network prediction. A table is tied to one space definition by a
digest, so it can never silently be used for another space.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwnas.cache import digest
from hwnas.errors import UserError
from hwnas.fileio import format_validation_error, read_structured, write_json
from hwnas.runtime import MeasureProtocol, legacy_protocol
from hwnas.space import Space

TABLE_FORMAT = "hwnas-latency-table"
TABLE_VERSION = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fingerprint(_M):
    """The target a table was measured on."""

    cpu_model: str
    cores: int = Field(ge=1)
    os: str
    machine: str = ""
    python: str = ""
    onnxruntime: str
    provider: str
    threads: int = Field(ge=1)
    batch: int = Field(default=1, ge=1)


class EntryStats(_M):
    """One piece's measured latency (ms): timed in shuffled cycles over all pieces (caches as cold
    as inside a network); `hot_median_ms` is the same piece timed back to back."""

    median_ms: float = Field(gt=0.0)
    mean_ms: float = Field(ge=0.0)
    p10_ms: float = Field(ge=0.0)
    p90_ms: float = Field(ge=0.0)
    mad_ms: float = Field(ge=0.0)
    repeats: int = Field(ge=1)
    remeasured: int = Field(default=0, ge=0)
    hot_median_ms: float | None = Field(default=None, gt=0.0)
    hot_mad_ms: float | None = Field(default=None, ge=0.0)


class CalibrationPoint(_M):
    """One whole subnet measured end to end, next to the sum of its piece entries."""

    resolution: int
    pieces: int = Field(ge=1)
    pieces_sum_ms: float = Field(gt=0.0)
    pieces_hot_sum_ms: float = Field(default=0.0, ge=0.0)
    mparams: float = Field(default=0.0, ge=0.0, description="parameters of the subnet, millions")
    measured_ms: float = Field(gt=0.0)
    source: Literal["profile", "delivered"] = Field(
        default="profile", description="profile: measured by the profiler; delivered: a model generate measured later and fed back")
    subnet: dict | None = Field(default=None, description="the subnet measured (a later fed-back measurement of it replaces a fed-back "
                                "point; tables of profilers before 2026-11-28 lack it for their own points)")


class Calibration(_M):
    """predicted = scale * sum(piece medians) + scale_hot * sum(piece hot medians) + offset_ms
                 + per_piece_ms * number_of_pieces + per_mparam_ms * parameters (millions),
    where form linear-res-v1 adds a term per resolution to `scale` and `offset_ms`.

    Summing isolated pieces double-counts the fixed per-graph cost of a session run (the whole
    network pays it once) and misses cross-piece cache effects (an isolated block finds its
    weights in cache, a block inside a network has to fetch them); this linear correction,
    fitted on whole subnets measured end to end, removes both. Among the candidate forms (cold
    sums, hot sums or both; with or without the parameter term) the one with the lowest
    leave-one-out error is kept."""

    form: Literal["linear-v1", "linear-res-v1"] = "linear-v1"
    scale: float = Field(ge=0.0)
    scale_hot: float = Field(default=0.0, ge=0.0)
    offset_ms: float
    per_piece_ms: float
    per_mparam_ms: float = 0.0
    res_scale: dict[int, float] = Field(
        default_factory=dict, description="form linear-res-v1: added to `scale` at that resolution (absent: 0)")
    res_offset_ms: dict[int, float] = Field(
        default_factory=dict, description="form linear-res-v1: added to `offset_ms` at that resolution (absent: 0)")
    loo_mape: float = Field(default=0.0, ge=0.0, description="leave-one-out mean |error| / measured of the chosen form")
    fit_mape: float = Field(ge=0.0, description="mean |error| / measured on the fitting subnets")
    fit_max_abs_pct: float = Field(ge=0.0)
    raw_sum_bias_pct: float = Field(description="mean (sum - measured) / measured before calibration")
    points: list[CalibrationPoint] = Field(min_length=3)

    @model_validator(mode="after")
    def _positive(self) -> "Calibration":
        for r in [None, *self.res_scale]:
            if self.scale_at(r) < 0 or self.scale_at(r) + self.scale_hot <= 0:
                raise ValueError(f"scale + scale_hot must be positive{'' if r is None else f' (at resolution {r})'}")
        if (self.res_scale or self.res_offset_ms) and self.form != "linear-res-v1":
            raise ValueError("res_scale / res_offset_ms belong to form 'linear-res-v1'")
        return self

    def scale_at(self, resolution: int | None) -> float:
        return self.scale + self.res_scale.get(resolution, 0.0)  # type: ignore[arg-type]

    def offset_at(self, resolution: int | None) -> float:
        return self.offset_ms + self.res_offset_ms.get(resolution, 0.0)  # type: ignore[arg-type]

    def apply(self, points: "list[CalibrationPoint]") -> "list[float]":
        """What the calibration predicts for each point: the one place this linear form is written out
        for points (the predictor's vectorised version gathers the same terms per resolution)."""
        return [self.scale_at(p.resolution) * p.pieces_sum_ms + self.scale_hot * p.pieces_hot_sum_ms + self.offset_at(p.resolution)
                + self.per_piece_ms * p.pieces + self.per_mparam_ms * p.mparams for p in points]


class NoiseReport(_M):
    """How quiet the machine was while the table was measured: a table measured beside another job
    is wrong in a way its own repeat measurements hide, so the whole machine's load is recorded too."""

    others_cores: float = Field(ge=0.0, description="mean number of cores other processes kept busy while measuring")
    load_avg_max: float | None = Field(default=None, ge=0.0, description="highest 1-minute load average seen")
    repeat_noise_pct: float = Field(ge=0.0, description="median |run 1 - run 2| / mean of the calibration subnets")
    repeat_noise_p90_pct: float = Field(ge=0.0)
    drift_pct: float | None = Field(default=None, description="median run 2 / run 1 - 1: the whole machine's speed moving "
                                    "between the two runs (a level shift, which the measured budget check covers)")
    scatter_pct: float | None = Field(default=None, description="median |run 2 / run 1 / (1 + drift) - 1|: disagreement "
                                      "left after the level shift, what would reorder subnets (none: not computed)")
    scatter_p90_pct: float | None = Field(default=None, ge=0.0)
    rounds: int = Field(ge=1, description="measurement rounds: 1, plus one per re-measurement of a noisy machine")
    trusted: bool
    reason: str = Field(default="", description="why the table is not trusted (empty when it is)")


class LatencyTable(_M):
    """A latency TABLE file."""

    format: Literal["hwnas-latency-table"] = TABLE_FORMAT
    version: Literal[1] = TABLE_VERSION
    space: str
    space_digest: str = Field(min_length=8)
    space_definition: dict = Field(description="the space the table was profiled for (so a table of a custom space stands alone)")
    num_classes: int = Field(ge=2)
    resolutions: list[int] = Field(min_length=1)
    int8: bool = False
    fingerprint: Fingerprint
    protocol: MeasureProtocol
    source: Literal["local", "bundle"] = "local"
    created: str = Field(description="UTC date and time of the measurement (ISO 8601)")
    seconds: float = Field(ge=0.0, description="wall time the profiling took")
    entries: dict[str, EntryStats] = Field(min_length=1)
    calibration: Calibration
    noise: NoiseReport | None = Field(default=None, description="the profiler's check of the machine (none: not checked)")

    @model_validator(mode="before")
    @classmethod
    def _older_protocol(cls, data: object) -> object:
        """A table written before a protocol key existed measured the way the key's legacy value says
        (`LEGACY_PROTOCOL`), not the way today's default does."""
        if isinstance(data, dict) and isinstance(data.get("protocol"), dict):
            data = {**data, "protocol": legacy_protocol(data["protocol"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> "LatencyTable":
        if sorted(set(self.resolutions)) != self.resolutions:
            raise ValueError(f"resolutions must be strictly increasing, got {self.resolutions}")
        try:
            _dt.datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"created: not an ISO 8601 date: {self.created!r}") from None
        return self

    def get_space(self) -> Space:
        """The space this table was profiled for, rebuilt from the stored definition."""
        try:
            return Space.model_validate(self.space_definition)
        except ValidationError as e:
            raise UserError(format_validation_error("table space_definition", e)) from None

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.model_dump(mode="json"), indent=1)


def space_digest(space: Space) -> str:
    """Digest of everything in a space that changes a piece's latency, except the class count
    (only the classifier depends on it; the head entry is keyed by it)."""
    d = space.model_dump(mode="json")
    for k in ("name", "num_classes", "default_resolution"):
        d.pop(k, None)
    d["head"].pop("dropout", None)
    return digest(d)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load_table(path: str | Path, space: Space | None = None) -> LatencyTable:
    """Read and validate a TABLE; with `space`, also check it was made for that space.

    UserError (CLI exit 2) naming the file and the field for a damaged table or a table of
    another space."""
    p = Path(path)
    raw = read_structured(p)
    if not isinstance(raw, dict):
        raise UserError(f"{p}: not a latency table (expected a JSON object, got {type(raw).__name__})")
    if raw.get("format") != TABLE_FORMAT:
        raise UserError(f"{p}: format: not a latency table written by `hwnas profile` (format is {raw.get('format')!r}, expected {TABLE_FORMAT!r})")
    try:
        table = LatencyTable.model_validate(raw)
    except ValidationError as e:
        raise UserError(format_validation_error(f"{p} (damaged latency table)", e)) from None
    stored = table.get_space()
    if space_digest(stored) != table.space_digest:
        raise UserError(f"{p}: space_digest: does not match space_definition (the table was edited or damaged)")
    if space is not None:
        check_table_space(table, space, p)
    return table


def check_table_space(table: LatencyTable, space: Space, path: str | Path = "table") -> None:
    if table.space_digest != space_digest(space):
        raise UserError(
            f"{path}: space: this table was profiled for space '{table.space}' (digest {table.space_digest}), "
            f"which differs from space '{space.name}' (digest {space_digest(space)}); profile it with "
            f"`hwnas profile --space {space.name} --out TABLE`"
        )
    extra = [r for r in table.resolutions if r not in space.resolutions]
    if extra:
        raise UserError(f"{path}: resolutions: {extra} are not resolutions of space '{space.name}' ({space.resolutions})")


def check_trusted(table: LatencyTable, path: str | Path, *, force: bool) -> None:
    """Refuse (UserError, exit 2) a table its profiler found busy or noisy, unless forced."""
    if table.noise is None or table.noise.trusted or force:
        return
    n = table.noise
    raise UserError(
        f"{path}: this latency table was measured on a busy or noisy machine ({n.reason}), so its predictions "
        f"cannot be trusted to keep a budget. Profile again with other programs closed, or pass --force-table to use it anyway"
    )


"""What `hwnas generate` returns and writes: the measured attempts, the INT8 finalists and the `--json` result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LOOKAHEAD = 1.5
"""generate also searches up to this multiple of the budget, so pareto.png shows what a larger budget would buy."""


class Attempt(BaseModel):
    """One candidate and how it measured against the budget: `check` times its graph with untrained weights
    (cheap, before fine-tuning), `export` the delivered file itself (with the tables' protocol and as an
    application calls it; the slower counts)."""

    model_config = ConfigDict(extra="forbid")
    subnet: dict[str, Any]
    predicted_acc: float | None
    predicted_latency_ms: float
    measured_latency_ms: float
    within_budget: bool
    kind: Literal["check", "export"] = "check"
    int8_acc_change: float | None = None
    accepted: bool = False


class Int8Finalist(BaseModel):
    """One front member scored quantised before the export (generate --int8): the search's fp32 estimate
    beside the fp32 and INT8 accuracy of the models the export would build from the supernet's weights."""

    model_config = ConfigDict(extra="forbid")
    subnet: dict[str, Any]
    predicted_latency_ms: float
    predicted_acc: float = Field(description="the search's (fp32, inherited weights) accuracy that made it a finalist")
    fp32_acc: float = Field(description="fp32 model through ONNX Runtime, supernet weights, BN recalibrated (0..1)")
    int8_acc: float = Field(description="its QDQ INT8 model, calibrated as the export calibrates it (0..1)")
    val_images: int
    start: bool = Field(default=False, description="the finalist generate started from (best INT8 accuracy)")


class GenerateResult(BaseModel):
    """What `hwnas generate --json` prints (SPEC keys first)."""

    model_config = ConfigDict(extra="forbid")
    onnx: str
    report: str
    measured_latency_ms: float
    predicted_latency_ms: float
    val_acc: float
    budget_ms: float
    seconds: float
    within_budget: bool
    val_acc_torch: float
    predicted_acc: float | None
    max_abs_diff: float
    best: str
    pareto: str
    plot: str
    space: str
    data: str
    subnet: dict[str, Any]
    macs: int
    params: int
    table: str
    supernet: str
    cache: dict[str, str] = Field(description="table / supernet: hit, miss or given")
    stage_seconds: dict[str, float]
    attempts: list[Attempt]
    precision: Literal["fp32", "int8"] = "fp32"
    fp32_onnx: str | None = Field(default=None, description="with --int8: the fp32 model of the same subnet (model.fp32.onnx)")
    fp32_val_acc: float | None = None
    int8_acc_change: float | None = Field(default=None, description="INT8 minus fp32 validation accuracy (0..1)")
    export_latency_ms: float | None = Field(default=None, description="the export's own measurement (the table's protocol); measured_latency_ms is the slower of it and the delivered file called as an application calls it")
    ort: str | None = Field(default=None, description="with --ort-format: model.ort (ONNX Runtime Mobile)")
    ort_config: str | None = Field(default=None, description="with --ort-format: the reduced-build operator config")
    warnings: list[str] = Field(default_factory=list)
    time_budget_s: float | None = None
    finetune: dict[str, Any] | None = Field(default=None, description="the chosen subnet's fine-tuning: seconds, epochs, iterations, images/s, recipe")
    schedule: str = ""
    int8_finalists: list[Int8Finalist] = Field(default_factory=list, description="with --int8 (supernet route): the front's "
                                               "finalists scored quantised; generate started from the best INT8 one")
    machine_drift_pct: float | None = Field(default=None, description="after a measured miss on this machine: how much "
                                            "slower (+, %) it runs the table's own reference subnets now than when profiled")
    route: str = Field(default="supernet", description="supernet (train or reuse, search, fine-tune) or direct (no supernet: "
                       "the time budget could not train one; a subnet chosen by rule and trained from scratch)")

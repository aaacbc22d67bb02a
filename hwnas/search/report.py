"""Search outputs: best.json, best-<budget>ms.json, pareto.json, pareto.png, search.log, and the --json summary.

Every file goes through hwnas.fileio (temporary name, then rename), and nothing is
written before the check that no existing output would be overwritten without --force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.errors import UserError
from hwnas.fileio import atomic_path, write_json, write_text
from hwnas.search.models import SearchResult


def budget_label(b: float) -> str:
    return f"{b:g}"


def output_paths(out_dir: str | Path, budgets: list[float]) -> dict[str, Path]:
    """Every file a search writes into `out_dir` (per-budget bests only with several budgets)."""
    d = Path(out_dir)
    paths = {"best": d / "best.json", "pareto": d / "pareto.json", "plot": d / "pareto.png", "log": d / "search.log"}
    if len(budgets) > 1:
        for b in budgets:
            paths[f"best@{budget_label(b)}"] = d / f"best-{budget_label(b)}ms.json"
    return paths


def check_outputs(out_dir: str | Path, budgets: list[float], force: bool) -> dict[str, Path]:
    """UserError (exit 2) if --out is a file or would overwrite an existing output without --force."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise UserError(f"--out {d} is a file; give a folder for the search outputs")
    paths = output_paths(d, budgets)
    if not force:
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            raise UserError(f"--out {d}: {existing[0].name} already exists; pass --force to overwrite it")
    return paths


def front_points(result: SearchResult, budget_ms: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """The plot's data, as (latency ms, accuracy %) points: every real-scored subnet (`evaluated`), and the
    whole front the search found, split at `budget_ms` (default: the largest budget) into `front` and
    `front_over` (greyed in the plot: what a larger budget would buy), and the best per budget (`best`).

    The whole front is the search's own front (within its largest budget) extended by the non-dominated
    real-scored subnets beyond it."""
    bmax = max(result.budgets_ms) if result.budgets_ms else float("inf")
    split = bmax if budget_ms is None else float(budget_ms)
    pts = [(p.latency_ms, 100 * p.acc) for p in result.evaluated]
    whole = sorted({(e.predicted_latency_ms, 100 * e.predicted_acc) for e in result.front})
    top = max((a for _, a in whole), default=float("-inf"))
    for lat, acc in sorted(set(pts), key=lambda t: (t[0], -t[1])):  # by latency: on the front if more accurate than all faster
        if lat > bmax and acc > top:
            whole.append((lat, acc))
            top = acc
    return {"evaluated": pts, "front": [p for p in whole if p[0] <= split], "front_over": [p for p in whole if p[0] > split],
            "best": [(b.predicted_latency_ms, 100 * b.predicted_acc) for b in result.best]}


def plot_front(result: SearchResult, path: str | Path, title: str, budget_ms: float | None = None) -> Path:
    """All real-scored subnets (light), the front within `budget_ms` (default: the largest budget; line),
    the front beyond it (grey), one budget line per budget and its best (star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = front_points(result, budget_ms)
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    try:
        if data["evaluated"]:
            ev_l, ev_a = zip(*data["evaluated"])
            ax.scatter(ev_l, ev_a, s=9, c="#8fa3bf", alpha=0.7, linewidths=0, label=f"evaluated ({len(ev_l)})")
        if data["front"]:
            fl, fa = zip(*data["front"])
            ax.plot(fl, fa, "-o", color="#1f4e9c", ms=3.5, lw=1.4, drawstyle="steps-post", label=f"Pareto front ({len(fl)})")
        if data["front_over"]:
            ol, oa = zip(*data["front_over"])
            ax.plot(ol, oa, "-o", color="#9e9e9e", ms=3.5, lw=1.2, drawstyle="steps-post",
                    label=f"front above the budget ({len(ol)}): what a larger budget buys")
        colors = ["#c0392b", "#d35400", "#8e44ad", "#16a085", "#2c3e50"]
        for i, b in enumerate(b for b in result.best if budget_ms is None or b.budget_ms <= budget_ms):
            c = colors[i % len(colors)]
            ax.axvline(b.budget_ms, color=c, ls="--", lw=1.1, label=f"budget {budget_label(b.budget_ms)} ms")
            ax.plot([b.predicted_latency_ms], [100 * b.predicted_acc], marker="*", ms=13, color=c, mec="black", mew=0.6, ls="none")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def summary(result: SearchResult, paths: dict[str, Path] | dict[str, str] | None = None) -> dict[str, Any]:
    """The `search --json` object (SPEC keys first); best values are those of the first budget given."""
    first = result.best[0]
    if paths is None and result.outputs:
        paths = result.outputs
    d: dict[str, Any] = {}
    if paths is not None:
        d.update(best=str(paths["best"]), pareto=str(paths["pareto"]), plot=str(paths["plot"]), log=str(paths["log"]))
    d.update(
        predicted_latency_ms=first.predicted_latency_ms,
        predicted_acc=first.predicted_acc,
        macs=first.macs,
        budget_ms=first.budget_ms,
        hypervolume=result.hypervolume,
        hv_reference={"acc": result.hv_reference[0], "latency_ms": result.hv_reference[1]},
        evaluations=result.evaluations,
        evaluations_real=result.evaluations_real,
        evaluations_predicted=result.evaluations_predicted,
        front_size=len(result.front),
        min_latency_ms=result.min_latency_ms,
        objectives=result.objectives,
        seconds=round(result.seconds, 3),
        processes=result.processes,
    )
    if result.val_images is not None:
        d.update(val_images=result.val_images, val_images_total=result.val_images_total, calib_images=result.calib_images)
    if result.predictor is not None:
        d["predictor"] = {"name": result.predictor.name, "kendall_tau": result.predictor.kendall_tau,
                          "rmse": result.predictor.rmse, "n_train": result.predictor.n_train}
    if len(result.best) > 1:
        d["budgets"] = [
            {"budget_ms": b.budget_ms, "predicted_latency_ms": b.predicted_latency_ms, "predicted_acc": b.predicted_acc,
             "macs": b.macs, **({"best": str(paths[f"best@{budget_label(b.budget_ms)}"])} if paths is not None else {})}
            for b in result.best
        ]
    return d


def write_outputs(result: SearchResult, out_dir: str | Path, *, title: str, force: bool = False) -> dict[str, Path]:
    """Write every output file atomically; returns the paths by key (best, pareto, plot, log, best@<b>)."""
    paths = check_outputs(out_dir, result.budgets_ms, force)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_json(paths["pareto"], [e.pareto_record() for e in result.front])
    for b in result.best:
        key = f"best@{budget_label(b.budget_ms)}"
        if key in paths:
            write_json(paths[key], b.subnet.model_dump())
    plot_front(result, paths["plot"], title)
    lines = list(result.log)
    lines.append("")
    lines.append("best subnet per budget:")
    for b in result.best:
        lines.append(f"  {budget_label(b.budget_ms)} ms: accuracy {100 * b.predicted_acc:.2f} %, predicted latency "
                     f"{b.predicted_latency_ms:.4g} ms, {b.macs / 1e6:.2f} MMACs: {b.subnet.to_json()}")
    write_text(paths["log"], "\n".join(lines) + "\n")
    write_json(paths["best"], result.best[0].subnet.model_dump())  # last: its presence marks a finished search
    return paths

"""report.md: what was built, how it measured, how long each stage took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.generate.delivery import INT8_MAX_DROP, MAX_EXPORT_ATTEMPTS, int8_keeps_accuracy
from hwnas.generate.results import LOOKAHEAD, GenerateResult
from hwnas.generate.time_budget import MIN_SUPERNET_EPOCHS, TRAIN_SHARE


def architecture_rows(space, subnet) -> list[list[str]]:
    """One row per layer group of the chosen network: what a reader needs to rebuild it."""
    from hwnas.space import build_plan

    plan = build_plan(space, subnet)
    rows = [["stem", "conv", str(plan.stem.kernel), "-", f"{plan.stem.in_channels} → {plan.stem.out_channels}",
             str(plan.stem.stride), "-", plan.stem.act, f"{plan.stem.in_size}×{plan.stem.in_size}"]]
    b_iter = iter(plan.blocks)
    if space.first_block is not None:
        b = next(b_iter)
        rows.append(["first", "dw-sep", str(b.kernel), "1", f"{b.in_channels} → {b.out_channels}", str(b.stride),
                     "yes" if b.se else "no", b.act, f"{b.in_size}×{b.in_size}"])
    for i, d in enumerate(subnet.depths):
        for j in range(d):
            b = next(b_iter)
            rows.append([f"stage {i + 1}", f"MBConv {j + 1}", str(b.kernel), str(b.expand),
                         f"{b.in_channels} → {b.mid_channels} → {b.out_channels}", str(b.stride), "yes" if b.se else "no",
                         b.act, f"{b.in_size}×{b.in_size}"])
    h = plan.head
    rows.append(["head", "1×1, pool" + (", 1×1" if h.feature_mix else "") + ", linear", "1", "-",
                 f"{h.in_channels} → {h.final_expand}" + (f" → {h.feature_mix}" if h.feature_mix else "") + f" → {h.num_classes}",
                 "-", "-", h.act, f"{h.in_size}×{h.in_size}"])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(res: GenerateResult, exp: Any, tab: Any, space: Any, search: Any, cfg: Any,
                  mean: list[float], std: list[float]) -> str:
    """report.md: what was built, how it measured, how long each stage took; honest about misses."""
    from hwnas import __version__

    sub = space.validate_subnet(res.subnet)
    fp = tab.fingerprint
    precision = "INT8 (QDQ)" if tab.int8 else "fp32"
    over = (res.measured_latency_ms - res.budget_ms) / res.budget_ms
    verdict = ("meets the budget" if res.measured_latency_ms <= res.budget_ms
               else f"is {over:.1%} over the budget" + ("" if res.within_budget else
                                                        ": no candidate measured within it, so it is delivered only under this name"))
    pred_err = (res.measured_latency_ms - res.predicted_latency_ms) / res.predicted_latency_ms if res.predicted_latency_ms else 0.0
    lines = [
        f"# hwnas model report: {res.budget_ms:g} ms budget",
        "",
        (f"`{Path(res.onnx).name}` ({precision}) is the most accurate subnet of `{res.space}` that the search found under "
         if res.route == "supernet" else
         f"`{Path(res.onnx).name}` ({precision}) is a subnet of `{res.space}` chosen without a supernet (the time budget "
         f"was too short to train one; see below) and trained from scratch, under ")
        + f"**{res.budget_ms:g} ms**, trained and validated on `{res.data}`. Measured, it takes "
        f"**{res.measured_latency_ms:.3f} ms** per image and {verdict}; validation accuracy through ONNX Runtime is "
        f"**{res.val_acc:.2%}**.",
        "",
        "## Result",
        "",
        _md_table(["", "value"], [
            ["latency budget", f"{res.budget_ms:g} ms"],
            ["measured latency (ONNX Runtime, median, batch 1)", f"{res.measured_latency_ms:.3f} ms"],
            ["predicted latency (table)", f"{res.predicted_latency_ms:.3f} ms ({pred_err:+.1%} measured vs predicted)"],
            ["validation accuracy, ONNX Runtime", f"{res.val_acc:.2%} on {exp.val_images} images"],
            ["validation accuracy, PyTorch (fp32)", f"{res.val_acc_torch:.2%}"],
            ["predicted accuracy (search)", f"{res.predicted_acc:.2%}" if res.predicted_acc is not None else "-"],
            ["max abs difference ONNX Runtime vs PyTorch", f"{res.max_abs_diff:.2e}"],
            ["resolution", f"{sub.resolution}×{sub.resolution}"],
            ["MACs", f"{res.macs / 1e6:.2f} M"],
            ["parameters", f"{res.params / 1e6:.3f} M"],
        ]),
        "",
    ]
    if exp.int8_onnx:
        drop = exp.int8_acc_change
        lines += [f"INT8: accuracy {exp.int8_val_acc:.2%} ({drop:+.2%} vs the fp32 model of the same subnet, "
                  f"{exp.val_acc:.2%}), latency {exp.int8_measured_latency_ms:.3f} ms vs {exp.measured_latency_ms:.3f} ms fp32"
                  + (f" (`{Path(res.fp32_onnx).name}` is the fp32 model)." if res.fp32_onnx else ".")
                  + ("" if int8_keeps_accuracy(drop) else f" **The INT8 model loses more than {100 * INT8_MAX_DROP:g} point(s) of accuracy.**"), ""]
    if res.int8_finalists:
        lines += [(f"INT8 finalists: the {len(res.int8_finalists)} front member(s) within the budget that the search rated most "
                   f"accurate were quantised (supernet weights, before fine-tuning) and scored through ONNX Runtime on "
                   f"{res.int8_finalists[0].val_images} validation images; generate started from the best INT8 one:"), "",
                  _md_table(["finalist", "predicted ms", "search acc", "fp32 acc", "INT8 acc", "started here"],
                            [[str(i + 1), f"{f.predicted_latency_ms:.3f}", f"{f.predicted_acc:.2%}", f"{f.fp32_acc:.2%}",
                              f"{f.int8_acc:.2%}", "yes" if f.start else ""] for i, f in enumerate(res.int8_finalists)]), ""]
    if res.ort:
        lines += [f"ONNX Runtime Mobile: `{Path(res.ort).name}` (outputs checked equal to the ONNX model's) and "
                  f"`{Path(res.ort_config).name}` (operators for a reduced build: `--include_ops_by_config`).", ""]
    n_exp = sum(a.kind == "export" for a in res.attempts)
    lines += ["## Budget check", "",
              f"Candidates were timed as deployed (`check`: the graph with untrained weights, before "
              f"{'training' if res.route == 'direct' else 'fine-tuning'}; `export`: the "
              f"delivered file, measured with the tables' protocol and again as an application calls it, the slower counts); {n_exp} export attempt(s), at most {MAX_EXPORT_ATTEMPTS}"
              + (f"; an INT8 model losing more than {100 * INT8_MAX_DROP:g} point(s) of accuracy sends generate to the next candidate" if res.precision == "int8" else "")
              + ":", "",
              _md_table(["attempt", "kind", "predicted ms", "measured ms", "predicted acc", "INT8 acc change", "within budget", "delivered"],
                        [[str(i + 1), a.kind, f"{a.predicted_latency_ms:.3f}", f"{a.measured_latency_ms:.3f}",
                          f"{a.predicted_acc:.2%}" if a.predicted_acc is not None else "-",
                          f"{a.int8_acc_change:+.2%}" if a.int8_acc_change is not None else "-",
                          "yes" if a.within_budget else "no", "yes" if a.accepted else ""]
                         for i, a in enumerate(res.attempts)]), ""]
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in res.warnings] + [""]
    lines += [
        "## Architecture",
        "",
        _md_table(["stage", "block", "kernel", "expand", "channels", "stride", "SE", "activation", "input"], architecture_rows(space, sub)),
        "",
        "Input: `input`, float32 [batch, 3, {r}, {r}]: RGB scaled to 0..1, resized (bilinear) to {r}×{r}, minus mean "
        "{m}, divided by std {s}. Output: `logits` [batch, {c}]. These are also in the model's metadata "
        "(`hwnas.preprocessing`).".format(r=sub.resolution, m=[round(v, 4) for v in mean],
                                            s=[round(v, 4) for v in std], c=space.num_classes),
        "",
        "## Accuracy–latency trade-off",
        "",
        "![Pareto front](pareto.png)",
        "",
        *([f"The search looked up to {LOOKAHEAD:g}× the budget so the plot shows what a larger budget would buy: front "
           f"members above the {res.budget_ms:g} ms budget are greyed (`best-{LOOKAHEAD * res.budget_ms:g}ms.json` is the best "
           "subnet there).", ""] if search is not None else []),
        (f"The search scored {search.evaluations_real} subnets on "
         + (f"{search.val_images} of the {search.val_images_total} validation images (a fixed, class-stratified subset)"
            if search.val_images is not None and search.val_images_total is not None and search.val_images < search.val_images_total
            else "the validation data")
         + f" (and {search.evaluations_predicted} "
         f"with its accuracy predictor); the front has {len(search.front)} members (`pareto.json`), hypervolume "
         f"{search.hypervolume:.4g}." if search is not None else
         f"No search: {res.finetune.get('candidates', 0) if res.finetune else 0} subnets at the data's resolution are predicted "
         f"within the budget (the plot shows them by latency and MACs); without a supernet nothing predicts their accuracy, so "
         f"the largest that trains at least {res.finetune.get('min_epochs', 0) if res.finetune else 0:g} epochs in the time "
         f"left was trained, and `pareto.json` holds it with its measured accuracy."),
        "",
        "## Time per stage",
        "",
        _md_table(["stage", "seconds", "cache"], [
            ["load data", f"{res.stage_seconds.get('data', 0):.1f}", "-"],
            ["latency table (profile)", f"{res.stage_seconds.get('profile', 0):.1f}", res.cache["table"]],
            ["supernet (train)", f"{res.stage_seconds.get('train', 0):.1f}", res.cache["supernet"]],
            ["plan (is a supernet worth training?)", f"{res.stage_seconds.get('plan', 0):.1f}", "-"],
            ["direct: choose, measure, train from scratch", f"{res.stage_seconds.get('direct', 0):.1f}", "-"],
            ["search", f"{res.stage_seconds.get('search', 0):.1f}", "-"],
            ["INT8 finalists (score quantised)", f"{res.stage_seconds.get('int8_finalists', 0):.1f}", "-"],
            ["measure candidates", f"{res.stage_seconds.get('measure', 0):.1f}", "-"],
            ["fine-tune the chosen subnet", f"{res.stage_seconds.get('finetune', 0):.1f}", "-"],
            ["export + checks + measurement", f"{res.stage_seconds.get('export', 0):.1f}", "-"],
            ["report", f"{res.stage_seconds.get('report', 0):.1f}", "-"],
            ["total", f"{res.seconds:.1f}", ""],
        ]),
        "",
        "## Provenance",
        "",
        f"- machine: {fp.cpu_model}, {fp.cores} cores, {fp.os}; ONNX Runtime {fp.onnxruntime}, {fp.provider}, "
        f"{fp.threads} thread(s), batch {fp.batch}",
        f"- latency table: `{res.table}` ({res.cache['table']})",
        (f"- supernet: `{res.supernet}` (given: not trained by this run)" if res.cache["supernet"] == "given" else
         f"- supernet: `{res.supernet}` ({res.cache['supernet']}), {cfg.schedule} schedule"
         + (f" planned for {TRAIN_SHARE:.0%} of the {res.time_budget_s:.0f} s time budget" if res.time_budget_s else
            f", {cfg.total_epochs:g} epochs") if res.route == "supernet" else
         f"- no supernet (direct route): one would have trained {res.finetune['supernet_epochs']:.2f} epochs in "
         f"{TRAIN_SHARE:.0%} of the {res.time_budget_s:.0f} s time budget, fewer than the {MIN_SUPERNET_EPOCHS} its "
         f"accuracies need"),
        (f"- training: {res.finetune['seconds']:.0f} s, {res.finetune['epochs']:.2f} epochs from scratch "
         f"(lr {res.finetune['recipe']['lr']})" if res.route == "direct" else
         f"- fine-tuning: {res.finetune['seconds']:.0f} s, {res.finetune['epochs']:.2f} epochs from the inherited weights"
         if res.finetune else "- no fine-tuning: the model has the supernet's weights"),
        f"- hwnas {__version__}",
        "",
    ]
    return "\n".join(lines)

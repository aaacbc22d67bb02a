"""`generate --int8`: the front's finalists scored quantised, so the start is the one that keeps most accuracy."""

from __future__ import annotations

from typing import Any

from hwnas.generate.results import Int8Finalist
from hwnas.progress import log as _log

INT8_FINALISTS = 3
"""With --int8, this many front members within the budget (those the search rates most accurate, fp32 with the
supernet's weights) are quantised and scored through ONNX Runtime before the export, and generate starts from the
best INT8 one: quantisation costs some subnets more accuracy than others, so the fp32 ranking alone can ship one
that quantises badly. Few, because each costs a BN recalibration, a quantisation and two validation passes."""


def int8_finalists(front: list[Any], n: int = INT8_FINALISTS) -> list[Any]:
    """The `n` members of `front` (already within the budget) that the search rates most accurate, in its
    order (ties: the faster first, as the search picks its best)."""
    return sorted(front, key=lambda e: (-e.predicted_acc, e.predicted_latency_ms))[:n]


def score_finalists(net: Any, ds: Any, finalists: list[Any], *, val_images: int | None, seed: int,
                    progress: bool) -> list[Int8Finalist]:
    """Score each finalist quantised (`score_int8`, on the search's validation images) and mark as `start` the
    one with the best INT8 accuracy (ties: the earlier, i.e. the search's order)."""
    from hwnas.export import int8_score

    scored: list[Int8Finalist] = []
    for i, e in enumerate(finalists):
        s = int8_score.score_int8(net, e.subnet, ds, val_images=val_images, seed=seed)
        scored.append(Int8Finalist(subnet=e.subnet.model_dump(mode="json"), predicted_latency_ms=e.predicted_latency_ms,
                                   predicted_acc=e.predicted_acc, fp32_acc=s.fp32_acc, int8_acc=s.int8_acc,
                                   val_images=s.val_images))
        _log(progress, f"int8: finalist {i + 1} predicted {e.predicted_latency_ms:.3f} ms, search acc {e.predicted_acc:.4f}: "
                       f"fp32 acc {s.fp32_acc:.4f}, int8 acc {s.int8_acc:.4f} ({s.val_images} validation images)")
    if not scored:
        return scored
    best = max(range(len(scored)), key=lambda i: (scored[i].int8_acc, -i))
    scored[best] = scored[best].model_copy(update={"start": True})
    return scored

"""How generate spends a `--time-budget`: the supernet's share, a search sized to its share, and the
fine-tuning of the chosen subnet with what is left."""

from __future__ import annotations

import time
from typing import Any

from hwnas.progress import log as _log

TRAIN_SHARE = 0.4
"""Share of generate's --time-budget that plans the supernet's training."""
SEARCH_SHARE = 0.1
"""Share of it the search may use (its size is set from the measured cost of one evaluation)."""
MIN_FINETUNE_S = 5.0
MIN_SUPERNET_EPOCHS = 8
"""Epochs the supernet must get in its share of --time-budget for generate to train one (below: the direct
route), and below which a trained one is reported as weakly ranked. Below it, one network trained for the whole
budget gets several times the epochs a supernet's subnet would, and its choice would be fine-tuned from weights
that are still far from trained. On cifar10-small on 2 CPU cores a supernet's share passes it from about 53
minutes of --time-budget; a GPU (15 epochs in 213 s on an H200) passes easily. At 18.7 epochs today's small-image
default trails the same networks trained alone for as many epochs by 1.49 points (ten seeds, BENCHMARKS.md)."""
SEARCH_VAL_IMAGES = 1000
"""Validation images that score a subnet during a time-budgeted search (all of them at export)."""


def sized_search(net: Any, ds: Any, seconds: float, val_images: int) -> Any:
    """A search config whose real evaluations fit `seconds`, from the measured cost of one evaluation."""
    from hwnas.search import SearchConfig
    from hwnas.search.pipeline import DEFAULT_CALIB_IMAGES
    from hwnas.data import calibration_subset
    from hwnas.train import evaluate_subnet

    small = ds.with_val_subset(val_images)
    calib = calibration_subset(ds, DEFAULT_CALIB_IMAGES)
    evaluate_subnet(net, net.space.smallest(), small, calib=calib)  # warm-up
    t = time.perf_counter()
    evaluate_subnet(net, net.space.largest(), small, calib=calib)  # the dearest evaluation: an upper bound
    per_eval = max(time.perf_counter() - t, 1e-3)
    # the predictor fits and NSGA-II runs take the rest: about 20% of the search. A round's NSGA-II gets 5% of
    # it (at least 1 s: a few dozen generations on the predictor), so that a share of a few seconds is kept too
    n = max(8, int(0.8 * seconds / per_eval))
    init = max(6, int(0.55 * n))
    iterations = 3 if n >= 40 else 2
    per_iter = max(2, (n - init) // iterations)
    return SearchConfig(init_samples=init, iterations=iterations, candidates_per_iteration=per_iter,
                        cv_folds=min(5, max(2, init // 4)), predictors=["ridge", "gbt"],
                        time_limit_s=max(1.0, 0.05 * seconds), generations=40)


def export_reserve_s(net: Any, ds: Any, subnet: Any) -> float:
    """Seconds the final export is expected to take (BN recalibration, PyTorch and ONNX Runtime passes
    over the validation images, the latency measurement), from one timed forward pass."""
    from hwnas.export.core import CALIBRATION_IMAGES
    from hwnas.train.evaluate import forward_seconds_per_image

    n = min(256, int(ds.val_x.shape[0]))
    per_image = forward_seconds_per_image(net.extract(subnet), ds.val_x[:n], subnet.resolution, ds.mean, ds.std)
    images = CALIBRATION_IMAGES + 2 * int(ds.val_x.shape[0])
    return 5.0 + 1.5 * per_image * images


def finetune_subnet(net: Any, subnet: Any, ds: Any, seconds: float, *, device: str | None, progress: bool,
                    flip: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train the chosen subnet further for `seconds`, starting from its inherited weights and
    with the FINETUNE_RECIPE (mirroring images only when `flip`: the training config's choice, off for
    digits); returns (network, summary). Threads are generate()'s (one on CPU)."""
    from hwnas.train.standalone import StandaloneRecipe, train_network
    from hwnas.train.distributed import resolve_device

    from hwnas.data import calibration_subset
    from hwnas.train import recalibrate_bn

    dev = resolve_device(device)
    student = net.extract(subnet)
    # start from this subnet's own BN statistics (the supernet's are shared); training then keeps them
    # current, and the export keeps them (recalibrating a trained network's statistics cost 3 points)
    recalibrate_bn(student, calibration_subset(ds), subnet.resolution, ds.mean, ds.std)
    recipe = StandaloneRecipe(**FINETUNE_RECIPE, flip=flip)
    teacher = net.extract(net.space.largest(subnet.resolution)) if recipe.kd_weight > 0 else None
    _log(progress, f"finetune: the chosen subnet for {seconds:.0f} s (lr {recipe.lr}"
                   + (", distilled from the largest subnet)" if teacher is not None else ")"))
    out = train_network(student, ds, resolution=subnet.resolution, time_budget_s=seconds, recipe=recipe,
                        teacher=teacher, device=dev, evaluate=False, progress=progress, label="finetune")
    student = student.cpu().eval()
    summary = {"seconds": round(out["seconds"], 1), "epochs": round(out["epochs"], 2), "iters": out["iters"],
               "images_per_s": round(out["images_per_s"], 1), "recipe": recipe.model_dump()}
    return student, summary


FINETUNE_RECIPE: dict[str, Any] = dict(lr=0.05, kd_weight=0.0, warmup_fraction=0.02)
"""Fine-tuning from inherited weights: half the from-scratch learning rate, labels only. Distilling from
the supernet's largest subnet was measured to hurt at CPU scale, where that teacher is itself far from
trained (BENCHMARKS.md: 22.3% with it against 36.0% without, same subnet, same 200 s)."""

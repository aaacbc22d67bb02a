"""`search_supernet`: the real search — a trained supernet scores subnets, a latency table prices them.

Accuracy of a subnet = the supernet's inherited weights, BatchNorm statistics
recalibrated on a fixed subset of training images (`calib_images`, default 500: BN
recalibration dominates the cost of one evaluation, and 500 images rank subnets
about as well as OFA's 2000 on small data), top-1 on the validation split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.errors import UserError
from hwnas.search.engine import Objective, ObjectiveSpec, check_budgets, run_search
from hwnas.search.models import SearchConfig, SearchResult
from hwnas.search.report import check_outputs, write_outputs

DEFAULT_CALIB_IMAGES = 500


def table_title(space_name: str, table: Any) -> str:
    fp = table.fingerprint
    threads = f"{fp.threads} thread{'s' if fp.threads != 1 else ''}"
    return f"{space_name} on {fp.cpu_model} ({fp.provider}, {threads}{', int8' if table.int8 else ''})"


def search_supernet(
    ckpt_path: str | Path,
    table_path: str | Path,
    budgets: Sequence[float],
    data: str | None,
    out_dir: str | Path,
    *,
    force: bool = False,
    seed: int = 0,
    config: SearchConfig | None = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    device: str | None = "cpu",
    extra_objectives: Sequence[str] = (),
    second_table: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    val_images: int | None = None,
) -> SearchResult | None:
    """Search a trained supernet under the budgets and write best.json, pareto.json, pareto.png, search.log.

    `data` None means the DATA the checkpoint was trained on. `val_images` scores subnets on a fixed,
    class-stratified subset of that many validation images (default: all). `device` None: CUDA when
    present, else CPU. The written files are in `result.outputs` (keys best, pareto, plot, log, and
    best@<budget> with several budgets). Under torchrun every process calls this: rank 0 searches and
    writes, the others score their share of each batch of subnets and return None.
    UserError for bad input (before anything is written).
    """
    import os

    from hwnas.train.distributed import cpu_threads, init_distributed, resolve_device

    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    # as train and generate: the idle CPUs, shared out among torchrun's processes (more threads than free
    # cores scored 5x slower on a shared 2-core machine: BENCHMARKS.md); OMP_NUM_THREADS, when set, decides
    with cpu_threads(dev):
        dctx = init_distributed(dev)
        clean = False
        try:
            result = _search(ckpt_path, table_path, budgets, data, out_dir, force=force, seed=seed, config=config,
                             calib_images=calib_images, device=dev, extra_objectives=extra_objectives,
                             second_table=second_table, log=log if dctx.is_main else None, val_images=val_images,
                             dctx=dctx)
            clean = True
            return result
        finally:
            dctx.close(clean)


def _search(
    ckpt_path: str | Path,
    table_path: str | Path,
    budgets: Sequence[float],
    data: str | None,
    out_dir: str | Path,
    *,
    force: bool,
    seed: int,
    config: SearchConfig | None,
    calib_images: int,
    device: Any,
    extra_objectives: Sequence[str],
    second_table: str | Path | None,
    log: Callable[[str], None] | None,
    val_images: int | None,
    dctx: Any,
) -> SearchResult | None:
    import torch

    from hwnas.data import calibration_subset, load_dataset
    from hwnas.latency import latency_model, load_table
    from hwnas.search.scoring import (
        EtaReporter,
        all_reduce_scores,
        broadcast_batch,
        planned_real_evaluations,
        shard_by_cost,
    )
    from hwnas.space import macs
    from hwnas.train import evaluate_subnet, load_supernet

    say = log or (lambda m: None)
    budgets = [float(b) for b in budgets]
    check_outputs(out_dir, budgets, force)
    if calib_images < 1:
        raise UserError(f"--calib-images must be >= 1, got {calib_images}")
    if val_images is not None and val_images < 1:
        raise UserError(f"--val-images must be >= 1, got {val_images}")
    net, meta = load_supernet(ckpt_path, map_location=device)
    space = meta.get_space()
    table = load_table(table_path, space)
    predictor = latency_model(table, space)
    check_budgets(budgets, predictor.min_latency_ms())  # fail fast, before loading data
    extras: list[ObjectiveSpec] = list(extra_objectives)
    if second_table is not None:
        t2 = load_table(second_table, space)
        p2 = latency_model(t2, space)
        extras.append(Objective("latency2_ms", p2.predict_genomes))
        if set(p2.resolutions) != set(predictor.resolutions):
            common = sorted(set(p2.resolutions) & set(predictor.resolutions))
            if not common:
                raise UserError(f"--table2 {second_table}: shares no resolution with --table {table_path}")
            predictor = _RestrictedPredictor(predictor, common)
    data_spec = data if data is not None else meta.data
    ds = load_dataset(data_spec)
    if ds.num_classes != space.num_classes:
        raise UserError(
            f"--data {data_spec}: has {ds.num_classes} classes but the supernet {ckpt_path} was trained for "
            f"{space.num_classes} (on '{meta.data}')"
        )
    val_total = int(ds.val_x.shape[0])
    if val_images is not None:
        ds = ds.with_val_subset(val_images, seed=seed)
    n_val = int(ds.val_x.shape[0])
    calib = calibration_subset(ds, n=calib_images, seed=seed)
    world = dctx.world_size
    cfg = config or SearchConfig()
    eta = EtaReporter(planned_real_evaluations(cfg), say, processes=world)
    n_eval = [0]
    t_eval = [0.0]

    def score_batch(subnets: list) -> np.ndarray:
        """Every rank: score this rank's shard of `subnets`; all ranks get the whole array."""
        t = time.perf_counter()
        shards = shard_by_cost([float(macs(space, s)) for s in subnets], world)
        mine = shards[dctx.rank]
        out = np.zeros(len(subnets), dtype=np.float64)
        with torch.no_grad():
            for j, i in enumerate(mine):
                out[i] = evaluate_subnet(net, subnets[i], ds, calib=calib, device=device)
                if dctx.is_main:  # progress of the whole batch, as seen from rank 0's share
                    eta.update(n_eval[0] + len(subnets) * (j + 1) / len(mine), t_eval[0] + time.perf_counter() - t)
        out = all_reduce_scores(dctx, out, device)
        n_eval[0] += len(subnets)
        t_eval[0] += time.perf_counter() - t
        if dctx.is_main:
            eta.update(n_eval[0], t_eval[0], force=not eta.messages)
        return out

    if not dctx.is_main:  # a worker: score what rank 0 sends until it says the search is done
        while (batch := broadcast_batch(dctx, None)) is not None:
            score_batch([space.validate_subnet(d) for d in batch])
        return None

    def accuracy_fn(subnets: list) -> np.ndarray:
        if dctx.active:
            broadcast_batch(dctx, [s.model_dump() for s in subnets])
        return score_batch(subnets)

    subset = (f"{n_val} of {val_total} validation images, a class-stratified subset (seed {seed})"
              if n_val < val_total else f"{n_val} validation images")
    procs = f"; scoring on {world} processes ({device.type})" if world > 1 else ""
    say(f"searching {space.name} supernet {ckpt_path} on {data_spec} ({subset}, "
        f"BN recalibration on {int(calib.shape[0])} training images) with table {table_path}{procs}")
    try:
        result = run_search(space, accuracy_fn, predictor, budgets, seed=seed, config=config, extra_objectives=extras, log=log)
    finally:
        broadcast_batch(dctx, None)  # release the workers, also when the search failed
    result.val_images, result.val_images_total, result.calib_images, result.processes = n_val, val_total, int(calib.shape[0]), world
    result.log.append(f"real evaluations took {t_eval[0]:.1f}s ({1000 * t_eval[0] / max(n_eval[0], 1):.0f} ms each"
                      f"{f' on {world} processes' if world > 1 else ''}); data {data_spec}, val_images {subset}, "
                      f"calib_images {int(calib.shape[0])}, checkpoint {ckpt_path}, table {table_path}")
    result.log.extend(eta.messages)
    paths = write_outputs(result, out_dir, title=table_title(space.name, table), force=force)
    result.outputs = {k: str(v) for k, v in paths.items()}
    return result


class _RestrictedPredictor:
    """A LatencyModel limited to resolutions both tables cover (for a second-device objective)."""

    def __init__(self, inner: Any, resolutions: list[int]) -> None:
        self._inner, self.resolutions = inner, list(resolutions)

    def predict(self, subnet: Any) -> float:
        return self._inner.predict(subnet)

    def predict_genomes(self, X: np.ndarray) -> np.ndarray:
        return self._inner.predict_genomes(X)

    def min_latency_ms(self) -> float:
        return self._inner.min_latency_ms() if self.resolutions == self._inner.resolutions else _min_over(self)


def _min_over(p: "_RestrictedPredictor") -> float:
    from hwnas.search.engine import _min_latency_genome
    from hwnas.search.operators import GeneSpace

    gs = GeneSpace.for_space(p._inner.space, p.resolutions)
    return float(p.predict_genomes(_min_latency_genome(gs, p.predict_genomes)[None, :])[0])

"""The latency tables and supernets generate keeps under `$XDG_CACHE_HOME/hwnas/{tables,supernets}`.

Each entry is named by a digest of everything that decides its content and is moved into place only when
complete, so an interrupted run never leaves an entry that a later run would trust."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hwnas.cache import cache_dir, digest
from hwnas.errors import UserError
from hwnas.fileio import format_validation_error
from hwnas.progress import log as _log


def table_cache_key(space, *, threads: int, provider: str, int8: bool, resolutions: list[int] | None,
                    options: Any = None) -> dict[str, Any]:
    """Everything that decides a latency table: the space, this machine, how it is measured, the code version.
    `options` (a ProfileOptions) joins the key only when given, so the tables profiled without any keep
    their names."""
    from hwnas import __version__
    from hwnas.runtime import ortbench

    key = {"space": space.to_file_dict(), "machine": ortbench.fingerprint(provider, threads, 1), "threads": threads,
           "provider": provider, "int8": int8, "resolutions": resolutions, "hwnas": __version__}
    if options is not None:
        key["options"] = options.model_dump(mode="json")
    return key


def supernet_cache_key(space, data_fingerprint: str, config, time_budget_s: float | None = None) -> dict[str, Any]:
    """Everything that decides the trained weights: space, data bytes, training config, the time budget
    its epochs are planned for (the plan itself is stored in the checkpoint), code version."""
    from hwnas import __version__

    key = {"space": space.to_file_dict(), "data": data_fingerprint, "config": config.model_dump(mode="json"), "hwnas": __version__}
    if time_budget_s is not None:
        key["time_budget_s"] = round(float(time_budget_s), 3)
    return key


def cached_table(space, *, threads: int = 1, provider: str = "CPUExecutionProvider", int8: bool = False,
                 resolutions: list[int] | None = None, progress: bool = True,
                 options: dict[str, Any] | None = None) -> tuple[Path, bool]:
    """(path, hit): the cached table for this machine, profiling it first on a miss. `options`: ProfileOptions
    fields (tests and benchmarks measure less; the defaults otherwise)."""
    from hwnas.latency import ProfileOptions, load_table

    opts = None
    if options is not None:
        try:
            opts = ProfileOptions.model_validate(options)
        except ValidationError as e:
            raise UserError(format_validation_error("profile options", e)) from None
    key = digest(table_cache_key(space, threads=threads, provider=provider, int8=int8, resolutions=resolutions,
                                 options=opts))
    path = cache_dir("tables") / f"{space.name}-{key}.json"
    if path.is_file():
        try:
            cached = load_table(path, space)
            if cached.noise is None or cached.noise.trusted:
                return path, True
            _log(progress, f"note: the cached table was measured on a busy machine ({cached.noise.reason}); measuring again")
        except UserError as e:  # damaged cache entry: measure again rather than fail
            _log(progress, f"note: ignoring a damaged cached table ({e})")
    from hwnas.latency import profile_space

    _log(progress, f"profile: measuring every distinct block of '{space.name}' on this machine (cached in {path.parent})")
    # TABLE files are written atomically (temporary name, then rename): no half cache entry is possible
    opts = opts or ProfileOptions()
    profile_space(space, path, threads=threads, provider=provider, resolutions=resolutions, int8=int8, progress=progress,
                  protocol=opts.protocol, calibration_subnets=opts.calibration_subnets)
    return path, False


def cached_supernet(space, data: str, data_fingerprint: str, config, *, device: str | None = None,
                    progress: bool = True, time_budget_s: float | None = None) -> tuple[Path, bool]:
    """(path, hit): the cached trained supernet for these inputs, training it first on a miss.

    Training goes to a `.partial` checkpoint that an interrupted run resumes; only a finished
    checkpoint is renamed to the cache name."""
    from hwnas.train import train_supernet

    key = digest(supernet_cache_key(space, data_fingerprint, config, time_budget_s))
    path = cache_dir("supernets") / f"{space.name}-{key}.pt"
    if path.is_file():
        return path, True
    partial = path.with_name(f".{path.stem}.partial.pt")
    what = f"planned for {time_budget_s:.0f} s" if time_budget_s is not None else f"{config.total_epochs:g} epochs"
    _log(progress, f"train: the '{space.name}' supernet on {data}, {config.schedule} schedule, {what} (cached in {path.parent})")
    if partial.is_file():
        try:
            _log(progress, f"train: resuming the interrupted run in {partial}")
            train_supernet(space, data, partial, device=device, resume=True, progress=progress)
        except UserError as e:  # damaged or foreign partial checkpoint: start over
            _log(progress, f"note: cannot resume {partial} ({e}); training from the start")
            partial.unlink(missing_ok=True)
    if not partial.is_file():
        train_supernet(space, data, partial, config=config, device=device, resume=False, progress=progress,
                       time_budget=time_budget_s)
    os.replace(partial, path)
    from hwnas.train.api import metrics_path

    if metrics_path(partial).is_file():
        os.replace(metrics_path(partial), metrics_path(path))
    return path, False

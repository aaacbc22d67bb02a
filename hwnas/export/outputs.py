"""Output-path checks done before any expensive work: refuse to overwrite, refuse unwritable folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hwnas.errors import UserError
from hwnas.fileio import ensure_new_output


def check_writable_dir(folder: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Raise UserError unless `folder` exists (or can be created) and accepts new files.

    Tries a real temporary file rather than trusting os.access (root, ACLs, read-only mounts).
    """
    d = Path(folder).expanduser()
    probe = d
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {d}: {probe} is a file, not a folder")
    if probe.exists():
        try:
            fd, tmp = tempfile.mkstemp(prefix=".hwnas-write-test.", dir=probe)
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise UserError(f"{flag} {d}: folder {probe} is not writable ({e.strerror or e})") from None
    return d


def check_new_file(path: str | os.PathLike[str], force: bool, flag: str = "--out") -> Path:
    """The output file must not exist (unless force) and its folder must be writable."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{flag} {p} is a folder; give a file name such as {p / 'model.onnx'}")
    ensure_new_output(p, force, flag)
    check_writable_dir(p.parent, flag)
    return p


def int8_path(path: str | os.PathLike[str]) -> Path:
    """Where the INT8 model goes next to the fp32 one: model.onnx -> model.int8.onnx."""
    p = Path(path)
    return p.with_name(p.stem + ".int8" + (p.suffix or ".onnx"))

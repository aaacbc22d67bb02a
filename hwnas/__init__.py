"""hwnas: hardware-aware on-device model generator."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hwnas.space import Space, Subnet, load_space

if TYPE_CHECKING:
    from hwnas.supernet import Supernet

__version__ = "0.1.0"


def load_supernet(path: str | os.PathLike[str], map_location: str = "cpu") -> "Supernet":
    """A trained (`hwnas train`) or imported (`hwnas import-ofa`) supernet, in eval mode; `net.space` is its space.

    The checkpoint is read with `torch.load(weights_only=True)`: loading never runs code from the file.
    """
    from hwnas.train.checkpoint import load_supernet as _load

    net, _meta = _load(path, map_location=map_location)
    return net


def __getattr__(name: str):  # lazy: `import hwnas` must not import torch for the space-only commands
    if name == "Supernet":
        from hwnas.supernet import Supernet

        return Supernet
    raise AttributeError(name)


__all__ = ["Space", "Subnet", "Supernet", "load_space", "load_supernet", "__version__"]

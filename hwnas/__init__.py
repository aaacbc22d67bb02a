"""hwnas: hardware-aware on-device model generator."""

from hwnas.space import Space, Subnet, load_space

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import hwnas` must not import torch for the space-only commands
    if name == "Supernet":
        from hwnas.supernet import Supernet

        return Supernet
    raise AttributeError(name)


__all__ = ["Space", "Subnet", "Supernet", "load_space", "__version__"]

"""Elastic layers, the once-for-all supernet and the static networks it extracts."""

from hwnas.supernet.network import Supernet
from hwnas.supernet.static import MBConv, StaticNet, init_weights, zero_init_residual

__all__ = ["MBConv", "StaticNet", "Supernet", "init_weights", "zero_init_residual"]

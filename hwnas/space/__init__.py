"""Search spaces, subnets, their integer encoding and analytic cost."""

from hwnas.space.cost import macs, params, plan_cost
from hwnas.space.encoding import Encoding
from hwnas.space.models import Space, Subnet, make_divisible
from hwnas.space.plan import BlockPlan, HeadPlan, NetPlan, StemPlan, build_plan
from hwnas.space.presets import PRESETS, load_space, with_classes

__all__ = [
    "PRESETS", "BlockPlan", "Encoding", "HeadPlan", "NetPlan", "Space", "StemPlan", "Subnet",
    "build_plan", "load_space", "macs", "make_divisible", "params", "plan_cost", "with_classes",
]

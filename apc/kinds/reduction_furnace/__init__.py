"""The vacuum metallothermic reduction–distillation furnace as a unit kind: the furnace family with
the reduction model's filter tuning, its nominal scenario and its own scenario folder."""

from types import MappingProxyType

from apc.kinds.furnace.kind import FurnaceKind
from apc.kinds.reduction_furnace.filter_tuning import REDUCTION_TUNING

KIND = FurnaceKind("reduction_furnace", default_scenario="reduction_nominal",
                   tunings=MappingProxyType({"reduction_furnace": REDUCTION_TUNING}),
                   model_files=("sim/models/reduction_furnace.py",),
                   scenario_dir="sim/scenarios/furnace/reduction_furnace")
"""The registered reduction-furnace kind."""

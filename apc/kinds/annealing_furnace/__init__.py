"""The coil annealing furnace as a unit kind: the furnace family with the annealer model's filter
tuning and its nominal scenario."""

from types import MappingProxyType

from apc.kinds.annealing_furnace.filter_tuning import ANNEALING_TUNING
from apc.kinds.furnace.kind import FurnaceKind

KIND = FurnaceKind("annealing_furnace", default_scenario="anneal_nominal",
                   tunings=MappingProxyType({"annealing_furnace": ANNEALING_TUNING}),
                   model_files=("sim/models/annealing_furnace.py",))
"""The registered annealing-furnace kind."""

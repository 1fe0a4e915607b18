"""The vacuum induction melting (VIM) furnace as a unit kind: the furnace family with the VIM model's
filter tuning and its nominal scenario."""

from types import MappingProxyType

from apc.kinds.furnace.kind import FurnaceKind
from apc.kinds.vacuum_furnace.filter_tuning import VIM_TUNING

KIND = FurnaceKind("vacuum_furnace", default_scenario="vim_nominal",
                   tunings=MappingProxyType({"vim_furnace": VIM_TUNING}), model_files=("sim/models/vim_furnace.py",))
"""The registered vacuum-furnace kind."""

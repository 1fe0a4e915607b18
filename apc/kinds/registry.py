"""The registered unit kinds: a recipe's ``unit_kind`` → ``module:object`` of its :class:`~apc.kinds.UnitKind`.

Adding a kind is one line here (see ``docs/adding_a_unit_kind.md``).
"""

from collections.abc import Mapping
from types import MappingProxyType

KINDS: Mapping[str, str] = MappingProxyType({
    "electrolysis_cell": "apc.kinds.electrolysis_cell.kind:KIND",
    "vacuum_furnace": "apc.kinds.vacuum_furnace:KIND",
    "annealing_furnace": "apc.kinds.annealing_furnace:KIND",
    "reduction_furnace": "apc.kinds.reduction_furnace:KIND",
})

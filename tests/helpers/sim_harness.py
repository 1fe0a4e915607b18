"""Drive one unit against the in-process simulated plant, cycle by cycle, in virtual time.

No mocks: the unit is built by :func:`apc.assembly.build_sim_unit` (real recipe,
estimator, controller, guard, simulated cell and DCS side). Time is a
:class:`~apc.clock.VirtualClock` set to each slot ``k * period`` before the cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.recipe.loader import LoadedRecipe
from apc.recipe.schema import Recipe
from apc.types import Mode, MvKind
from sim.scenario import SCENARIO_DIR, Scenario, scenario_from_mapping

ROOT = Path(__file__).resolve().parents[2]
ND_RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
SITE_DEMO = ROOT / "recipes" / "site_demo.yaml"
SLOW_FEED_RECIPE = ROOT / "tests" / "fixtures" / "unit" / "nd_cell_slow_feed.yaml"

Record = dict[str, Any]


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the simulated plant I/O does not)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended: not a synchronous in-process cycle")


def scenario(base: str = "nominal", events: Iterable[Mapping[str, Any]] = (), **overrides: Any) -> Scenario:
    """A shipped scenario with ``events`` replaced and top-level keys overridden."""
    data = yaml.safe_load((SCENARIO_DIR / f"{base}.yaml").read_text())
    data["events"] = [dict(e) for e in events]
    data.update(overrides)
    return scenario_from_mapping(data, f"test:{base}")


def event_from_cycle(k: int, period_s: float = 5.0) -> float:
    """``at_h`` of an event whose effect is first seen by the read of cycle ``k``.

    The plant applies an event in the first integration step starting at or
    after ``at_h``; cycle ``k`` reads after the step starting at ``(k-1)·period``.
    Half a period earlier keeps the result clear of float rounding.
    """
    return ((k - 1) * period_s - period_s / 2) / 3600.0


def setpoint_tags(recipe: Recipe) -> frozenset[str]:
    """Tags that carry a move: setpoint/increment tags and sequence tags."""
    tags = {mv.tag for mv in recipe.io.mvs.values()}
    tags |= {mv.sequence_tag for mv in recipe.io.mvs.values() if mv.sequence_tag}
    return frozenset(tags)


def written(rec: Record, tag: str) -> list[float]:
    """Values written to ``tag`` in one cycle record."""
    return [w.value for w in rec.writes if w.tag == tag]


def move_writes(rec: Record, recipe: Recipe) -> list[tuple[str, float]]:
    """(tag, value) of every setpoint/increment/sequence write of one cycle."""
    tags = setpoint_tags(recipe)
    return [(w.tag, w.value) for w in rec.writes if w.tag in tags]


def verdict(rec: Record, name: str) -> str:
    """Validation verdict of input ``name`` in a cycle record."""
    return str(rec.inputs[name].verdict)


class SimUnit:
    """One unit + simulated cell + virtual clock, stepped synchronously."""

    def __init__(
        self,
        recipe: Path | LoadedRecipe = ND_RECIPE,
        scen: Scenario | None = None,
        *,
        seed: int = 7,
        audit: Any = None,
        name: str = "cell-t",
    ) -> None:
        self.loaded = recipe if isinstance(recipe, LoadedRecipe) else load(recipe)
        self.recipe = self.loaded.recipe
        self.clock = VirtualClock()
        self.unit, self.io = build_sim_unit(
            name, self.loaded, scen or scenario(), seed, self.clock,
            audit=audit if audit is not None else null_logger(), with_kpis=False,
        )
        self.period = self.recipe.period_s
        self.k = 0
        self.records: list[Record] = []

    def request(self, mode: Mode, who: str = "pytest", where: str = "test") -> None:
        """Operator mode request at the current virtual time."""
        self.unit.request_mode(mode, who=who, where=where, utc=self.clock.utc())

    def enable(self, mv: str, enabled: bool) -> None:
        """Enable/disable one MV at the current virtual time."""
        self.unit.set_mv_enabled(mv, enabled, who="pytest", where="test", utc=self.clock.utc())

    def step(self, n: int = 1) -> list[Record]:
        """Run ``n`` cycles on their slots; returns their records."""
        out = []
        for _ in range(n):
            slot = self.k * self.period
            self.clock.set(slot)
            rec = run_sync(self.unit.cycle(self.k, slot, self.clock.monotonic(), self.clock.utc()))
            self.k += 1
            self.records.append(rec)
            out.append(rec)
        return out

    def run_until(self, pred: Callable[[Record], bool], max_cycles: int) -> Record:
        """Step until ``pred(record)``; fails the test after ``max_cycles``."""
        for _ in range(max_cycles):
            rec = self.step()[0]
            if pred(rec):
                return rec
        raise AssertionError(f"condition not reached within {max_cycles} cycles (k={self.k})")

    def go_on(self, max_cycles: int = 1000) -> Record:
        """Request ON and run until the unit actually is ON."""
        self.request(Mode.ON)
        return self.run_until(lambda r: r.mode.actual == "ON", max_cycles)


def is_on(rec: Record) -> bool:
    return bool(rec.mode.actual == "ON")


def rate_step(recipe: Recipe, mv: str) -> float:
    """One rate step of a setpoint MV: rate_per_s × period."""
    assert recipe.io.mvs[mv].kind is MvKind.SETPOINT
    return recipe.limits[mv].rate_per_s * recipe.period_s


def same_kpis(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """KPI dicts equal, NaN equal to NaN (and to JSON null)."""
    if set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        nan_x = x is None or (isinstance(x, float) and math.isnan(x))
        nan_y = y is None or (isinstance(y, float) and math.isnan(y))
        if nan_x or nan_y:
            if not (nan_x and nan_y):
                return False
        elif x != y:
            return False
    return True

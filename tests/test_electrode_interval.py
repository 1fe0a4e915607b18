"""An increment MV's minimum interval and sequence survive every mode change, shed, reload and restart.

The unit drives the in-process simulated cell (plant and DCS side) with a controller that proposes
an electrode move every cycle, so the spacing of the moves the DCS acknowledges comes from the unit
alone: its last-move time is a plant fact (written moves, persisted; position changes nobody wrote),
never memory that a mode change clears.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from apc.assembly import load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.compute import Parts
from apc.kinds.electrolysis_cell.assembly import build_estimator
from apc.recipe.loader import LoadedRecipe
from apc.types import Mode, Sample, Write, WriteResult
from apc.unit import Unit
from apc.unit_state import UnitStateFile
from plant_io.sim_plant import SimulatedCellIO
from sim.cell_plant import CellPlant
from tests.helpers.adversary import AlwaysMove
from tests.helpers.sim_harness import ND_RECIPE, run_sync, scenario

MOVE_TAG = "anode.move_cm"
SEQ_TAG = "anode.move_seq"


class DcsTap:
    """The simulated cell's plant I/O, with a log of every electrode move the DCS acknowledged (plant
    time, sequence number) and a switch that makes the DCS report the electrode loop local."""

    def __init__(self, inner: SimulatedCellIO, clock: VirtualClock) -> None:
        self.inner = inner
        self.clock = clock
        self.moves: list[float] = []
        self.sequences: list[float] = []
        self.local_cycles = 0

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def read(self, tags: Sequence[str]) -> Mapping[str, Sample]:
        out = dict(await self.inner.read(tags))
        if self.local_cycles > 0:
            self.local_cycles -= 1
            s = out["anode.remote"]
            out["anode.remote"] = Sample(0.0, s.quality, s.source_ts, s.receive_ts)
        return out

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        results = await self.inner.write(writes)
        for w, r in zip(writes, results):
            if r.ok and w.tag == MOVE_TAG:
                self.moves.append(self.clock.monotonic())
            if r.ok and w.tag == SEQ_TAG:
                self.sequences.append(w.value)
        return results


class Cell:
    """One simulated cell and the unit driving it; :meth:`restart` replaces the unit as a new process
    would (new estimator and controller, monotonic clock from 0, the same state file)."""

    def __init__(self, loaded: LoadedRecipe, state_path: Path | None = None, seed: int = 5) -> None:
        self.loaded = loaded
        self.clock = VirtualClock()
        self.tap = DcsTap(SimulatedCellIO(CellPlant(scenario(), seed), self.clock.monotonic, self.clock.utc),
                          self.clock)
        self.state = None if state_path is None else UnitStateFile(state_path, "cell")
        self.period = loaded.recipe.period_s
        self.k = 0
        self.mono0 = 0.0
        self.unit = self._unit()

    def _unit(self) -> Unit:
        recipe = self.loaded.recipe
        unit = Unit("cell", self.loaded, self.tap, build_estimator(recipe, self.loaded.path.parent),
                    AlwaysMove(("anode_move",)), audit=null_logger(), state=self.state)
        unit.restore(self.clock.utc())
        return unit

    def request(self, mode: Mode) -> None:
        self.unit.request_mode(mode, who="pytest", where="test", utc=self.clock.utc())

    def restart(self) -> None:
        self.mono0 = self.clock.monotonic()
        self.unit = self._unit()
        self.unit.start_mode(Mode.STANDBY, who="site file", where="test", utc=self.clock.utc())

    def reload(self) -> None:
        recipe = self.loaded.recipe
        parts = Parts(build_estimator(recipe, self.loaded.path.parent), AlwaysMove(("anode_move",)))
        self.unit.request_reload(self.loaded, parts, who="pytest", where="test", utc=self.clock.utc())

    def step(self, n: int = 1) -> list[dict[str, object]]:
        out = []
        for _ in range(n):
            slot = self.k * self.period
            self.clock.set(slot)
            t = slot - self.mono0
            out.append(run_sync(self.unit.cycle(self.k, t, t, self.clock.utc())))
            self.k += 1
        return out

    def run_until_moves(self, n: int, max_cycles: int) -> None:
        for _ in range(max_cycles):
            if len(self.tap.moves) >= n:
                return
            self.step()
        raise AssertionError(f"{n} moves not reached within {max_cycles} cycles ({self.tap.moves})")


def gaps(moves: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(moves)]


def shipped() -> LoadedRecipe:
    return load(ND_RECIPE)


def min_interval(loaded: LoadedRecipe) -> float:
    return loaded.recipe.limits["anode_move"].min_interval_s


def test_standby_on_toggle_keeps_the_electrode_interval() -> None:
    """After a move, STANDBY then ON again does not allow a second move before min_interval_s (the reported 600 s / 615 s case)."""
    cell = Cell(shipped())
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.request(Mode.STANDBY)
    cell.step(1)
    cell.request(Mode.ON)
    cell.step(int(min_interval(cell.loaded) / cell.period) + 20)
    assert len(cell.tap.moves) == 2
    assert gaps(cell.tap.moves)[0] >= min_interval(cell.loaded)


def test_shed_and_rerequest_keep_the_electrode_interval() -> None:
    """A shed (the DCS takes the electrode loop local) and an operator's new request do not restart the interval."""
    cell = Cell(shipped())
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.tap.local_cycles = 2
    recs = cell.step(2)
    assert any(r.shed for r in recs)
    cell.request(Mode.ON)
    cell.step(int(min_interval(cell.loaded) / cell.period) + 20)
    assert gaps(cell.tap.moves) and min(gaps(cell.tap.moves)) >= min_interval(cell.loaded)


def test_mv_disable_and_enable_keep_the_electrode_interval() -> None:
    """Disabling and re-enabling the electrode MV right after a move does not allow a second one before the interval."""
    cell = Cell(shipped())
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.unit.set_mv_enabled("anode_move", False, who="pytest", where="test", utc=cell.clock.utc())
    cell.step(1)
    cell.unit.set_mv_enabled("anode_move", True, who="pytest", where="test", utc=cell.clock.utc())
    cell.step(int(min_interval(cell.loaded) / cell.period) + 20)
    assert len(cell.tap.moves) == 2 and gaps(cell.tap.moves)[0] >= min_interval(cell.loaded)


def quick_estimate() -> LoadedRecipe:
    """The shipped recipe whose baseline signals are ready after 5 min (its 600 s warm-up then rules)."""
    loaded = shipped()
    r = loaded.recipe
    filtered = dataclasses.replace(r.estimator.filtered, slope_window_s=300.0, mean_interval_s=60.0)
    return dataclasses.replace(loaded, recipe=dataclasses.replace(
        r, estimator=dataclasses.replace(r.estimator, filtered=filtered)))


def test_recipe_reload_keeps_the_electrode_interval() -> None:
    """A reload in STANDBY (a fresh estimator and controller, a warm-up shorter than the interval) keeps the last move's time."""
    cell = Cell(quick_estimate())
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.request(Mode.STANDBY)
    cell.step(1)
    cell.reload()
    cell.step(1)
    cell.request(Mode.ON)
    cell.step(int(min_interval(cell.loaded) / cell.period) + 200)
    assert len(cell.tap.moves) >= 2 and min(gaps(cell.tap.moves)) >= min_interval(cell.loaded)


def test_restart_keeps_the_electrode_interval_and_sequence(tmp_path: Path) -> None:
    """A process restart right after a move counts the interval from that move (state file) and never reuses a sequence number."""
    cell = Cell(shipped(), tmp_path / "unit_state.json")
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.step(1)
    cell.restart()
    cell.request(Mode.ON)
    cell.step(int(min_interval(cell.loaded) / cell.period) + 200)
    assert len(cell.tap.moves) >= 2 and min(gaps(cell.tap.moves)) >= min_interval(cell.loaded)
    assert cell.tap.sequences == sorted(set(cell.tap.sequences)) and cell.tap.sequences[0] == 1.0


def test_a_move_nobody_wrote_starts_the_interval() -> None:
    """A position change the APC did not write (an operator's jog at the DCS) counts as a move for the interval."""
    cell = Cell(shipped())
    cell.request(Mode.ON)
    cell.run_until_moves(1, 900)
    cell.step(int(min_interval(cell.loaded) / cell.period) - 60)
    jog_t = cell.clock.monotonic()
    cell.tap.inner.plant.move_anode(0.3)
    cell.step(int(min_interval(cell.loaded) / cell.period) + 20)
    after_jog = [t for t in cell.tap.moves if t > jog_t]
    assert after_jog and after_jog[0] - jog_t >= min_interval(cell.loaded) - cell.period


# ---------------------------------------------------------------------- the property

FAST_INTERVAL_S = 600.0


def fast_recipe() -> LoadedRecipe:
    """The shipped recipe with the baseline's filtered estimate (cheap, healthy after 5 min), a 30 s warm-up
    and a 600 s interval."""
    loaded = shipped()
    r = loaded.recipe
    limits = dict(r.limits)
    limits["anode_move"] = dataclasses.replace(limits["anode_move"], min_interval_s=FAST_INTERVAL_S)
    filtered = dataclasses.replace(r.estimator.filtered, slope_window_s=300.0, mean_interval_s=60.0)
    recipe = dataclasses.replace(r, limits=limits, estimator=dataclasses.replace(
        r.estimator, kind="filtered", soft_sensor=None, warmup_s=30.0, filtered=filtered))
    return dataclasses.replace(loaded, recipe=recipe)


FAST = fast_recipe()

operations = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(min_value=1, max_value=80)),
        st.tuples(st.just("request"), st.sampled_from(list(Mode))),
        st.tuples(st.just("shed"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("enable"), st.booleans()),
        st.tuples(st.just("reload"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    min_size=5,
    max_size=30,
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(ops=operations)
def test_no_two_electrode_moves_closer_than_the_interval_whatever_happens(ops: list[tuple[str, object]],
                                                                           tmp_path_factory: object) -> None:
    """Over random sequences of mode requests, sheds, MV disable/enable, reloads and process restarts, every two acknowledged electrode moves are at least min_interval_s apart and sequence numbers never repeat."""
    tmp = tmp_path_factory.mktemp("state")  # type: ignore[attr-defined]
    cell = Cell(FAST, tmp / "unit_state.json")
    cell.request(Mode.ON)
    cell.step(70)
    for op, arg in ops:
        if op == "run":
            cell.step(int(arg))  # type: ignore[call-overload]
        elif op == "request":
            cell.request(arg)  # type: ignore[arg-type]
            cell.step(1)
        elif op == "shed":
            cell.tap.local_cycles = int(arg)  # type: ignore[call-overload]
            cell.step(int(arg))  # type: ignore[call-overload]
        elif op == "enable":
            cell.unit.set_mv_enabled("anode_move", bool(arg), who="pytest", where="test", utc=cell.clock.utc())
            cell.step(1)
        elif op == "reload":
            cell.reload()
            cell.step(1)
        else:
            cell.restart()
            cell.step(1)
        if op == "restart":
            cell.request(Mode.ON)
    cell.request(Mode.ON)
    cell.unit.set_mv_enabled("anode_move", True, who="pytest", where="test", utc=cell.clock.utc())
    cell.step(200)
    assert cell.tap.moves  # the property is not vacuous: the electrode did move
    assert all(g >= FAST_INTERVAL_S for g in gaps(cell.tap.moves)), gaps(cell.tap.moves)
    assert len(set(cell.tap.sequences)) == len(cell.tap.sequences)

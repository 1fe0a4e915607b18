"""Composition root: turns recipes and simulator scenarios into running units.

What differs between unit kinds comes from the recipe's kind (:mod:`apc.kinds`): its recipe
checks, estimator and controller, batch, simulated plant and KPIs. The core modules see only
protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from apc.kinds import get_kind, kind_of
from apc.plant_kpi import PLANT_KPI_HEADER_KEY
from apc.protocols import Clock
from apc.recipe.loader import LoadedRecipe, LoadedSite, load_recipe, load_site
from apc.recipe.overrides import Override
from apc.recipe.schema import Recipe
from apc.recorder import FlightRecorder, NullRecorder, Recorder
from apc.unit import Unit
from plant_io.sim_adapter import SimulatedPlantIO
from sim.models import model_names
from sim.scenario_loader import ComputeFaultFeed

if TYPE_CHECKING:
    from apc.unit_parts import ComputeFactory

ControllerKind = Literal["baseline", "mpc"]


class AssemblyError(ValueError):
    """A recipe asks for something this build cannot assemble."""


def recipe_signal_names(recipe: Recipe) -> Iterable[str]:
    """Names a permissive may use besides inputs and MVs: the kind's estimate signals (raising
    names an unknown model or a section this build cannot use)."""
    if recipe.model.name not in model_names():
        raise ValueError(f"unknown model {recipe.model.name!r}; known: {list(model_names())}")
    return kind_of(recipe).signal_names(recipe)


def recipe_file_problems(recipe: Recipe, recipe_dir: Path) -> list[tuple[str, str]]:
    """Files the recipe names that this build cannot use, as (field path, message)."""
    return list(kind_of(recipe).file_problems(recipe, recipe_dir))


def load(path: str | Path, overrides: Sequence[Override] = ()) -> LoadedRecipe:
    """Load and fully validate one recipe (with every file it names), ``overrides`` applied first."""
    return load_recipe(path, provider=recipe_signal_names, files=recipe_file_problems, overrides=overrides)


def load_site_file(path: str | Path) -> LoadedSite:
    """Load and fully validate a site and its recipes (with every file they name)."""
    return load_site(path, provider=recipe_signal_names, files=recipe_file_problems)


def record_header(name: str, loaded: LoadedRecipe, clock: Clock, controller_kind: str, **extra: Any) -> dict[str, Any]:
    """The flight record's header of a unit: what ran, from which recipe, since when."""
    recipe = loaded.recipe
    return {"unit": name, "unit_kind": recipe.unit_kind, "recipe": recipe.name, "recipe_sha256": loaded.sha256,
            "period_s": recipe.period_s, "started_utc": clock.utc(), "controller": controller_kind,
            "io": io_header(recipe), PLANT_KPI_HEADER_KEY: dict(get_kind(recipe.unit_kind).plant_kpi_config(recipe)),
            **extra}


def io_header(recipe: Recipe) -> dict[str, Any]:
    """The recipe's signals as a record header describes them (``apc export``, ``apc plot``): each
    input's unit, role and model output; each MV's unit, kind, model input and limits at the start."""
    inputs = {n: {"unit": s.unit, "role": s.role, "model_output": s.model_output} for n, s in recipe.io.inputs.items()}
    mvs: dict[str, Any] = {}
    for n, mv in recipe.io.mvs.items():
        lim = recipe.limits.get(n)
        mvs[n] = {"unit": mv.unit, "kind": mv.kind.value, "model_input": mv.model_input,
                  "engineering": None if lim is None else list(lim.engineering),
                  "operator": None if lim is None else list(lim.operator)}
    return {"inputs": inputs, "mvs": mvs}


def build_sim_unit(
    name: str,
    loaded: LoadedRecipe,
    scenario: Any,
    seed: int,
    clock: Clock,
    *,
    audit: Any,
    controller_kind: ControllerKind | None = None,
    record_path: Path | None = None,
    with_kpis: bool = True,
    header_extra: dict[str, Any] | None = None,
    real_time: bool = False,
    state_dir: Path | None = None,
    compute: ComputeFactory | None = None,
    record_factory: RecordFactory | None = None,
) -> tuple[Unit, SimulatedPlantIO[Any, Any]]:
    """A unit controlling an in-process simulated plant of its kind (a furnace with its batch, kept
    under ``state_dir``). ``real_time``: solvers also honour their wall-time budget (``apc run``);
    ``compute``: where its estimator and controller run, default this process."""
    from apc.unit_parts import inline_compute

    recipe = loaded.recipe
    kind = get_kind(recipe.unit_kind)
    problem = kind.scenario_problem(loaded, scenario)
    if problem:
        raise AssemblyError(f"recipe {loaded.path.name}: {problem}")
    io = kind.simulated_io(scenario, seed, clock)
    missing = sorted(recipe.io.tags() - io.tags())
    if missing:
        raise AssemblyError(f"recipe {loaded.path.name} binds tags the simulator does not serve: {missing}")
    ckind = controller_kind or recipe.controller.kind
    batch = kind.new_batch(loaded, ckind, state_dir, (audit.bind(unit=name) if audit is not None else None),
                           clock.monotonic())
    preview = batch.preview if batch is not None else None
    unit_compute = (compute or inline_compute)(name, loaded, ckind, real_time, preview)
    kpi_key, kpi_config, kpi = kind.kpi(recipe, scenario)
    recorder: Recorder = NullRecorder()
    if record_path is not None:
        header = record_header(name, loaded, clock, ckind, seed=seed, scenario=scenario.name,
                               **{kpi_key: kpi_config}, **(header_extra or {}))
        recorder = (record_factory or FlightRecorder)(record_path, header)
    unit = Unit(name, loaded, io, None, None, compute=unit_compute, clock=clock if real_time else None,
                audit=audit, recorder=recorder, kpi=kpi if with_kpis else None, truth=io.truth, batch=batch,
                compute_faults=ComputeFaultFeed(scenario.events))
    return unit, io


RecorderFactory = Callable[[str], Path | None]
RecordFactory = Callable[[Path, dict[str, Any]], Recorder]
"""``factory(path, header)``: the recorder of a unit's flight record (default :class:`FlightRecorder`)."""

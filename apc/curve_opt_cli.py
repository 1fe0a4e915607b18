"""``apc curve-opt RECIPE --terms … --seeds …``: propose a heating curve from simulated batches.

Searches the named terms (see :mod:`apc.curve_opt`) on the training seeds,
then runs the recipe's curve and the proposal on the held-out seeds and prints
both side by side; ``--out`` writes the proposal as a curve file: the recipe's
``curve:`` section as a YAML mapping, checked by the recipe loader's curve
schema before it is written. Nothing here touches a plant.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
import yaml

from apc.curve_opt import CurveOptError, Objective, OptResult, Term, curve_to_mapping, optimise, simulated_kpis
from apc.recipe.curve_schema import CurveSection
from apc.recipe.errors import RecipeError
from apc.seeds import parse_seeds as seed_list

REPORT_KEYS = ("batch_time_min", "energy_kWh", "tracking_rmse_degC", "pressure_violations",
               "core_surface_dT_violations", "soak_complete")


def parse_seeds(text: str, flag: str) -> list[int]:
    """``41-46`` or ``0,1,2``; raises :class:`CurveOptError` naming the flag."""
    try:
        return seed_list(text)
    except ValueError as exc:
        raise CurveOptError(f"{flag} {exc}") from None


def load_curve_file(path: Path) -> CurveSection:
    """A curve file (a recipe's ``curve:`` section as a mapping), validated by the recipe loader's schema."""
    from apc.recipe.loader import convert

    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CurveOptError(f"{path}: cannot read the curve file: {exc}") from None
    if node is None:
        raise CurveOptError(f"{path}: empty curve file")
    return convert(CurveSection, node, "curve", file=str(path))


def write_curve_file(path: Path, result: OptResult, header: Sequence[str]) -> None:
    """Write the proposal with ``header`` as comments, then read it back through the schema."""
    if not path.parent.is_dir():
        raise CurveOptError(f"--out {path}: folder {path.parent} does not exist")
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(curve_to_mapping(result.curve), sort_keys=False, default_flow_style=None, width=110)
    path.write_text(text, encoding="utf-8")
    load_curve_file(path)


def _row(name: str, kpis: Mapping[str, Any]) -> str:
    return f"  {name:9s} " + " ".join(f"{float(kpis[k]):13.2f}" for k in REPORT_KEYS)


def run_command(args: argparse.Namespace) -> int:
    """The ``apc curve-opt`` verb."""
    from apc.assembly import load
    from apc.kinds import kind_of
    from sim.scenario_loader import ScenarioError

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # batches are quiet
    try:
        terms = [Term.parse(t) for t in args.terms]
        seeds = parse_seeds(args.seeds, "--seeds")
        held = parse_seeds(args.held_out, "--held-out") if args.held_out else []
        if set(seeds) & set(held):
            raise CurveOptError(f"--held-out: seeds {sorted(set(seeds) & set(held))} are training seeds too")
        objective = Objective(args.time_weight, args.energy_weight)
        loaded = load(args.recipe)
        curve = getattr(loaded.recipe, "curve", None)
        if not isinstance(curve, CurveSection):
            raise CurveOptError(f"{args.recipe}: apc curve-opt needs a furnace recipe with a curve section")
        scenario = kind_of(loaded.recipe).load_scenario(args.scenario)
        evaluate = simulated_kpis(loaded, scenario, args.controller)
        log = None if args.json else (lambda line: print(line, flush=True))
        result = optimise(curve, terms, seeds, evaluate, objective, method=args.method, max_evals=args.max_evals,
                          grid_points=args.grid_points, log=log)
        held_runs = [(s, evaluate(curve, s), evaluate(result.curve, s)) for s in held]
        controller = args.controller or loaded.recipe.controller.kind
        header = [
            (f"Curve proposed by apc curve-opt for {loaded.recipe.name} ({Path(args.recipe).name}, "
             f"sha256 {loaded.sha256[:12]})"),
            (f"terms {' '.join(str(t) for t in terms)}; method {args.method}; controller {controller}; "
             f"training seeds {seeds}"),
            (f"cost (time_weight {args.time_weight:g}/min, energy_weight {args.energy_weight:g}/kWh) "
             f"{result.start_cost:.2f} -> {result.best_cost:.2f} over {result.evaluations} candidates"),
            "Use as the recipe's curve: section (or a batch's curve file).",
        ]
        if args.out:
            write_curve_file(Path(args.out), result, header)
    except (CurveOptError, RecipeError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({
            "terms": [str(t) for t in terms], "seeds": seeds, "held_out": held, "method": args.method,
            "start": dict(zip((str(t) for t in terms), result.start_values)),
            "best": dict(zip((str(t) for t in terms), result.best_values)),
            "start_cost": result.start_cost, "best_cost": result.best_cost, "evaluations": result.evaluations,
            "held_out_kpis": [{"seed": s, "recipe": _clean(a), "proposal": _clean(b)} for s, a, b in held_runs],
            "curve": curve_to_mapping(result.curve), "out": args.out,
        }, sort_keys=True, indent=2))
        return 0
    print("best: " + ", ".join(f"{t.segment}.{t.field} {a:g} -> {b:g}" for t, a, b in
                                zip(terms, result.start_values, result.best_values))
          + f"; cost {result.start_cost:.2f} -> {result.best_cost:.2f} ({result.evaluations} candidates)")
    if held_runs:
        print("held-out seeds:\n  seed/curve " + " ".join(f"{k[:13]:>13s}" for k in REPORT_KEYS))
        for s, a, b in held_runs:
            print(_row(f"{s} recipe", a))
            print(_row(f"{s} proposal", b))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _clean(k: Mapping[str, Any]) -> dict[str, Any]:
    return {n: (None if isinstance(v, float) and math.isnan(v) else v) for n, v in k.items()}


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``curve-opt`` to the ``apc`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "curve-opt", help="optimise a furnace curve's adjustable terms for batch time and energy on the simulator",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("recipe", help="furnace recipe (its curve is the starting point)")
    p.add_argument("--terms", nargs="+", required=True, metavar="SEG.FIELD=LOW:HIGH",
                   help="terms to adjust: a ramp's/cool's rate_degC_min, a melt's power_kW (segment index from 0)")
    p.add_argument("--seeds", required=True, help="training seeds (41-46 or 0,1,2)")
    p.add_argument("--held-out", default=None, help="seeds to report the recipe's curve and the proposal on")
    p.add_argument("--controller", choices=("baseline", "mpc"), default=None, help="default: the recipe's")
    p.add_argument("--scenario", default=None, help="furnace scenario (default: the unit kind's nominal)")
    p.add_argument("--method", choices=("nelder-mead", "grid"), default="nelder-mead")
    p.add_argument("--max-evals", type=int, default=12, help="candidate curves at most (each on every seed)")
    p.add_argument("--grid-points", type=int, default=3, help="points per term for --method grid")
    p.add_argument("--time-weight", type=float, default=1.0, help="cost per minute of batch time")
    p.add_argument("--energy-weight", type=float, default=0.0, help="cost per kWh")
    p.add_argument("--out", default=None, metavar="CURVE.yaml", help="write the proposal as a curve file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_command)
    return p

"""The ``apc`` command line: check, sim, report, export, plot, run (and the verbs added by their modules)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from apc.audit import print_logger_file
from apc.recipe.errors import RecipeError


def _cmd_check(args: argparse.Namespace) -> int:
    from apc.assembly import recipe_file_problems, recipe_signal_names
    from apc.plant_sim_cli import PlantFileError, is_plant_file, load_plant_file
    from apc.recipe.loader import check_main

    plants = [f for f in args.files if is_plant_file(f)]
    rc = 0
    for f in plants:  # virtual-plant files (apc plant-sim, apc run --virtual-plant)
        try:
            load_plant_file(f)
            print(f"{f}: ok")
        except PlantFileError as exc:
            print(exc, file=sys.stderr)
            rc = 1
    others = [f for f in args.files if f not in plants]
    if others:
        rc = max(rc, check_main(others, provider=recipe_signal_names, files=recipe_file_problems))
    return rc


def _cmd_sim(args: argparse.Namespace) -> int:
    from apc.assembly import AssemblyError, load
    from apc.audit import make_logger
    from apc.kinds import kind_of
    from apc.kpi import format_kpis
    from apc.recipe.overrides import parse_overrides
    from apc.simulate import simulate
    from sim.scenario_loader import ScenarioError

    try:
        loaded = load(args.recipe, parse_overrides(args.set))
        scenario = kind_of(loaded.recipe).load_scenario(args.scenario)
    except (RecipeError, ScenarioError) as exc:
        print(exc, file=sys.stderr)
        return 1
    audit_file = open(args.audit, "a", encoding="utf-8") if args.audit else None  # noqa: SIM115 (closed in finally)
    try:
        audit = make_logger(audit_file) if audit_file else None
        result = asyncio.run(simulate(
            loaded, scenario, seed=args.seed, hours=args.hours, controller=args.controller,
            record_path=Path(args.record) if args.record else None, audit=audit,
        ))
    except AssemblyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if audit_file:
            audit_file.close()
    if args.json:
        out = {"kpis": result.kpis, **result.meta}
        if args.timings:
            out["timings"] = {"wall_s": result.wall_s, "speedup": result.speedup}
        print(_json(out))
    else:
        m = result.meta
        print(f"{m['recipe']} · scenario {m['scenario']} · seed {m['seed']} · {m['hours']:g} h · "
              f"controller {m['controller']}")
        if m.get("overrides"):
            print("overrides: " + ", ".join(m["overrides"]))
        print(format_kpis(result.kpis, kind_of(loaded.recipe).kpi_labels))
        if args.timings:
            print(f"wall {result.wall_s:.2f} s for {result.sim_s / 3600:g} simulated h "
                  f"({result.speedup:.0f}x real time)")
    return 0 if result.errors == 0 else 1


def _json(obj: object) -> str:
    def clean(v: object) -> object:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return json.dumps(clean(obj), sort_keys=True, indent=2)


def _cmd_report(args: argparse.Namespace) -> int:
    from apc.interventions import AuditError
    from apc.kpi import format_kpis, record_kpi_labels
    from apc.plant_report import Split, format_report, parse_hhmm, plant_report, report_json
    from apc.recorder import RecordError

    try:
        split = None if args.by is None else Split(args.by, parse_hhmm(args.shift_start), args.shift_hours)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        reports = plant_report(args.files, audit=[Path(a) for a in args.audit] if args.audit else None, split=split)
    except (RecordError, AuditError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(report_json(reports))
        return 0
    sim = reports[0].sim_kpis if len(reports) == 1 else None  # a simulated run: its truth KPIs first, as before
    print(format_report(reports, "" if sim is None else format_kpis(sim, record_kpi_labels(args.files[0]))))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from apc.export import MissingExtraError, default_out, export
    from apc.record_table import read_table
    from apc.recorder import RecordError

    out = Path(args.out) if args.out else default_out(Path(args.file), "." + args.format)
    try:
        table = read_table(args.file)
        export(table, args.format, out)
    except (RecordError, OSError, KeyError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: {table.rows} rows, {len(table.columns)} columns")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from apc.export import MissingExtraError, default_out
    from apc.kinds import UnknownKindError
    from apc.recorder import RecordError
    from apc.trends import plot_record

    out = Path(args.out) if args.out else default_out(Path(args.file), "_trends")
    try:
        files = plot_record(Path(args.file), out)
    except (RecordError, OSError, KeyError, UnknownKindError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from apc.alarms.book import AlarmStateError
    from apc.assembly import AssemblyError, load_site_file
    from apc.batch import BatchStateError
    from apc.hmi.server import HmiServerError
    from apc.hmi.users import UsersFileError
    from apc.runtime import run_site
    from sim.scenario_loader import ScenarioError

    try:
        site = load_site_file(args.site)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 1
    plant = None
    if args.virtual_plant:
        from apc.plant_sim_cli import PlantFileError, default_plant_file, load_plant_file

        beside = site.path.parent / "plant.yaml"
        try:
            plant = (load_plant_file(args.plant) if args.plant else
                     load_plant_file(beside) if beside.is_file() else default_plant_file(site))
        except PlantFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(run_site(site, speed=args.speed, hours=args.hours,
                                    record_dir=Path(args.record_dir) if args.record_dir else None,
                                    bindings_dir=Path(args.bindings) if args.bindings else None,
                                    virtual_plant=plant, compute_workers=args.compute_workers,
                                    metrics_port=args.metrics_port))
    except (AssemblyError, HmiServerError, UsersFileError, BatchStateError, ScenarioError, AlarmStateError,
            OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after set-up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``apc`` command."""
    p = argparse.ArgumentParser(prog="apc", description="APC runtime for rare-earth pyrometallurgy")
    sub = p.add_subparsers(dest="verb", required=True)

    c = sub.add_parser("check", help="validate recipe and site files")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=_cmd_check)

    s = sub.add_parser("sim", help="run a recipe against the simulated plant in virtual time")
    s.add_argument("recipe")
    s.add_argument("--hours", type=float, default=None,
                   help="simulated hours (default: the scenario's; a furnace: one whole batch)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--controller", choices=("baseline", "mpc"), default=None)
    s.add_argument("--scenario", default=None,
                   help="name in sim/scenarios (furnaces: sim/scenarios/furnace) or a YAML path "
                        "(default: nominal; furnaces: the unit kind's)")
    s.add_argument("--json", action="store_true", help="print KPIs as JSON (deterministic)")
    s.add_argument("--timings", action="store_true", help="also print wall-clock figures")
    s.add_argument("--record", help="write the flight record to this file")
    s.add_argument("--audit", help="append audit events (JSON lines) to this file")
    s.add_argument("--set", action="append", default=None, metavar="PATH=VALUE",
                   help="override a recipe field before it is checked, e.g. controller.mpc.horizon_steps=24 "
                        "(repeatable; VALUE is YAML; see docs/tuning.md)")
    s.set_defaults(func=_cmd_sim)

    r = sub.add_parser("report", help="KPIs from flight records: plant KPIs of every record, and the simulator's "
                                      "KPIs of an apc sim record (docs/performance_kpis.md)")
    r.add_argument("files", nargs="+", metavar="RECORD", help="records or segments (.apcrec, .apcrec.gz) of one "
                   "or more units")
    r.add_argument("--json", action="store_true", help="print as JSON (deterministic)")
    r.add_argument("--by", choices=("day", "shift"), default=None, help="also split the figures per UTC day or shift")
    r.add_argument("--shift-start", default="06:00", metavar="HH:MM", help="UTC start of the first shift of a day "
                   "(default 06:00)")
    r.add_argument("--shift-hours", type=float, default=8.0, metavar="H", help="length of a shift, dividing 24 "
                   "(default 8)")
    r.add_argument("--audit", action="append", default=None, metavar="FILE", help="audit log to count interventions "
                   "from (repeatable; default: audit.jsonl and its rotated parts beside the records)")
    r.set_defaults(func=_cmd_report)

    e = sub.add_parser("export", help="write a flight record as a table, one row per cycle")
    e.add_argument("file")
    e.add_argument("--format", choices=("parquet", "csv"), default="csv")
    e.add_argument("--out", default=None, help="output file (default: the record's name with .csv / .parquet)")
    e.set_defaults(func=_cmd_export)

    g = sub.add_parser("plot", help="draw a flight record's trends as PNG files")
    g.add_argument("file")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="folder of the PNG files (default: the record's name with _trends)")
    g.set_defaults(func=_cmd_plot)

    u = sub.add_parser("run", help="run a site's units in real time")
    u.add_argument("site")
    u.add_argument("--speed", type=float, default=None, help="real-time multiple for simulated plants")
    u.add_argument("--hours", type=float, default=None, help="stop after this many (plant) hours")
    u.add_argument("--record-dir", default=None)
    u.add_argument("--virtual-plant", action="store_true",
                   help="serve the site's simulated units on loopback OPC UA / Modbus servers in this process "
                        "and control them through those protocols (see apc plant-sim)")
    u.add_argument("--plant", default=None, help="with --virtual-plant: the virtual-plant file (protocol and port "
                   "per unit; default plant.yaml beside the site file, else every unit over OPC UA)")
    u.add_argument("--compute-workers", type=int, default=None, metavar="N",
                   help="processes the units' estimators and controllers run in (default: the site's, one per "
                        "core; 0: in the runtime's own process, for debugging)")
    u.add_argument("--metrics-port", type=int, default=None, metavar="N",
                   help="serve Prometheus metrics on http://HOST:N/metrics (HOST: the site's metrics host, "
                        "else 127.0.0.1); overrides the site's metrics port (see docs/metrics.md)")
    u.add_argument("--bindings", default=None, metavar="DIR",
                   help="reach the site's simulated units over OPC UA / Modbus through the binding files "
                        "DIR/<unit>.yaml written by 'apc plant-sim --bindings-out DIR'")
    u.set_defaults(func=_cmd_run)
    from apc.batch_cli import add_subcommand as add_batches
    from apc.curve_opt_cli import add_subcommand as add_curve_opt
    from apc.hmi.cli import add_subcommands
    from apc.plant_sim_cli import add_subcommand as add_plant_sim
    from apc.replay_cli import add_subcommand as add_replay
    from apc.sweep.cli import add_subcommands as add_workbench

    add_subcommands(sub)
    add_plant_sim(sub)
    add_replay(sub)
    add_batches(sub)
    add_curve_opt(sub)
    add_workbench(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``apc`` console script."""
    args = build_parser().parse_args(argv)
    # Diagnostics of the library modules go to stderr: stdout carries results (e.g. --json).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(print_logger_file(_CurrentStderr())))
    try:
        return int(args.func(args))
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

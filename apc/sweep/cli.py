"""Argparse wiring of the workbench commands ``sweep`` and ``tune``; ``apc/cli.py`` calls :func:`add_subcommands`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from apc.recipe.errors import RecipeError


def _out(spec: str, given: str | None, suffix: str) -> Path:
    return Path(given) if given else Path(spec).with_suffix("").with_name(Path(spec).stem + suffix)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from apc.export import MissingExtraError
    from apc.sweep.runner import Progress, make_backend
    from apc.sweep.spec import load_sweep_spec
    from apc.sweep.sweep import run_sweep

    try:
        spec = load_sweep_spec(args.spec)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 1
    out = _out(args.spec, args.out, "_sweep")
    backend = make_backend(args.ray, args.workers)
    print(f"{spec.n_runs} runs on {backend.name}", file=sys.stderr, flush=True)
    try:
        outcome = run_sweep(spec, backend, out, report=not args.no_report, progress=Progress(spec.n_runs))
    except (MissingExtraError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(outcome.table)
    print(f"\n{spec.n_runs} runs in {outcome.wall_s:.0f} s wall")
    for f in outcome.files:
        print(f)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from apc.sweep.runner import Progress, make_backend
    from apc.sweep.tune import run_tune
    from apc.sweep.tune_spec import load_tune_spec

    try:
        spec = load_tune_spec(args.spec)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 1
    out = _out(args.spec, args.out, "_tune")
    backend = make_backend(args.ray, args.workers)
    try:
        outcome = run_tune(spec, backend, out, progress=Progress(spec.n_runs))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(outcome.summary)
    for f in outcome.files:
        print(f)
    return 0


def _backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (default: one per core; 0: in this process); with --ray local: "
                        "the CPUs of the local Ray")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (ray.init address, e.g. ray://HOST:10001 or auto; 'local' starts "
                        "one in this process) instead of the local process pool")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: beside the spec)")


def add_subcommands(subparsers: Any) -> None:
    """Add ``sweep`` and ``tune`` to the ``apc`` command's subparsers."""
    s = subparsers.add_parser(
        "sweep", help="run recipe variants × controllers × scenarios × seeds × hours and compare them",
        description="Writes runs.csv, runs.parquet (one row per run) and report.html into --out; prints the "
                    "comparison table (median, spread, wins against the reference variant). See docs/tuning.md.")
    s.add_argument("spec", help="sweep spec (YAML)")
    _backend_options(s)
    s.add_argument("--no-report", action="store_true", help="skip the HTML report (and the two re-runs it records)")
    s.set_defaults(func=_cmd_sweep)

    t = subparsers.add_parser(
        "tune", help="search recipe parameters with a seeded Optuna sampler; writes the winner as a diff",
        description="Each trial runs on the spec's training seeds; the winner and the recipe as it is are "
                    "then run on the held-out seeds. Writes trials.csv, best_overrides.yaml, best.diff and "
                    "summary.txt into --out; the recipe file is never changed. See docs/tuning.md.")
    t.add_argument("spec", help="tune spec (YAML)")
    _backend_options(t)
    t.set_defaults(func=_cmd_tune)

"""``apc replay RECORD --recipe NEW.yaml``: what a new recipe would have done over a recorded run,
open loop, beside what ran (``docs/replay.md``). Writes the side-by-side table (CSV or Parquet) and,
with ``--out DIR``, the figures; prints the summary (``--json``: deterministic JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from apc.recipe.errors import RecipeError


def run_command(args: argparse.Namespace) -> int:
    """Run ``apc replay`` (exit 1 with the reason when the recipe does not fit the record)."""
    from apc.assembly import AssemblyError, load
    from apc.export import MissingExtraError, default_out, export
    from apc.kinds import UnknownKindError
    from apc.recorder import RecordError
    from apc.replay import ReplayError, replay
    from apc.replay_summary import format_summary, summarise
    from apc.replay_table import replay_table

    record = Path(args.record)
    out_dir = Path(args.out) if args.out else None
    table_path = (out_dir / f"replay.{args.format}") if out_dir else default_out(record, f"_replay.{args.format}")
    try:
        loaded = load(args.recipe)
        result = replay(record, loaded, args.controller)
        table = replay_table(result)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        export(table, args.format, table_path)
        figures: list[Path] = []
        if out_dir is not None:
            from apc.replay_plot import plot_replay

            figures = plot_replay(result, table, out_dir)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ReplayError, AssemblyError, RecordError, UnknownKindError, MissingExtraError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarise(result)
    if args.json:
        print(json.dumps({**summary.to_json(), "table": str(table_path), "figures": [str(f) for f in figures]},
                         sort_keys=True, indent=2, allow_nan=False))
        return 0
    print(format_summary(summary))
    print(f"{table_path}: {table.rows} rows, {len(table.columns)} columns")
    for f in figures:
        print(f)
    return 0


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``replay`` to the ``apc`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="run a new recipe's estimator, controller and guard over a recorded run, open loop, "
                       "beside what ran (docs/replay.md)",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("record", metavar="RECORD", help="flight record of apc run or apc sim (.apcrec, .apcrec.gz)")
    p.add_argument("--recipe", required=True, metavar="NEW.yaml", help="the recipe to replay (same unit kind, "
                   "inputs and MVs as the record's)")
    p.add_argument("--controller", choices=("baseline", "mpc"), default=None,
                   help="controller to replay (default: the recipe's)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder of the table (replay.csv / .parquet) and the "
                   "PNG figures (needs the plot extra); default: the table beside the record, no figures")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (deterministic)")
    p.set_defaults(func=run_command)
    return p

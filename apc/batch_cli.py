"""``apc batches HISTORY``: a furnace's batch history (docs/batch_learning.md), and the engineer's
audited learning reset (``--reset --who NAME --why TEXT``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from apc.batch_history import BatchHistory, BatchHistoryError

_COLS = ("batch_time_min", "energy_kWh", "tracking_rmse_degC", "soak_complete", "pressure_violations",
         "core_surface_dT_violations")


def add_subcommand(sub: Any) -> None:
    """Register ``apc batches``."""
    b = sub.add_parser("batches", help="a furnace's batch history: identified parameters, KPIs, curve, lot, "
                                       "proposals; --reset forgets what was learned (docs/batch_learning.md)")
    b.add_argument("history", metavar="HISTORY", help="the furnace's history.sqlite (beside its batch state file)")
    b.add_argument("--json", action="store_true", help="print as JSON (deterministic)")
    b.add_argument("--reset", action="store_true", help="reset the learning (after maintenance); needs --who, --why")
    b.add_argument("--who", default="", help="engineer resetting (audited)")
    b.add_argument("--why", default="", help="reason of the reset (audited)")
    b.add_argument("--audit", default=None, metavar="FILE", help="append the reset's audit event (JSON line) here")
    b.set_defaults(func=cmd_batches)


def _fmt(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return f"{float(v):10.2f}"
    return f"{'-':>10s}"


def cmd_batches(args: argparse.Namespace) -> int:
    """Print the history (or reset the learning)."""
    try:
        history = BatchHistory(Path(args.history), create=False)
    except BatchHistoryError as exc:
        print(f"apc batches: {exc}")
        return 2
    try:
        if args.reset:
            if not args.who.strip() or not args.why.strip():
                print("apc batches: --reset needs --who and --why")
                return 2
            reset = history.reset(args.who, args.why, time.time())
            event = {"event": "batch_learning_reset", "who": reset.who, "why": reset.why, "where": "command line",
                     "utc": reset.utc, "after_batch_seq": reset.after_batch_seq, "history": str(args.history)}
            if args.audit:
                with open(args.audit, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(event, sort_keys=True) + "\n")
            print(f"learning reset after batch #{reset.after_batch_seq} by {reset.who}: {reset.why}")
            return 0
        records, resets = history.records(), history.resets()
    finally:
        history.close()
    if args.json:
        out = {"batches": [{**r.__dict__, "parameters": {k: list(v) for k, v in r.parameters.items()}}
                           for r in records], "resets": [r.__dict__ for r in resets]}
        print(json.dumps(out, sort_keys=True, default=str, allow_nan=False))
        return 0
    cuts = {r.after_batch_seq: r for r in resets}
    head = " ".join(f"{c[:10]:>10s}" for c in _COLS)
    print(f"{'#':>3s} {'batch':12s} {'lot':8s} {'curve':12s} {'state':9s} L {head}")
    for r in records:
        print(f"{r.seq:3d} {r.batch_id[:12]:12s} {r.lot[:8]:8s} {r.curve_name[:12]:12s} {r.final_state:9s} "
              f"{'y' if r.learned else 'n'} " + " ".join(_fmt(r.kpis.get(c)) for c in _COLS))
        params = ", ".join(f"{k}={v:+.3f}±{s:.3f}" for k, (v, s) in sorted(r.parameters.items()))
        terms = ", ".join(f"{k}={v:g}" for k, v in r.terms.items())
        prop = ", ".join(f"{k}={v:g}" for k, v in r.proposal.items())
        print(f"    parameters: {params or '-'}\n    terms: {terms or '-'}  proposal: {prop or '-'}")
        if r.seq in cuts:
            c = cuts[r.seq]
            print(f"    --- learning reset by {c.who}: {c.why}")
    return 0

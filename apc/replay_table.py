"""A replay as a table, one row per recorded cycle: what ran (``recorded.``) beside what the new
recipe would have done (``replayed.``), named like ``apc export``'s columns (:mod:`apc.record_table`).

Columns: ``session``, ``k``, ``t_s``, ``utc``, the recorded modes, ``shed``, ``late``, ``fault``,
``recipe_reload``; ``input.<name>_<unit>`` (the recorded sample, shared) with ``.sample_utc`` for lab
and dip samples (the sample's time: its ``sample_ts``, else its source timestamp, where OPC UA
carries it) and each side's verdict ``<side>.input.<name>_<unit>.verdict``;
``<side>.est.health``, ``<side>.est.<signal>`` (states and extras) and ``<side>.est.<state>_sigma``;
``<side>.plan.status``, ``<side>.plan.<mv>_<unit>`` (the proposal); ``readback.<mv>_<unit>``;
``<side>.<mv>_<unit>`` (what the guard let through, ON cycles), with ``.written``, ``.clamps`` and
``.reason``. Non-finite values are ``None`` (empty in CSV, null in Parquet), as in ``apc export``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from apc.cycle_record import DecisionRecord, EstimateRecord, PlanRecord
from apc.record_table import ColumnBuilder, ColumnType, RecordTable, with_unit
from apc.replay import Replay, ReplayCycle

Row = dict[str, tuple[ColumnType, str, Any]]
SIDES = ("recorded", "replayed")


def _estimate(row: Row, side: str, est: EstimateRecord) -> None:
    row[f"{side}.est.health"] = ("str", "", est.health)
    for i, name in enumerate(est.names):
        row[f"{side}.est.{name}"] = ("float", "", est.x[i] if i < len(est.x) else None)
        p = est.P_diag[i] if est.P_diag is not None and i < len(est.P_diag) else None
        ok = p is not None and math.isfinite(p) and p >= 0
        row[f"{side}.est.{name}_sigma"] = ("float", "", math.sqrt(p) if ok and p is not None else None)
    for name, value in est.extras.items():
        row.setdefault(f"{side}.est.{name}", ("float", "", value))


def _plan(row: Row, side: str, plan: PlanRecord | None, mvs: Mapping[str, str]) -> None:
    row[f"{side}.plan.status"] = ("str", "", None if plan is None else plan.status)
    for name, key in mvs.items():
        move = None if plan is None else plan.moves.get(name)
        row[f"{side}.plan.{key}"] = ("float", "", move)


def _decisions(row: Row, side: str, decisions: Mapping[str, DecisionRecord], mvs: Mapping[str, str],
               units: Mapping[str, str]) -> None:
    for name, key in mvs.items():
        d = decisions.get(name)
        row[f"{side}.{key}"] = ("float", units[name], None if d is None else d.value)
        row[f"{side}.{key}.written"] = ("bool", "", None if d is None else d.write)
        row[f"{side}.{key}.clamps"] = ("str", "", None if d is None else ";".join(d.clamps))
        row[f"{side}.{key}.reason"] = ("str", "", None if d is None else d.reason)


def cycle_row(c: ReplayCycle, replay: Replay) -> Row:
    """One cycle as (type, unit, value) by column name."""
    recipe = replay.loaded.recipe
    rec = c.recorded
    units = {n: mv.unit for n, mv in recipe.io.mvs.items()}
    mvs = {n: with_unit(n, u) for n, u in units.items()}
    fault = "" if rec.fault is None else f"{rec.fault.get('stage', '')}: {rec.fault.get('error', '')}"
    reload = "" if rec.recipe_reload is None else str(rec.recipe_reload.get("new_sha256", ""))
    row: Row = {
        "session": ("int", "", c.session), "k": ("int", "", rec.k), "t_s": ("float", "s", rec.t_s),
        "utc": ("float", "s", rec.utc), "mode_requested": ("str", "", rec.mode.requested),
        "mode_actual": ("str", "", rec.mode.actual), "mode_hold": ("str", "", rec.mode.hold),
        "shed": ("bool", "", rec.shed), "late": ("str", "", rec.late),
        "fault": ("str", "", fault), "recipe_reload": ("str", "", reload),
        "replayed.restarted": ("str", "", c.restarted),
    }
    for name, spec in recipe.io.inputs.items():
        key = "input." + with_unit(name, spec.unit)
        inp = rec.inputs.get(name)
        row[key] = ("float", spec.unit, None if inp is None else inp.value)
        if spec.role == "sample":
            when = None if inp is None else inp.sample_ts if inp.sample_ts is not None else inp.source_ts
            row[key + ".sample_utc"] = ("float", "s", when)
        row[f"recorded.{key}.verdict"] = ("str", "", None if inp is None else inp.verdict)
        row[f"replayed.{key}.verdict"] = ("str", "", c.verdicts.get(name))
    _estimate(row, "recorded", rec.estimate)
    _estimate(row, "replayed", c.estimate)
    _plan(row, "recorded", rec.plan, mvs)
    _plan(row, "replayed", c.plan, mvs)
    for name, key in mvs.items():
        row[f"readback.{key}"] = ("float", units[name], rec.readback.get(name))
    _decisions(row, "recorded", rec.decisions, mvs, units)
    _decisions(row, "replayed", c.decisions, mvs, units)
    return row


def replay_header(replay: Replay) -> dict[str, Any]:
    """The record's first header with what replayed it (``replay``: recipe, its SHA-256, controller)."""
    return {**replay.header, "replay": {"record": replay.record.name, "recipe": replay.loaded.recipe.name,
                                        "recipe_sha256": replay.loaded.sha256, "controller": replay.controller}}


def replay_table(replay: Replay) -> RecordTable:
    """The replay as a table (see the module docstring)."""
    builder = ColumnBuilder()
    for c in replay.cycles:
        builder.add(cycle_row(c, replay))
    return RecordTable(replay_header(replay), builder.columns(), builder.rows)

"""``apc replay --out DIR`` figures (the ``plot`` extra): recorded beside replayed estimates with
±2σ and the lab and dip samples, and recorded beside replayed MV moves, drawn by :mod:`apc.trends`
from the replay's table (:mod:`apc.replay_table`) with modes shaded as in ``apc plot``."""

from __future__ import annotations

import warnings
from pathlib import Path

from apc.record_table import RecordTable, with_unit
from apc.replay import Replay
from apc.replay_summary import cv_bands, estimate_names, std_name
from apc.trend_layout import Figure, Panel, Series, ylabel
from apc.trends import draw
from apc.types import MvKind


def _sigma_column(side: str, name: str, std: str | None, columns: frozenset[str]) -> str | None:
    state = f"{side}.est.{name}_sigma"
    if state in columns:
        return state
    extras = [c[len(f"{side}.est."):] for c in columns if c.startswith(f"{side}.est.")]
    std = std or std_name(name, extras)
    return None if std is None else f"{side}.est.{std}"


def _estimate_panel(name: str, std: str | None, columns: frozenset[str], sample: str | None,
                    sample_unit: str | None) -> Panel:
    series = [Series(f"recorded.est.{name}", "recorded", sigma_column=_sigma_column("recorded", name, std, columns)),
              Series(f"replayed.est.{name}", "replayed", "dashed",
                     sigma_column=_sigma_column("replayed", name, std, columns))]
    if sample is not None:
        key = "input." + with_unit(sample, sample_unit)
        series.append(Series(key, f"{sample} sample", "markers", time_column=key + ".sample_utc"))
    return Panel(ylabel(name.replace("_", " "), sample_unit), tuple(series))


def layout(replay: Replay, columns: frozenset[str]) -> tuple[Figure, ...]:
    """The replay's figures: ``replay_cvs`` (estimates of the CVs with their samples), ``replay_states``
    (the model states), ``replay_mvs`` (readback, recorded and replayed moves)."""
    recipe = replay.loaded.recipe
    measured = {str(b["estimate"]): b.get("measured") for b in cv_bands(replay) if b.get("estimate")}
    cvs: list[Panel] = []
    states: list[Panel] = []
    for name, std in estimate_names(replay):
        if f"recorded.est.{name}" not in columns and f"replayed.est.{name}" not in columns:
            continue
        sample = measured.get(name)
        spec = recipe.io.inputs.get(str(sample)) if sample else None
        panel = _estimate_panel(name, std, columns, str(sample) if spec else None, spec.unit if spec else None)
        (cvs if name in measured else states).append(panel)
    mvs = []
    for name, mv in recipe.io.mvs.items():
        key = with_unit(name, mv.unit)
        series: tuple[Series, ...]
        if mv.kind is MvKind.SETPOINT:
            series = (Series(f"readback.{key}", f"{name} readback", "step"),
                      Series(f"recorded.{key}", "recorded (written or held)", "step"),
                      Series(f"replayed.{key}", "replayed (would write or hold)", "dashed"))
        else:
            series = (Series(f"recorded.{key}", "recorded move", "markers", where_column=f"recorded.{key}.written"),
                      Series(f"replayed.{key}", "replayed move", "markers", where_column=f"replayed.{key}.written"))
        mvs.append(Panel(ylabel(name.replace("_", " ") + ("" if mv.kind is MvKind.SETPOINT else " move"), mv.unit),
                         series))
    figures = [Figure("replay_cvs", "Replay: CV estimates and samples", tuple(cvs)) if cvs else None,
               Figure("replay_states", "Replay: model states", tuple(states)) if states else None,
               Figure("replay_mvs", "Replay: MV moves (ON cycles)", tuple(mvs))]
    return tuple(f for f in figures if f is not None)


def plot_replay(replay: Replay, table: RecordTable, out: Path) -> list[Path]:
    """Every figure of :func:`layout` as PNG files in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    titled = RecordTable({**table.header, "recipe": f"{table.header.get('recipe', '?')} → {replay.loaded.recipe.name}",
                          "controller": replay.controller}, table.columns, table.rows)
    with warnings.catch_warnings():  # a panel with nothing in this replay says so in its axes, not on stderr
        warnings.filterwarnings("ignore", message="No artists with labels found", category=UserWarning)
        return [draw(titled, figure, out) for figure in layout(replay, frozenset(table.names()))]

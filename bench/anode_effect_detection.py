"""The anode-effect detector (measured voltage and current only) against the simulator's truth.

Runs the shipped recipe ``recipes/nd_cell_6ka.yaml`` closed loop with both controllers
(``baseline``, ``mpc``) on a scenario where anode effects happen (default
``bench/scenarios/feeder_blocked.yaml``: three single 55 V voltage samples while the cell runs
normally, then the feeder blocked for 1 h), on a few seeds. Per cycle it keeps the
validated voltage and current, the estimate's ``anode_effect_detected`` and the truth's
``anode_effect``, then replays the measured samples through a fresh detector built from the recipe
(which must give the same flags as the run: checked) to get the events with their durations.

Truth events are runs of ``anode_effect`` cycles, merged when less than the KPIs' ``ae_merge_s``
apart. A truth event is *detected* when a detected event (onset to confirmed end) overlaps it;
*missed* otherwise; a detected event that overlaps no truth event is a *false detection*. Onset
delay: confirmation time − first truth cycle (s); duration error: detected − true duration.
Counts are also given per cell-day (per 24 h of run time). The figures go to stdout and
``bench/results_anode_effect_detection.txt``.

    python bench/anode_effect_detection.py [--seeds 41-43] [--hours 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.cycle_record import CycleRecord
from apc.kinds import kind_of
from apc.kinds.electrolysis_cell.anode_effect import AnodeEffectConfig, AnodeEffectDetector, AnodeEffectEvent
from apc.kinds.electrolysis_cell.kpi import KpiConfig
from apc.kinds.electrolysis_cell.recipe import CellRecipe
from apc.seeds import parse_seeds
from apc.simulate import run_on
from estimators.filtered import AE_DETECTED
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
SCENARIO = ROOT / "bench" / "scenarios" / "feeder_blocked.yaml"
RESULTS = ROOT / "bench" / "results_anode_effect_detection.txt"
CONTROLLERS = ("baseline", "mpc")


@dataclass(frozen=True)
class Interval:
    """A true anode effect: first and last cycle in anode effect."""

    start_s: float
    end_s: float


@dataclass(frozen=True)
class Run:
    """One closed-loop run's truth and detector events."""

    seed: int
    controller: str
    hours: float
    truth: tuple[Interval, ...]
    detected: tuple[AnodeEffectEvent, ...]
    open_event: AnodeEffectEvent | None
    rejected: int
    flags_match: bool
    wall_s: float


def _truth_events(samples: list[tuple[float, bool]], merge_s: float) -> tuple[Interval, ...]:
    out: list[Interval] = []
    start = last = None
    for t, in_ae in samples:
        if in_ae:
            if start is not None and last is not None and t - last < merge_s:
                last = t
                continue
            if start is not None and last is not None:
                out.append(Interval(start, last))
            start = last = t
    if start is not None and last is not None:
        out.append(Interval(start, last))
    return tuple(out)


async def _run(seed: int, controller: str, hours: float, scenario_path: str) -> Run:
    loaded = load(RECIPE)
    recipe = loaded.recipe
    assert isinstance(recipe, CellRecipe)
    clock = VirtualClock()
    unit, _ = build_sim_unit("bench", loaded, load_scenario(scenario_path), seed, clock, audit=null_logger(),
                             controller_kind=controller)  # type: ignore[arg-type]
    voltage = recipe.io.input_with_unit("V") or ""
    current = recipe.io.input_with_unit("kA") or ""
    replay = AnodeEffectDetector(AnodeEffectConfig.from_recipe(recipe))
    truth: list[tuple[float, bool]] = []
    match = [True]

    def ok_value(rec: CycleRecord, name: str) -> float | None:
        inp = rec.inputs.get(name)
        return inp.value if inp is not None and inp.verdict == "ok" else None

    def observe(rec: CycleRecord) -> None:
        assert rec.truth is not None
        truth.append((rec.t_s, float(rec.truth["anode_effect"]) >= 0.5))
        state = replay.update(rec.t_s, ok_value(rec, voltage), ok_value(rec, current))
        flag = rec.estimate.extras.get(AE_DETECTED)
        if flag is not None and (flag >= 0.5) != state.detected:
            match[0] = False

    t0 = time.perf_counter()
    await run_on(unit, clock, hours, who="bench", where="anode_effect_detection", after_cycle=observe)
    wall = time.perf_counter() - t0
    merge_s = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(0.0, 1.0)).ae_merge_s
    return Run(seed, controller, hours, _truth_events(truth, merge_s), replay.events, replay.state.event,
               replay.rejected, match[0], wall)


def _job(args: tuple[int, str, float, str]) -> Run:
    return asyncio.run(_run(*args))


@dataclass(frozen=True)
class Score:
    """Detector against truth for a set of runs."""

    truth: int
    detected: int
    missed: int
    false: int
    delays_s: tuple[float, ...]
    duration_errors_s: tuple[float, ...]
    true_durations_s: tuple[float, ...]
    rejected: int
    cell_days: float


def score(runs: list[Run], period_s: float) -> Score:
    """Match detected events to true ones (overlap); see the module docstring."""
    n_truth = n_det = n_false = rejected = 0
    delays: list[float] = []
    dur_err: list[float] = []
    true_dur: list[float] = []
    for r in runs:
        events = list(r.detected) + ([r.open_event] if r.open_event is not None else [])
        spans = [(e.onset_t_s, e.terminated_t_s if e.terminated_t_s is not None else math.inf, e) for e in events]
        used: set[int] = set()
        for iv in r.truth:
            n_truth += 1
            true_dur.append(iv.end_s - iv.start_s + period_s)
            hit = next((i for i, (a, b, _) in enumerate(spans) if a <= iv.end_s + period_s and b >= iv.start_s), None)
            if hit is None:
                continue
            n_det += 1
            used.add(hit)
            ev = spans[hit][2]
            delays.append(ev.confirmed_t_s - iv.start_s)
            if ev.duration_s is not None:
                dur_err.append(ev.duration_s - (iv.end_s - iv.start_s + period_s))
        n_false += sum(1 for i in range(len(spans)) if i not in used)
        rejected += r.rejected
    days = sum(r.hours for r in runs) / 24.0
    return Score(n_truth, n_det, n_truth - n_det, n_false, tuple(delays), tuple(dur_err), tuple(true_dur), rejected,
                 days)


def _stats(values: tuple[float, ...]) -> str:
    if not values:
        return "-"
    return f"mean {statistics.fmean(values):.1f}, min {min(values):.1f}, max {max(values):.1f}"


def main() -> None:
    """Run both controllers on every seed and print the detector's figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="41-43")
    ap.add_argument("--hours", type=float, default=None, help="default: the scenario's hours")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenario", default=str(SCENARIO))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    loaded = load(RECIPE)
    recipe = loaded.recipe
    assert isinstance(recipe, CellRecipe)
    scen = load_scenario(args.scenario)
    hours = float(args.hours if args.hours is not None else scen.hours)
    cfg = AnodeEffectConfig.from_recipe(recipe)
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    kind = kind_of(recipe)
    out(f"Anode-effect detection: {RECIPE.name} (sha256 {loaded.sha256[:12]}), scenario {scen.name} "
        f"({Path(args.scenario).name}), seeds {seeds}, {hours:g} h each, controllers {list(CONTROLLERS)}")
    out(f"simulator_sha256 {kind.simulator_sha256()}")
    out(f"baseline_sha256  {kind.baseline_sha256(recipe)}")
    out(f"detector: threshold {cfg.voltage_V:g} V, confirm {cfg.confirm_s:g} s, clear {cfg.clear_s:g} s, "
        f"min current {cfg.min_current_kA:g} kA; period {recipe.period_s:g} s")
    jobs = [(s, c, hours, args.scenario) for s in seeds for c in CONTROLLERS]
    runs: dict[tuple[int, str], Run] = {}
    t_all = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for fut in as_completed([pool.submit(_job, j) for j in jobs]):
            r = fut.result()
            runs[(r.seed, r.controller)] = r
            print(f"done seed {r.seed} {r.controller:8s} in {r.wall_s:5.0f} s", flush=True)
    out()
    out(f"{'seed':>4s} {'ctrl':8s} {'true':>4s} {'det':>4s} {'miss':>4s} {'false':>5s} {'spikes rej':>10s} "
        f"{'flags=run':>9s}  true AEs (start h, min) / detected (onset h, delay s, min)")
    for s in seeds:
        for c in CONTROLLERS:
            r = runs[(s, c)]
            sc = score([r], recipe.period_s)
            truth = ", ".join(f"{iv.start_s / 3600:.2f} h {(iv.end_s - iv.start_s + recipe.period_s) / 60:.1f}"
                              for iv in r.truth) or "-"
            evs = list(r.detected) + ([r.open_event] if r.open_event is not None else [])
            det = ", ".join(f"{e.onset_t_s / 3600:.2f} h +{e.confirmed_t_s - e.onset_t_s:.0f} s "
                            + (f"{e.duration_s / 60:.1f}" if e.duration_s is not None else "open")
                            for e in evs) or "-"
            out(f"{s:4d} {c:8s} {sc.truth:4d} {sc.detected:4d} {sc.missed:4d} {sc.false:5d} {r.rejected:10d} "
                f"{'yes' if r.flags_match else 'NO':>9s}  {truth} / {det}")
    out()
    for group in (*CONTROLLERS, "all"):
        sel = [r for (s, c), r in runs.items() if group in ("all", c)]
        sc = score(sel, recipe.period_s)
        days = sc.cell_days

        def per_day(n: float, days: float = days) -> float:
            return n / days if days > 0 else math.nan
        out(f"{group:8s}: {sc.cell_days:.2f} cell-days; true AEs {sc.truth} ({per_day(sc.truth):.2f}/cell-day), "
            f"detected {sc.detected}, missed {sc.missed}, false detections {sc.false} "
            f"({per_day(sc.false):.2f}/cell-day), spikes rejected {sc.rejected}")
        out(f"{'':8s}  onset delay (confirmation − true onset) s: {_stats(sc.delays_s)}; "
            f"duration error (detected − true) s: {_stats(sc.duration_errors_s)}; "
            f"true duration min: {_stats(tuple(d / 60 for d in sc.true_durations_s))}")
    out(f"\nwall time {time.perf_counter() - t_all:.0f} s with {args.workers} workers; "
        f"every run's recorded anode_effect_detected equals the replay: "
        f"{'yes' if all(r.flags_match for r in runs.values()) else 'NO'}")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

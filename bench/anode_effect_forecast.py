"""The anode-effect forecast against the simulator's truth, beside naive predictors.

Runs the shipped recipe ``recipes/nd_cell_6ka.yaml`` closed loop with both controllers
(``baseline``, ``mpc``) on scenarios where anode effects happen (``bench/scenarios/feeder_blocked.yaml``:
the feeder blocked for 1 h; ``bench/scenarios/oxide_starvation.yaml``: slow-dissolving feed, then 2 h
on a 4 kg/h local schedule), 7 h each. Per cycle it keeps the estimate's forecast and its inputs
(dissolved oxide and σ, critical oxide, oxide rate, pseudo-resistance slope) and the truth's
``anode_effect``. The forecast depends on no threshold and does not act on the plant, so every
predictor is replayed on the same runs:

* ``forecast``: the recipe's forecast (``ae_forecast_probability ≥ ae_forecast_threshold``; the replay
  must give the run's recorded probability: checked);
* ``oxide route``: the same with the voltage route off;
* ``naive slope``: pseudo-resistance slope ≥ a fixed trigger (voltage precursor alone);
* ``naive oxide``: the filter's dissolved-oxide estimate ≤ a fixed level (no σ, no rate).

The naive triggers are tuned on the tuning seeds (best F1), as are the forecast's threshold and
slope point, which then are the recipe defaults: the bench prints the tuned values beside the
recipe's. Figures are on the evaluation seeds only.

Scoring. True anode effects: runs of ``anode_effect`` cycles merged when less than 60 s apart
(the KPIs' ``ae_merge_s``). Alarm episodes: runs of alarm cycles, merged when less than 60 s apart.
The lead of a true anode effect is its onset minus the start of the episode in force at the cycle
before onset, counted at most from the end of the previous anode effect; *hit* when ≥ 60 s. An
episode is *false* when no anode effect begins after its start and within the horizon after its
end; episodes that begin during an anode effect are not judged. Precision = judged episodes not
false / judged episodes; recall = hit rate; F1 = 2PR/(P+R). Rates per cell-day = per 24 h of run.
"first AE" figures use only each run's first anode effect (the one out of normal operation; the
later ones come in the degraded state that follows). Output: stdout and
``bench/results_anode_effect_forecast.txt``.

    python bench/anode_effect_forecast.py [--tune-seeds 31-32] [--seeds 41-43] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import pickle
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.cycle_record import CycleRecord
from apc.kinds.electrolysis_cell.anode_effect_forecast import AeForecastConfig, oxide_probabilities
from apc.kinds.electrolysis_cell.kpi import KpiConfig
from apc.kinds.electrolysis_cell.recipe import CellRecipe
from apc.seeds import parse_seeds
from apc.simulate import run_on
from estimators.ae_forecast import AE_FORECAST_LEAD, AE_FORECAST_PROBABILITY, OXIDE_INPUTS, SLOPE
from estimators.filtered import AE_DETECTED
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
SCENARIOS = (ROOT / "bench" / "scenarios" / "feeder_blocked.yaml",
             ROOT / "bench" / "scenarios" / "oxide_starvation.yaml")
RESULTS = ROOT / "bench" / "results_anode_effect_forecast.txt"
CONTROLLERS = ("baseline", "mpc")
MIN_LEAD_S = 60.0
EPISODE_MERGE_S = 60.0
COLUMNS = ("t_s", "truth_ae", "truth_oxide", *OXIDE_INPUTS, SLOPE, AE_FORECAST_PROBABILITY, AE_FORECAST_LEAD,
           AE_DETECTED)
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SLOPE_POINTS = (20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 200.0, 400.0, 800.0)
"""Candidate slope points of the voltage route (the oxide route alone is scored as its own row)."""
NAIVE_SLOPES = (5.0, 10.0, 16.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 200.0, 300.0)
NAIVE_OXIDES = tuple(round(1.0 + 0.05 * k, 2) for k in range(21))


@dataclass(frozen=True)
class Trace:
    """One closed-loop run's per-cycle columns (``COLUMNS``)."""

    scenario: str
    seed: int
    controller: str
    hours: float
    data: dict[str, np.ndarray]
    wall_s: float


async def _run(seed: int, controller: str, hours: float, scenario_path: str) -> Trace:
    loaded = load(RECIPE)
    scen = load_scenario(scenario_path)
    clock = VirtualClock()
    unit, _ = build_sim_unit("bench", loaded, scen, seed, clock, audit=null_logger(),
                             controller_kind=controller)  # type: ignore[arg-type]
    rows: list[tuple[float, ...]] = []

    def observe(rec: CycleRecord) -> None:
        assert rec.truth is not None
        ex = rec.estimate.extras
        rows.append((rec.t_s, float(rec.truth["anode_effect"]), float(rec.truth["dissolved_oxide_wtpct"]),
                     *(float(ex.get(n, math.nan)) for n in COLUMNS[3:])))

    t0 = time.perf_counter()
    await run_on(unit, clock, hours, who="bench", where="anode_effect_forecast", after_cycle=observe)
    arr = np.array(rows, dtype=float)
    return Trace(scen.name, seed, controller, hours, {c: arr[:, i] for i, c in enumerate(COLUMNS)},
                 time.perf_counter() - t0)


def _job(args: tuple[int, str, float, str]) -> Trace:
    return asyncio.run(_run(*args))


# ------------------------------------------------------------------ replays
def oxide_max(tr: Trace, cfg: AeForecastConfig) -> np.ndarray:
    """Per cycle, the oxide route's probability over the horizon (max_k P_k)."""
    cols = [tr.data[n] for n in OXIDE_INPUTS]
    return np.array([max(oxide_probabilities(*(float(c[i]) for c in cols), cfg)) for i in range(len(cols[0]))])


def voltage_route(slope: np.ndarray, cfg: AeForecastConfig) -> np.ndarray:
    """The voltage route (logistic in the slope; 0 where the slope is NaN or the route is off)."""
    if not math.isfinite(cfg.slope_uohm_h):
        return np.zeros_like(slope)
    z = np.clip((np.nan_to_num(slope, nan=-np.inf) - cfg.slope_uohm_h) / cfg.slope_width_uohm_h, -700.0, 700.0)
    return 1.0 / (1.0 + np.exp(-z))


def combined(p_ox: np.ndarray, slope: np.ndarray, cfg: AeForecastConfig) -> np.ndarray:
    """max_k Q_k = 1 − (1 − max_k P_k)(1 − p_v) (Q_k is monotone in P_k)."""
    return 1.0 - (1.0 - p_ox) * (1.0 - voltage_route(slope, cfg))


# ------------------------------------------------------------------ scoring
def _runs_of(t: np.ndarray, flag: np.ndarray, merge_s: float) -> list[tuple[float, float]]:
    """(first, last) time of runs of True, merged when the gap is below ``merge_s``."""
    out: list[tuple[float, float]] = []
    for ti, f in zip(t, flag):
        if not f:
            continue
        if out and ti - out[-1][1] < merge_s:
            out[-1] = (out[-1][0], float(ti))
        else:
            out.append((float(ti), float(ti)))
    return out


@dataclass
class Score:
    """A predictor against truth over some runs."""

    aes: int = 0
    hits: int = 0
    leads_s: list[float] | None = None
    judged: int = 0
    false: int = 0
    cell_days: float = 0.0
    first_aes: int = 0
    first_hits: int = 0
    first_leads_s: list[float] | None = None

    def __post_init__(self) -> None:
        self.leads_s = [] if self.leads_s is None else self.leads_s
        self.first_leads_s = [] if self.first_leads_s is None else self.first_leads_s

    @property
    def recall(self) -> float:
        return self.hits / self.aes if self.aes else math.nan

    @property
    def precision(self) -> float:
        return (self.judged - self.false) / self.judged if self.judged else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def false_per_day(self) -> float:
        return self.false / self.cell_days if self.cell_days else math.nan


def score_run(tr: Trace, alarm: np.ndarray, horizon_s: float, period_s: float, sc: Score) -> None:
    """Add one run's anode effects and episodes to ``sc`` (see the module docstring)."""
    t = tr.data["t_s"]
    merge_s = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(0.0, 1.0)).ae_merge_s
    aes = _runs_of(t, tr.data["truth_ae"] >= 0.5, merge_s)
    eps = _runs_of(t, alarm, EPISODE_MERGE_S)
    assert sc.leads_s is not None and sc.first_leads_s is not None
    prev_end = -math.inf
    for j, (on, end) in enumerate(aes):
        before = on - period_s
        ep = next((e for e in eps if e[0] <= before <= e[1] + 1e-9), None)
        lead = 0.0 if ep is None else on - max(ep[0], prev_end + period_s)
        hit = lead >= MIN_LEAD_S
        sc.aes += 1
        sc.hits += hit
        if hit:
            sc.leads_s.append(lead)
        if j == 0:
            sc.first_aes += 1
            sc.first_hits += hit
            if hit:
                sc.first_leads_s.append(lead)
        prev_end = end
    for a, b in eps:
        if any(s <= a <= e for s, e in aes):
            continue  # begins during an anode effect: not judged
        sc.judged += 1
        if not any(a < on <= b + horizon_s for on, _ in aes):
            sc.false += 1
    sc.cell_days += tr.hours / 24.0


def score(traces: list[Trace], alarm_of: Callable[[Trace], np.ndarray], horizon_s: float, period_s: float) -> Score:
    """One predictor over ``traces``."""
    sc = Score()
    for tr in traces:
        score_run(tr, alarm_of(tr), horizon_s, period_s, sc)
    return sc


def _lead(values: list[float] | None) -> str:
    if not values:
        return "median -, min -"
    return f"median {statistics.median(values) / 60:.1f} min, min {min(values) / 60:.1f} min"


def _line(name: str, sc: Score) -> str:
    return (f"{name:12s} AEs {sc.aes:3d}  hit {sc.hits:3d} ({100 * sc.recall:5.1f} %)  lead {_lead(sc.leads_s):28s} "
            f"episodes {sc.judged:3d} false {sc.false:3d} ({sc.false_per_day:5.2f}/cell-day)  "
            f"precision {100 * sc.precision:5.1f} %  F1 {100 * sc.f1:5.1f} %  | first AE: hit {sc.first_hits}/"
            f"{sc.first_aes}, lead {_lead(sc.first_leads_s)}")


# ------------------------------------------------------------------ main
def main() -> None:
    """Run tuning and evaluation seeds, tune on the former, print figures of the latter."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune-seeds", default="31-32")
    ap.add_argument("--seeds", default="41-43")
    ap.add_argument("--hours", type=float, default=None, help="default: each scenario's hours")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--cache", default="", help="pickle of the runs: read when it exists, else written")
    args = ap.parse_args()
    tune_seeds, eval_seeds = parse_seeds(args.tune_seeds), parse_seeds(args.seeds)
    if set(tune_seeds) & set(eval_seeds):
        raise SystemExit("tuning and evaluation seeds must differ")
    loaded = load(RECIPE)
    recipe = loaded.recipe
    assert isinstance(recipe, CellRecipe)
    cfg = AeForecastConfig.from_recipe(recipe)
    period = recipe.period_s
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    jobs = []
    for path in SCENARIOS:
        scen = load_scenario(str(path))
        hours = float(args.hours if args.hours is not None else scen.hours)
        jobs += [(s, c, hours, str(path)) for s in tune_seeds + eval_seeds for c in CONTROLLERS]
    traces: list[Trace] = []
    t_all = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        traces = pickle.loads(cache.read_bytes())
    else:
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            for fut in as_completed([pool.submit(_job, j) for j in jobs]):
                tr = fut.result()
                traces.append(tr)
                print(f"done {tr.scenario} seed {tr.seed} {tr.controller:8s} in {tr.wall_s:5.0f} s", flush=True)
        if cache is not None:
            cache.write_bytes(pickle.dumps(traces))
    wall = time.perf_counter() - t_all
    traces.sort(key=lambda r: (r.scenario, r.seed, r.controller))
    tune = [r for r in traces if r.seed in tune_seeds]
    evals = [r for r in traces if r.seed in eval_seeds]
    p_ox = {id(r): oxide_max(r, cfg) for r in traces}

    out(f"Anode-effect forecast: {RECIPE.name} (sha256 {loaded.sha256[:12]}), scenarios "
        f"{[p.name for p in SCENARIOS]}, controllers {list(CONTROLLERS)}, 7 h runs")
    out(f"tuning seeds {tune_seeds}, evaluation seeds {eval_seeds}; recipe forecast: horizon {cfg.horizon_s:g} s, "
        f"step {cfg.step_s:g} s, threshold {cfg.threshold:g}, slope point {cfg.slope_uohm_h:g} uOhm/h, "
        f"width {cfg.slope_width_uohm_h:g} uOhm/h")
    replay_ok = all(np.allclose(combined(p_ox[id(r)], r.data[SLOPE], cfg), r.data[AE_FORECAST_PROBABILITY],
                                rtol=0.0, atol=1e-12) for r in traces)
    lead_nan_ok = all(bool(np.all(np.isnan(r.data[AE_FORECAST_LEAD]) == (r.data[AE_FORECAST_PROBABILITY]
                                                                         < cfg.threshold))) for r in traces)
    out(f"replayed probability equals the recorded ae_forecast_probability: {'yes' if replay_ok else 'NO'}; "
        f"ae_forecast_lead_s is NaN exactly below the threshold: {'yes' if lead_nan_ok else 'NO'}")

    # Tuning (tuning seeds only): forecast threshold and slope point, naive triggers.
    def best(cands: list[tuple[str, Callable[[Trace], np.ndarray]]]) -> tuple[str, Score]:
        scored = [(name, score(tune, fn, cfg.horizon_s, period)) for name, fn in cands]
        return max(scored, key=lambda ns: (ns[1].f1, -ns[1].false))

    fc_cands = [(f"{thr:g}|{sp:g}",
                 (lambda r, thr=thr, sp=sp: combined(p_ox[id(r)], r.data[SLOPE],
                                                     replace(cfg, slope_uohm_h=sp)) >= thr))
                for thr in THRESHOLDS for sp in SLOPE_POINTS]
    fc_best, fc_tune = best(fc_cands)
    ns_best, ns_tune = best([(f"{s:g}", (lambda r, s=s: np.nan_to_num(r.data[SLOPE], nan=-np.inf) >= s))
                             for s in NAIVE_SLOPES])
    no_best, no_tune = best([(f"{c:g}", (lambda r, c=c: np.nan_to_num(r.data["dissolved_oxide_wtpct"],
                                                                      nan=np.inf) <= c))
                             for c in NAIVE_OXIDES])
    thr_t, sp_t = fc_best.split("|")
    out()
    out(f"tuned on seeds {tune_seeds} (best F1 at >= 1 min lead, both scenarios and controllers):")
    out(f"  forecast: threshold {thr_t}, slope point {sp_t} uOhm/h (F1 {100 * fc_tune.f1:.1f} %); "
        f"recipe has {cfg.threshold:g}, {cfg.slope_uohm_h:g}")
    out(f"  naive slope trigger: slope >= {ns_best} uOhm/h (F1 {100 * ns_tune.f1:.1f} %)")
    out(f"  naive oxide trigger: oxide estimate <= {no_best} wt% (F1 {100 * no_tune.f1:.1f} %)")

    ns_v, no_v = float(ns_best), float(no_best)
    predictors: list[tuple[str, Callable[[Trace], np.ndarray]]] = [
        ("forecast", lambda r: r.data[AE_FORECAST_PROBABILITY] >= cfg.threshold),
        ("oxide route", lambda r: p_ox[id(r)] >= cfg.threshold),
        ("naive slope", lambda r: np.nan_to_num(r.data[SLOPE], nan=-np.inf) >= ns_v),
        ("naive oxide", lambda r: np.nan_to_num(r.data["dissolved_oxide_wtpct"], nan=np.inf) <= no_v),
    ]
    out()
    out(f"evaluation seeds {eval_seeds} (hit: forecast in force >= {MIN_LEAD_S:g} s before onset; "
        f"false: episode with no onset within {cfg.horizon_s:g} s after it):")
    groups = [(f"{s.stem} / {c}", [r for r in evals if r.scenario == s.stem and r.controller == c])
              for s in SCENARIOS for c in CONTROLLERS]
    groups += [(f"{s.stem} / both", [r for r in evals if r.scenario == s.stem]) for s in SCENARIOS]
    groups.append(("all", evals))
    for gname, sel in groups:
        days = sum(r.hours for r in sel) / 24.0
        out(f"{gname} ({len(sel)} runs, {days:.2f} cell-days):")
        for name, fn in predictors:
            out("  " + _line(name, score(sel, fn, cfg.horizon_s, period)))
    out()
    out("per run (evaluation seeds): first true AE (h), first forecast >= threshold (h), first detected AE (h), "
        "truth / estimate oxide at the forecast (wt%), critical oxide estimate there")
    for r in evals:
        d = r.data
        t_h = d["t_s"] / 3600.0
        ae = np.flatnonzero(d["truth_ae"] >= 0.5)
        fc = np.flatnonzero(d[AE_FORECAST_PROBABILITY] >= cfg.threshold)
        det = np.flatnonzero(d[AE_DETECTED] >= 0.5)
        i_fc = int(fc[0]) if fc.size else -1

        def at(i: int, col: str, d: dict[str, np.ndarray] = d) -> str:
            return f"{d[col][i]:.2f}" if i >= 0 else "-"
        out(f"  {r.scenario:17s} seed {r.seed} {r.controller:8s} AE {t_h[ae[0]] if ae.size else math.nan:5.2f}  "
            f"forecast {t_h[i_fc] if i_fc >= 0 else math.nan:5.2f}  detected "
            f"{t_h[det[0]] if det.size else math.nan:5.2f}  oxide {at(i_fc, 'truth_oxide')} / "
            f"{at(i_fc, 'dissolved_oxide_wtpct')}  critical {at(i_fc, 'critical_oxide_wtpct')}")
    out(f"\nwall time {wall:.0f} s for {len(traces)} runs with {args.workers} workers"
        + (" (runs read from a cache)" if cache is not None and wall < 5.0 else ""))
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""``apc tune SPEC.yaml``: a seeded Optuna search over recipe overrides, checked on held-out seeds.

The sampler (TPE) is seeded and asked ``batch`` trials at a time, each trial's runs go to the backend,
and its score is told back before the next batch is asked, so the same spec gives the same trials
whatever backend or worker count runs them. A trial's score is the mean over the training seeds of
the objective expression plus ``penalty`` per violated constraint; a trial whose objective is not a
number (a KPI missing) fails and is never the winner. The winner, the recipe as it is, and the
spec's ``compare`` sets then run on the held-out seeds. The recipe file is never written: the
winner goes out as overrides and as a unified diff for review.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from apc.export import require
from apc.recipe.override_text import OverrideTextError, recipe_diff
from apc.recipe.overrides import parse_overrides
from apc.sweep.runner import Backend, Progress, RunJob, RunResult, run_all
from apc.sweep.tune_spec import Objective, Parameter, TuneSpec

__all__ = ["TrialResult", "TuneOutcome", "run_tune", "score_runs"]

AS_IS = "recipe as is"


@dataclass(frozen=True)
class TrialResult:
    """One trial: its overrides (``PATH=VALUE``), score and the mean KPIs over its seeds."""

    number: int
    overrides: tuple[str, ...]
    score: float
    means: dict[str, float]


@dataclass(frozen=True)
class TuneOutcome:
    """The search's trials, winner, held-out figures, summary text and the files written."""

    trials: list[TrialResult]
    best: TrialResult
    holdout: dict[str, TrialResult]
    summary: str
    files: list[Path]


def score_runs(objective: Objective, kpis: Sequence[Mapping[str, Any]]) -> float:
    """Mean over runs of the objective plus (minimising; minus, maximising) the penalty per violated constraint."""
    total = 0.0
    sign = 1.0 if objective.minimise else -1.0
    for k in kpis:
        value = objective.expr.evaluate(k)
        violated = sum(1 for c in objective.constraints if c.evaluate(k) != 1.0)
        total += value + sign * objective.penalty * violated
    return total / len(kpis) if kpis else math.nan


def _means(results: Sequence[RunResult], names: Sequence[str]) -> dict[str, float]:
    out = {}
    for n in names:
        vals = [float(v) for r in results if isinstance(v := r.kpis.get(n), (int, float))]
        out[n] = sum(vals) / len(vals) if len(vals) == len(results) and vals else math.nan
    return out


def _suggest(trial: Any, p: Parameter) -> str:
    if p.choices:
        return str(trial.suggest_categorical(p.path, list(p.choices)))
    if p.integer:
        return str(trial.suggest_int(p.path, int(p.low), int(p.high), log=p.log,
                                     step=int(p.step) if p.step else 1))
    v = float(trial.suggest_float(p.path, p.low, p.high, log=p.log, step=p.step))
    return repr(float(f"{v:.{p.digits}g}"))


def _jobs(spec: TuneSpec, overrides: tuple[str, ...], seeds: Sequence[int], tag: str) -> list[RunJob]:
    f = spec.fields
    base = tuple(f"{o.path}={o.value_text}" for o in spec.fixed)
    return [RunJob(str(spec.recipe_path), base + overrides, f.controller, f.scenario, s, f.hours, tag=tag)
            for s in seeds]


def run_tune(spec: TuneSpec, backend: Backend, out: Path, progress: Progress | None = None) -> TuneOutcome:
    """Run the search and the held-out comparison; write the results into ``out``."""
    optuna = require("optuna", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f = spec.fields
    study = optuna.create_study(direction="minimize" if spec.objective.minimise else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=f.sampler_seed,
                                                                   n_startup_trials=f.startup_trials))
    trials: list[TrialResult] = []
    while len(trials) < f.trials:
        asked = [study.ask() for _ in range(min(f.batch, f.trials - len(trials)))]
        sets = [tuple(f"{p.path}={_suggest(t, p)}" for p in spec.parameters) for t in asked]
        jobs = [j for t, s in zip(asked, sets) for j in _jobs(spec, s, f.train_seeds, f"trial {t.number}")]
        results = run_all(backend, jobs, progress)
        n = len(f.train_seeds)
        for i, (t, s) in enumerate(zip(asked, sets)):
            runs = results[i * n:(i + 1) * n]
            score = score_runs(spec.objective, [r.kpis for r in runs])
            trials.append(TrialResult(t.number, s, score, _means(runs, spec.show)))
            if math.isnan(score):
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(t, score)
    finished = [t for t in trials if not math.isnan(t.score)]
    if not finished:
        raise OSError("no trial gave a finite objective (are the runs long enough for the KPIs?)")
    best = next(t for t in trials if t.number == study.best_trial.number)
    configs: dict[str, tuple[str, ...]] = {"best": best.overrides, AS_IS: ()}
    for name, overrides in spec.compare.items():
        configs[name] = tuple(f"{o.path}={o.value_text}" for o in overrides)
    same = _same_recipes(spec, configs)
    if progress is not None:
        progress.total -= len(same) * len(f.holdout_seeds)
    jobs = [j for name, ov in configs.items() if name not in same for j in _jobs(spec, ov, f.holdout_seeds, name)]
    held = iter(run_all(backend, jobs, progress))
    n = len(f.holdout_seeds)
    holdout: dict[str, TrialResult] = {}
    per_seed: dict[str, list[RunResult]] = {}
    for name, ov in configs.items():
        runs = per_seed[same[name]] if name in same else [next(held) for _ in range(n)]
        per_seed[name] = runs
        holdout[name] = TrialResult(best.number if name == "best" else -1, ov,
                                    score_runs(spec.objective, [r.kpis for r in runs]), _means(runs, spec.show))
    files = _write(spec, out, trials, best, holdout)
    summary = _summary(spec, trials, best, holdout, per_seed)
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    files.append(out / "summary.txt")
    return TuneOutcome(trials, best, holdout, summary, files)


def _same_recipes(spec: TuneSpec, configs: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Configurations whose recipe equals an earlier one's (field by field): name → that earlier name.
    They are not run again (runs are deterministic per recipe and seed)."""
    from apc.sweep.spec_common import load_variant

    recipes = {name: load_variant(spec.recipe_path, spec.fixed + parse_overrides(ov)).recipe
               for name, ov in configs.items()}
    same: dict[str, str] = {}
    names = list(configs)
    for i, name in enumerate(names):
        for earlier in names[:i]:
            if earlier not in same and recipes[earlier] == recipes[name]:
                same[name] = earlier
                break
    return same


def _write(spec: TuneSpec, out: Path, trials: list[TrialResult], best: TrialResult,
           holdout: dict[str, TrialResult]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    names = [p.path for p in spec.parameters]
    path = out / "trials.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "score", *names, *(f"mean_{k}" for k in spec.show)])
        for t in trials:
            values = [o.partition("=")[2] for o in t.overrides]
            w.writerow([t.number, t.score, *values, *(t.means[k] for k in spec.show)])
    overrides_file = out / "best_overrides.yaml"
    data = {o.partition("=")[0]: yaml.safe_load(o.partition("=")[2]) for o in best.overrides}
    overrides_file.write_text(
        f"# apc tune {spec.path.name}: trial {best.number}, score {best.score:.6g} on seeds "
        f"{list(spec.fields.train_seeds)}, {holdout['best'].score:.6g} on held-out seeds "
        f"{list(spec.fields.holdout_seeds)} (recipe as is: {holdout[AS_IS].score:.6g}).\n"
        "# Try it: apc sim RECIPE " + " ".join(f"--set {o}" for o in best.overrides) + "\n"
        + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    files = [path, overrides_file]
    try:
        diff = recipe_diff(spec.recipe_path, parse_overrides(best.overrides))
        (out / "best.diff").write_text(diff, encoding="utf-8")
        files.append(out / "best.diff")
    except OverrideTextError as exc:
        (out / "best.diff.txt").write_text(f"not written: {exc}\n", encoding="utf-8")
    return files


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"


def _summary(spec: TuneSpec, trials: list[TrialResult], best: TrialResult, holdout: dict[str, TrialResult],
             per_seed: dict[str, list[RunResult]]) -> str:
    f, obj = spec.fields, spec.objective
    goal = ("minimise " if obj.minimise else "maximise ") + obj.expr.text
    if obj.constraints:
        goal += (f", penalty {obj.penalty:g} per violated constraint per seed: "
                 + "; ".join(c.text for c in obj.constraints))
    lines = [(f"apc tune {spec.path.name}: recipe {spec.recipe_path.name}, controller "
              f"{f.controller or 'the recipe’s'}, scenario {f.scenario or 'default'}, "
              f"{f.hours if f.hours is not None else 'default'} h per run"),
             f"objective: {goal}",
             (f"TPE sampler seed {f.sampler_seed} ({f.startup_trials} random trials first), {f.trials} trials in "
              f"batches of {f.batch}, training seeds "
              f"{list(f.train_seeds)}, held-out seeds {list(f.holdout_seeds)}"),
             *(f"fixed: {o.path}={o.value_text}" for o in spec.fixed), "",
             "trial   score  " + "  ".join(f"{k[:18]:>18s}" for k in spec.show) + "  overrides"]
    for t in trials:
        lines.append(f"{t.number:5d} {_fmt(t.score):>7s}  " + "  ".join(f"{_fmt(t.means[k]):>18s}" for k in spec.show)
                     + "  " + " ".join(o.partition("=")[2] for o in t.overrides))
    lines += ["", "parameters: " + ", ".join(p.path for p in spec.parameters),
              f"best: trial {best.number}, score {_fmt(best.score)}: " + ", ".join(best.overrides), "",
              "held-out seeds (mean over seeds):",
              f"{'':22s} {'score':>8s}  " + "  ".join(f"{k[:18]:>18s}" for k in spec.show)]
    for name, h in holdout.items():
        lines.append(f"{name:22s} {_fmt(h.score):>8s}  " + "  ".join(f"{_fmt(h.means[k]):>18s}" for k in spec.show))
    lines += [f"{name} is the same recipe as {other}: not run again" for name, other in _same_recipes(
        spec, {n: h.overrides for n, h in holdout.items()}).items()]
    lines += ["", "held-out seeds, per seed:"]
    for name, runs in per_seed.items():
        for r in runs:
            lines.append(f"{name:22s} seed {r.job.seed:3d} score {_fmt(score_runs(obj, [r.kpis])):>8s}  "
                         + ", ".join(f"{k} {_fmt(float(r.kpis.get(k, math.nan)))}" for k in spec.show))
    ref, won = holdout[AS_IS].score, holdout["best"].score
    verdict = ("as good as" if won == ref else
               "better than" if (won < ref) == obj.minimise else "worse than")
    lines.append(f"\nthe winner scores {_fmt(won)} on the held-out seeds, {verdict} the recipe "
                 f"as is ({_fmt(ref)})")
    return "\n".join(lines)

"""How many cells one ``apc run`` process runs on this machine, in real time, without missing a cycle.

For each N, one ``apc run`` (in a fresh subprocess) runs N cells of the shipped recipe
``recipes/nd_cell_6ka.yaml`` against in-process simulated plants (each with its DCS side), for
``--minutes`` of real time at a 5 s period, with the units' estimators and controllers in the
default compute-worker pool (one worker per core) and every cell's flight record and the audit log
written as in production. The recipe is used as shipped except for two things, both stated in the
output: ``controller.kind`` (baseline or mpc), and a one-minute warm-up (baseline signals from
three 15 s means instead of fifteen 2 min ones, estimator warm-up 15 s instead of 600) so that the
measured minutes are spent ON, writing setpoints, rather than warming up. CPU is counted from the
moment the units start cycling (start-up excluded).

Printed per N (from the records and the process accounting):

* cycles run, and missed slots (scheduled cycles that never ran);
* cycle start jitter p50 / p99: start of the cycle minus its slot, ms;
* write lateness p99 / max: slot to the end of the cycle's write, ms (target: under 10 % of the period);
* late answers (estimate or plan past the deadline, never used) and sheds;
* CPU per unit-cycle, ms: the runtime process (core, in-process plants, HMI-free) and the
  compute workers (children);
* the largest N with zero missed cycles.

Targets of the runtime issue on a 2-core machine: >= 300 cells with the baseline and its Kalman
filter, >= 100 cells with the MPC, zero missed cycles, write lateness p99 < 500 ms.

    python bench/fleet_scale.py --controller baseline --cells 100,200,300 --minutes 3
    python bench/fleet_scale.py --controller mpc --cells 50,100 --minutes 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
PERIOD_S = 5.0


def quick_recipe(directory: Path, controller: str) -> Path:
    """The shipped recipe with ``controller.kind`` and a 2.5-minute warm-up (see module docstring)."""
    text = RECIPE.read_text()
    edits = {
        "  kind: baseline\n  baseline:": f"  kind: {controller}\n  baseline:",
        "  warmup_s: 600\n": "  warmup_s: 15\n",
        "    mean_interval_s: 120\n    slope_window_s: 1800\n": "    mean_interval_s: 15\n    slope_window_s: 45\n",
        "model_file: models/nd_cell_bath_temp.onnx":
            f"model_file: {RECIPE.parent / 'models' / 'nd_cell_bath_temp.onnx'}",
    }
    for old, new in edits.items():
        if old not in text:
            raise SystemExit(f"the shipped recipe changed: cannot find {old!r} to edit")
        text = text.replace(old, new)
    path = directory / f"nd_cell_6ka_{controller}_quick.yaml"
    path.write_text(text)
    return path


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    """Direct child processes of this one (the compute workers)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


class _StartMark:
    """An output stream that notes the CPU used up to the moment the units start cycling (the line
    ``site …``): start-up (building plants, estimators, solvers) is not a cycle's cost."""

    def __init__(self) -> None:
        self.core_s: float | None = None
        self.workers: dict[int, float] = {}

    def write(self, text: str) -> int:
        if self.core_s is None and text.startswith("site "):
            self.core_s = _cpu_s(os.getpid())
            self.workers = {pid: _cpu_s(pid) for pid in _children()}
        return len(text)

    def flush(self) -> None:
        pass

    def core_used(self) -> float:
        """CPU seconds of this process since the mark."""
        return _cpu_s(os.getpid()) - (self.core_s or 0.0)


def one_run(n: int, controller: str, minutes: float, workers: int | None) -> dict[str, Any]:
    """Run N cells for ``minutes`` in this process; the figures as a mapping."""
    import asyncio

    import yaml

    from apc.assembly import load_site_file
    from apc.recorder import iter_record
    from apc.runtime import run_site

    tmp = Path(tempfile.mkdtemp(prefix=f"fleet-{controller}-{n}-"))
    recipe = quick_recipe(tmp, controller)
    units = [{"name": f"cell-{i:03d}", "recipe": str(recipe), "requested_mode": "ON",
              "plant": {"kind": "sim", "scenario": "nominal", "seed": 1000 + i}} for i in range(n)]
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"schema_version": 1, "site": f"fleet-{n}", "speed": 1.0, "units": units,
                                    "fsync_interval_s": 1.0}))
    loaded = load_site_file(site)
    rdir = tmp / "records"
    mark = _StartMark()
    wall0 = time.perf_counter()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = asyncio.run(run_site(loaded, hours=minutes / 60.0, record_dir=rdir, out=mark,  # type: ignore[arg-type]
                                status_every_s=1e9, compute_workers=workers))
    wall = time.perf_counter() - wall0
    core_cpu = mark.core_used()
    cpu1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # the workers' whole lives (reaped by now), less what they had spent building their units
    worker_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime) - sum(mark.workers.values())
    jitter, lateness = [], []
    cycles = missed = late = sheds = on = 0
    for path in sorted(rdir.glob("cell-*.apcrec")):
        prev = None
        for e in iter_record(path):
            if e.kind != "cycle":
                continue
            c = e.data
            cycles += 1
            start = c["actual_mono_s"] - c["scheduled_mono_s"]
            jitter.append(start)
            lateness.append(start + c.get("timing", {}).get("write_s", 0.0))
            late += 1 if c.get("late") else 0
            sheds += 1 if c["shed"] else 0
            on += 1 if c["mode"]["actual"] == "ON" else 0
            if prev is not None:
                missed += max(0, round((c["scheduled_mono_s"] - prev) / PERIOD_S) - 1)
            prev = c["scheduled_mono_s"]
    jitter.sort()
    lateness.sort()

    def q(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000.0 if xs else float("nan")

    return {"n": n, "controller": controller, "exit": code, "wall_s": wall, "cycles": cycles, "missed": missed,
            "on_share": on / cycles if cycles else 0.0, "late": late, "sheds": sheds,
            "jitter_p50_ms": q(jitter, 0.5), "jitter_p99_ms": q(jitter, 0.99),
            "lateness_p99_ms": q(lateness, 0.99), "lateness_max_ms": q(lateness, 1.0),
            "core_cpu_ms_per_cycle": 1000.0 * core_cpu / max(cycles, 1),
            "worker_cpu_ms_per_cycle": 1000.0 * worker_cpu / max(cycles, 1),
            "maxrss_core_mb": cpu1.ru_maxrss / 1024.0, "maxrss_worker_mb": kids1.ru_maxrss / 1024.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--controller", choices=("baseline", "mpc"), default="baseline")
    ap.add_argument("--cells", default="50,100,200,300", help="comma-separated N")
    ap.add_argument("--minutes", type=float, default=3.0, help="real minutes per N (after the start-up)")
    ap.add_argument("--workers", type=int, default=None, help="compute workers (default: one per core)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.controller, args.minutes, args.workers)))
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"fleet scale: {RECIPE.name} ({args.controller}; one-minute warm-up), in-process simulated plants, "
          f"real time, period {PERIOD_S:g} s, {args.minutes:g} min per N, {cores} cores, "
          f"compute workers {args.workers if args.workers is not None else 'one per core'}", flush=True)
    header = (f"{'N':>5} {'cycles':>7} {'missed':>6} {'ON %':>5} {'late':>5} {'sheds':>5} {'jit p50':>8} "
              f"{'jit p99':>8} {'late p99':>9} {'late max':>9} {'core ms':>8} {'work ms':>8} {'rss MB':>7}")
    print(header, flush=True)
    best = None
    for n in (int(x) for x in args.cells.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--controller", args.controller, "--minutes",
               str(args.minutes)] + (["--workers", str(args.workers)] if args.workers is not None else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{n:>5} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{n:>5} {r['cycles']:>7} {r['missed']:>6} {100 * r['on_share']:>5.1f} {r['late']:>5} {r['sheds']:>5} "
              f"{r['jitter_p50_ms']:>8.1f} {r['jitter_p99_ms']:>8.1f} {r['lateness_p99_ms']:>9.1f} "
              f"{r['lateness_max_ms']:>9.1f} {r['core_cpu_ms_per_cycle']:>8.2f} {r['worker_cpu_ms_per_cycle']:>8.2f} "
              f"{r['maxrss_core_mb']:>7.0f}", flush=True)
        if r["missed"] == 0:
            best = n
    print(f"largest N with zero missed cycles: {best if best is not None else 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

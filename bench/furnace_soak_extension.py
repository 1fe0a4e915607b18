"""Size the PID baseline's fixed soak extension for the worst-case annealing load.

Plants that cannot see the coil core soak on the gas thermocouple and add a
fixed extension long enough for the slowest load they anneal. This script
does that sizing on the simulator: it builds the slowest plant the nominal
scenario can draw (every parameter that slows the core at its 3-sigma corner:
heaviest load, poorest gas-to-load transfer, most resistive wraps), runs the
recipe's PID baseline with an effectively endless extension, and reports how
long after the baseline (thermocouple) soak began the TRUE core had completed the
soak time inside the band. The extension is that time minus the soak,
rounded up to 10 min; paste it into ``batch.baseline_soak_extension_min``.

    python bench/furnace_soak_extension.py [--recipe recipes/annealing_furnace.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
from pathlib import Path

import structlog

from apc.assembly import load
from apc.kinds import kind_of
from apc.recorder import iter_record
from apc.simulate import simulate
from sim.models import get_model

ROOT = Path(__file__).resolve().parent.parent
SLOW_DIRECTION = {"load_mass_t": +1, "convective_hA_kW_K": -1, "core_resistance_K_kW": +1,
                  "furnace_heat_capacity_kJ_K": +1, "loss_resistance_K_kW": -1, "load_tc_time_constant_s": +1}
"""Sign of the 3-sigma corner that slows the core, per spread parameter."""


def main() -> None:
    """Run the worst-case load and print the extension."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "annealing_furnace.yaml"))
    ap.add_argument("--record", default="soak_extension.apcrec")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    loaded = load(args.recipe)
    recipe = loaded.recipe
    assert recipe.curve is not None and recipe.batch is not None
    sc = kind_of(recipe).load_scenario(None)
    nominal = dict(zip(get_model(sc.model).parameter_names, get_model(sc.model).parameter_vector(sc.plant_parameters)))
    worst = {n: nominal[n] * (1.0 + SLOW_DIRECTION.get(n, 0) * 3.0 * sigma) for n, sigma in sc.parameter_spread.items()}
    worst_sc = dataclasses.replace(sc, name=f"{sc.name}-worst", parameter_spread={},
                                   plant_parameters={**sc.plant_parameters, **worst})
    batch = dataclasses.replace(recipe.batch, baseline_soak_extension_min=24 * 60.0)
    long_recipe = dataclasses.replace(loaded, recipe=dataclasses.replace(recipe, batch=batch))
    record = Path(args.record)
    record.unlink(missing_ok=True)
    asyncio.run(simulate(long_recipe, worst_sc, seed=0, controller="baseline", record_path=record))
    soak = next(s for s in recipe.curve.segments if s.kind == "soak")
    lo, hi = soak.band_degC  # type: ignore[misc]
    started = None
    in_band_s, last_t, done_at = 0.0, None, None
    for e in iter_record(record):
        if e.kind != "cycle" or not e.data.get("batch"):
            continue
        c, b = e.data, e.data["batch"]
        if b["kind"] != "soak":
            continue
        started = c["t_s"] if started is None else started
        core = c["truth"][recipe.curve.controlled]
        if last_t is not None and lo <= core <= hi:
            in_band_s += c["t_s"] - last_t
        last_t = c["t_s"]
        if done_at is None and in_band_s >= soak.time_s:
            done_at = c["t_s"]
    record.unlink(missing_ok=True)
    print(f"worst-case plant: {', '.join(f'{n} {v:.4g}' for n, v in worst.items())}")
    if started is None or done_at is None:
        print("the true core never completed the soak within a day: no extension is long enough")
        return
    needed_min = (done_at - started) / 60.0 - soak.time_s / 60.0
    print(f"baseline (thermocouple) soak began at {started / 3600.0:.2f} h; the true core completed "
          f"{soak.time_s / 60.0:.0f} min in [{lo:g}, {hi:g}] degC at {done_at / 3600.0:.2f} h")
    print(f"baseline_soak_extension_min: {10.0 * math.ceil(needed_min / 10.0):.0f}   "
          f"(needed {needed_min:.1f} min)")


if __name__ == "__main__":
    main()

"""The reduction–distillation furnace kind: its model's balances, its recipe and scenarios, a short
batch with either controller through ``apc sim``, determinism, and the kind on the virtual plant
(served on loopback and run by the runtime)."""

from __future__ import annotations

import asyncio
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import apc.runtime as runtime
from apc.assembly import load, load_site_file
from apc.cli import main as cli_main
from apc.clock import VirtualClock
from apc.kinds import get_kind, kind_of
from apc.kinds.furnace.kind import COMMON_SIMULATOR_FILES
from apc.kinds.furnace.kpi import FURNACE_KPI_KEYS
from apc.plant_sim_cli import load_plant_file
from apc.provenance import tree_sha256
from apc.recorder import read_record
from apc.types import Quality, Write
from plant_io.bindings import parse_bindings, parse_endpoint
from plant_io.modbus_client import ModbusPlantIO
from plant_io.virtual_plant import VirtualPlant, VirtualUnit, generate_bindings
from sim.models import get_model
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ROOT

RECIPE = ROOT / "recipes" / "reduction_furnace.yaml"
D_NOMINAL = {"cooling_water_temp_degC": 25.0, "leak_rate_Pa_m3_s": 0.002}


def _model_run(power_kW: float, hours: float, dt_s: float = 20.0) -> tuple[Any, np.ndarray, list[dict[str, float]]]:
    """The nominal model from a cold retort at constant power, RK4 at ``dt_s``; aux every step."""
    m = get_model("reduction_furnace")
    p = m.parameter_vector()
    step = m.rk4_step(dt_s)
    x = np.array([25.0, 25.0, 25.0, 25.0, 0.05, 0.0, 0.0, 0.0])
    d = m.vector(m.disturbance_names, D_NOMINAL)
    aux = []
    for _ in range(int(hours * 3600 / dt_s)):
        x = np.asarray(step(x, [power_kW], d, p)).ravel()
        aux.append(dict(zip(m.state_names + m.aux_names,
                            list(x) + list(np.asarray(m.aux(x, [power_kW], d, p)).ravel()))))
    return m, p, aux


def test_model_balances_hold_and_pressure_stays_positive_at_full_power() -> None:
    """At full power for 4 h (RK4, 20 s steps): finite, pressure > 0, 0 ≤ α ≤ 1, condensed ≤ distilled ≤ reduced metal."""
    m, p, run = _model_run(100.0, 4.0)
    P = dict(zip(m.parameter_names, p))
    m_max = P["oxide_mass_kg"] / P["oxide_molar_mass_kg_mol"] * P["metal_per_oxide"] * P["metal_molar_mass_kg_mol"]
    assert 25.0 < m_max < 27.0  # 30 kg Sm2O3 holds 25.9 kg Sm
    for s in run:
        assert all(math.isfinite(v) for v in s.values())
        assert s["chamber_pressure_Pa"] > 0.0
        assert -1e-9 <= s["reacted_fraction"] <= 1.0 + 1e-9
        assert s["distilled_kg"] <= s["reacted_fraction"] * m_max + 1e-6
        assert -1e-6 <= s["condensed_kg"] <= s["distilled_kg"] + 1e-6
        assert s["escaped_kg"] == pytest.approx(s["distilled_kg"] - s["condensed_kg"], abs=1e-9)
        assert s["metal_in_charge_kg"] >= -1e-6
    assert run[-1]["reacted_fraction"] > 0.99  # the charge is reduced at 1200+ degC within hours


def test_model_steady_state_at_the_reduction_temperature_is_sane() -> None:
    """Held at 1200 °C (solved steady state): holding power 25–60 kW, pressure 0.05–2 Pa, condenser below 300 °C."""
    from scipy.optimize import fsolve

    m = get_model("reduction_furnace")
    p = m.parameter_vector()
    d = m.vector(m.disturbance_names, D_NOMINAL)
    i = {n: k for k, n in enumerate(m.state_names)}
    P = dict(zip(m.parameter_names, p))
    m_max = P["oxide_mass_kg"] / P["oxide_molar_mass_kg_mol"] * P["metal_per_oxide"] * P["metal_molar_mass_kg_mol"]

    def full(z: np.ndarray) -> np.ndarray:
        # unknowns: retort, condenser, pressure, power; charge and thermocouple at 1200, reaction done
        return np.array([1200.0, z[0], 1200.0, z[1], z[2], 1.0, m_max, m_max])

    def residual(z: np.ndarray) -> np.ndarray:
        f = np.asarray(m.f(full(z), [z[3]], d, p)).ravel()
        return np.array([f[i["charge_temp_degC"]], f[i["retort_temp_degC"]], f[i["condenser_temp_degC"]],
                         f[i["chamber_pressure_Pa"]]])

    z, _, ok, msg = fsolve(residual, np.array([1210.0, 100.0, 0.5, 35.0]), full_output=True)
    assert ok == 1, msg
    retort, condenser, pressure, power = z
    assert 1200.0 < retort < 1230.0
    assert 25.0 < condenser < 300.0
    assert 0.05 < pressure < 2.0
    assert 25.0 < power < 60.0


def test_recipe_and_scenarios_load_and_the_kind_keeps_other_hashes_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """apc check passes; every scenario of the kind loads; its hash covers its own folder, the VIM's not."""
    assert cli_main(["check", str(RECIPE)]) == 0
    assert "ok" in capsys.readouterr().out
    loaded = load(RECIPE)
    kind = kind_of(loaded.recipe)
    assert kind is get_kind("reduction_furnace") and loaded.recipe.model.name == "reduction_furnace"
    for name in ("nominal", "reduction_leak", "reduction_tc_fault"):
        sc = kind.load_scenario(name)
        assert sc.model == "reduction_furnace" and kind.scenario_problem(loaded, sc) == ""
    assert kind.load_scenario("reduction_leak").disturbances["leak_rate_Pa_m3_s"] > 10 * D_NOMINAL["leak_rate_Pa_m3_s"]
    vim = get_kind("vacuum_furnace")
    assert vim.simulator_sha256() == tree_sha256((*COMMON_SIMULATOR_FILES, "sim/models/vim_furnace.py"),
                                                 ("sim/scenarios/furnace",))
    assert kind.simulator_sha256() != vim.simulator_sha256()


def _short_recipe(tmp: Path) -> Path:
    """The shipped recipe with a short curve (ramp to 150 °C, 5 min soak, short cool): one fast batch."""
    doc = yaml.safe_load(RECIPE.read_text())
    doc["curve"]["segments"] = [
        {"kind": "ramp", "rate_degC_min": 8, "target_degC": 150},
        {"kind": "soak", "time_min": 5, "band_degC": [140, 160]},
        {"kind": "cool", "rate_degC_min": 2, "target_degC": 140},
    ]
    path = tmp / "reduction_short.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _sim_json(recipe: Path, controller: str, seed: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli_main(["sim", str(recipe), "--controller", controller, "--seed", str(seed), "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("controller", ["baseline", "mpc"])
def test_a_short_batch_completes_with_either_controller(controller: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`apc sim` without --hours runs the whole (short) batch: complete, soak done, every furnace KPI key."""
    out = _sim_json(_short_recipe(tmp_path), controller, 7, capsys)
    assert out["batch"] == "complete" and out["controller"] == controller
    kpis = out["kpis"]
    assert set(FURNACE_KPI_KEYS) <= set(kpis)
    assert kpis["soak_complete"] == 1 and kpis["pressure_violations"] == 0 and kpis["sheds"] == 0
    assert 20.0 < kpis["batch_time_min"] < 240.0 and kpis["energy_kWh"] > 0.0
    assert kpis["tracking_rmse_degC"] < 50.0  # sanity only: the PI lags an 8 K/min ramp from cold by ~30 K


def test_same_seed_gives_the_same_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `apc sim --json` runs with one seed print the same (and the run did something)."""
    recipe = _short_recipe(tmp_path)
    first = _sim_json(recipe, "baseline", 11, capsys)
    assert first["kpis"]["energy_kWh"] > 0.0
    assert _sim_json(recipe, "baseline", 11, capsys) == first


def test_virtual_plant_serves_a_reduction_furnace_on_modbus(tmp_path: Path) -> None:
    """On loopback Modbus the furnace's tags read good and finite, and a power setpoint makes the loop remote and heats."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("rf-01", "reduction_nominal", 1, kind="reduction_furnace", protocol="modbus",
                                       port=free_port())], clock)
        async with vp:
            generate_bindings(vp, tmp_path)
            doc = yaml.safe_load((tmp_path / "rf-01.yaml").read_text())
            client = ModbusPlantIO(parse_endpoint(doc["endpoint"]), parse_bindings(doc["bindings"]),  # type: ignore[arg-type]
                                   clock.utc, clock.monotonic, cycle_budget_s=2.0)
            await client.connect()
            tags = sorted(vp.io("rf-01").tags())
            temps = []
            for k in range(1, 31):  # 30 cycles of 20 s
                clock.set(20.0 * k)
                await vp.scan()
                results = await client.write([Write("apc.heartbeat", float(k)), Write("power_kW.apc_active", 1.0),
                                              Write("power_kW.sp", 60.0)])
                assert all(r.ok for r in results), results
                snap = await client.read(tags)
                assert all(s.quality is Quality.GOOD and math.isfinite(s.value) for s in snap.values())
                temps.append(snap["furnace.tc_temp_degC"].value)
            assert snap["power_kW.remote"].value == 1.0 and snap["power_kW.sp_readback"].value == 60.0
            assert snap["furnace.chamber_pressure_Pa"].value > 0.0
            assert temps[-1] > temps[0] + 1.0  # the charge heats under 60 kW
            await client.close()

    asyncio.run(run())


def test_runtime_runs_a_site_with_a_reduction_furnace_on_the_virtual_plant(tmp_path: Path) -> None:
    """`apc run SITE --virtual-plant` on a one-furnace site: exits 0, the unit goes ON and its writes succeed."""
    port = free_port()
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"schema_version": 1, "site": "reduction", "compute_workers": 1, "units": [
        {"name": "rf-01", "recipe": str(RECIPE), "requested_mode": "ON",
         "plant": {"kind": "sim", "scenario": "nominal", "seed": 5}}]}))
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump({"schema_version": 1, "host": "127.0.0.1", "scan_s": 5,
                                     "units": {"rf-01": {"protocol": "modbus", "port": port}}}))
    rdir = tmp_path / "records"
    out = io.StringIO()
    code = asyncio.run(runtime.run_site(load_site_file(site), speed=100.0, hours=0.1, record_dir=rdir, out=out,
                                        virtual_plant=load_plant_file(plant)))
    assert code == 0, out.getvalue()
    (rec,) = list(rdir.glob("rf-01*.apcrec"))
    cycles = read_record(rec).cycle_records()
    assert len(cycles) >= 15
    on = [c for c in cycles if c.mode.actual == "ON"]
    assert on and not any(c.shed for c in on)
    assert any(w.tag == "power_kW.sp" for c in on for w in c.writes)
    assert all(w.ok for c in on for w in c.writes)

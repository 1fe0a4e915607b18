"""Furnace units in the runtime: whole batches in virtual time, batch KPIs on the truth, restart mid-soak."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from asyncua import ua

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.cli import main
from apc.clock import VirtualClock
from apc.hmi.server import HmiServer, hmi_node_id
from apc.hmi.users import load_users
from apc.kinds.furnace.kpi import FURNACE_KPI_KEYS
from apc.runtime import _first_mode, hmi_batch_status
from apc.simulate import simulate
from apc.types import Mode
from sim.furnace_plant import load_furnace_scenario
from tests.helpers.loopback_servers import free_port
from tests.test_hmi_server import Pki, pki, session  # noqa: F401  (pki is a fixture)

ROOT = Path(__file__).resolve().parent.parent
VIM = ROOT / "recipes" / "vim_furnace.yaml"


def test_vim_batch_with_pid_baseline_completes_within_limits(capsys: pytest.CaptureFixture[str]) -> None:
    """apc sim without --hours runs one whole batch to its end with the fixed KPI keys."""
    assert main(["sim", str(VIM), "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kpis = out["kpis"]
    assert tuple(sorted(kpis)) == tuple(sorted(FURNACE_KPI_KEYS))
    assert out["batch"] == "complete" and kpis["soak_complete"] == 1 and kpis["sheds"] == 0
    assert 30.0 < kpis["batch_time_min"] < 180.0 and kpis["energy_kWh"] > 0
    assert out["hours"] == pytest.approx(kpis["cycles"] * 5.0 / 3600.0)  # stopped when the batch ended


@pytest.mark.slow
def test_vim_batch_with_mpc_completes_and_tracks_the_ramp() -> None:
    """The curve MPC completes the batch without overshoot or pressure violation and with no guard clamp."""
    res = asyncio.run(simulate(load(VIM), load_furnace_scenario("vim_nominal"), seed=3, controller="mpc"))
    k = res.kpis
    assert res.meta["batch"] == "complete" and k["soak_complete"] == 1
    assert k["overshoot_max_degC"] == 0.0 and k["pressure_violations"] == 0 and k["guard_clamps"] == 0
    assert k["tracking_rmse_degC"] < 20.0


def test_restart_mid_soak_comes_back_held_with_soak_time_done_and_unit_in_standby(tmp_path: Path) -> None:
    """A unit rebuilt from the state directory mid-soak restores the batch HELD at the soak with the
    soak time already done (never from zero), and the runtime starts it no higher than STANDBY."""
    loaded = load(VIM)
    soak_index = next(i for i, s in enumerate(loaded.recipe.curve.segments) if s.kind == "soak")  # type: ignore[union-attr]

    async def first_run() -> float:
        clock = VirtualClock()
        unit, _ = build_sim_unit("vim", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                                 audit=null_logger(), with_kpis=False, state_dir=tmp_path)
        batch = unit.batch
        unit.request_mode(Mode.ON, who="test", where="restart", utc=clock.utc())
        period = loaded.recipe.period_s
        for k in range(3000):
            clock.set(k * period)
            rec = await unit.cycle(k, k * period, clock.monotonic(), clock.utc())
            status = batch.status()
            if status["state"] == "idle" and unit.modes.actual is Mode.ON:
                values = {**dict(zip(rec.estimate.names, rec.estimate.x)), **rec.estimate.extras}
                assert batch.start(clock.monotonic(), "test", values[batch.curve.controlled]).accepted
            if status["state"] == "running" and status["segment"] == soak_index and \
                    batch.snapshot()["soak_done_s"] >= 240.0:
                return float(batch.snapshot()["soak_done_s"])
        raise AssertionError("the batch never got 4 min into its soak")

    done_s = asyncio.run(first_run())
    clock = VirtualClock()
    unit, _ = build_sim_unit("vim", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                             audit=null_logger(), with_kpis=False, state_dir=tmp_path)
    batch = unit.batch
    status = batch.status()
    assert status["state"] == "held" and status["segment"] == soak_index
    restored = batch.snapshot()["soak_done_s"]
    assert 0.0 < restored <= done_s and done_s - restored <= 60.0  # persisted at least every 60 s of soak
    assert _first_mode(unit, Mode.ON, real_plant=False) is Mode.STANDBY  # even on a simulated plant



def test_hmi_batch_commands_start_hold_resume_abort(pki: Pki) -> None:
    """Operators start, hold, resume and abort a furnace batch from the HMI; a viewer is refused, and a
    resume after an abort is refused with BadInvalidState (the batch is over)."""
    loaded = load(VIM)

    async def run() -> None:
        clock = VirtualClock()
        unit, _ = build_sim_unit("vim-1", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                                 audit=null_logger(), with_kpis=False)
        batch = unit.batch
        unit.request_mode(Mode.ON, who="test", where="hmi", utc=clock.utc())
        for k in range(12):
            clock.set(k * 5.0)
            await unit.cycle(k, k * 5.0, clock.monotonic(), clock.utc())
        assert unit.modes.actual is Mode.ON and batch.status()["state"] == "idle"
        srv = HmiServer({"vim-1": unit}, load_users(pki.users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                        cert_path=pki.server_cert, key_path=pki.server_key, trusted_clients=pki.trusted,
                        audit=null_logger(), clock_utc=clock.utc)
        async with srv:
            async def command(user: str, value: str) -> str:
                async with session(srv, pki.creds(user)) as (c, ns):
                    nid = ua.NodeId(hmi_node_id("vim-1", "Batch", "Command"), ns)
                    (status,) = await c.uaclient.write_attributes(
                        [nid], [ua.DataValue(ua.Variant(value, ua.VariantType.String))], ua.AttributeIds.Value)
                    return ua.StatusCode(status.value).name

            assert await command("vic", "start") == "BadUserAccessDenied"
            assert batch.status()["state"] == "idle"
            assert await command("olga", "start") == "Good" and batch.status()["state"] == "running"
            assert await command("olga", "hold") == "Good" and batch.status()["state"] == "held"
            assert await command("olga", "resume") == "Good" and batch.status()["state"] == "running"
            assert await command("olga", "abort") == "Good" and batch.status()["state"] == "aborted"
            assert await command("olga", "resume") == "BadInvalidState"
            assert await command("olga", "explode") == "BadOutOfRange"

    asyncio.run(run())


def test_report_of_a_furnace_record_equals_the_live_kpis(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """apc report replays a furnace batch record to exactly the KPIs apc sim printed."""
    rec = tmp_path / "vim.apcrec"
    assert main(["sim", str(VIM), "--seed", "4", "--json", "--record", str(rec)]) == 0
    live = json.loads(capsys.readouterr().out)["kpis"]
    assert main(["report", str(rec), "--json"]) == 0
    replay = json.loads(capsys.readouterr().out)["kpis"]
    assert replay == live and replay["soak_complete"] == 1


def test_hmi_shows_the_batch_status_every_cycle_without_type_errors(pki: Pki) -> None:
    """The runtime's batch status reaches the HMI's Batch nodes each cycle (state, segment, soak), also when
    values change type between None and numbers (held/running), without an error."""
    loaded = load(VIM)

    async def run() -> None:
        clock = VirtualClock()
        unit, _ = build_sim_unit("vim-1", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                                 audit=null_logger(), with_kpis=False)
        batch = unit.batch
        srv = HmiServer({"vim-1": unit}, load_users(pki.users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                        cert_path=pki.server_cert, key_path=pki.server_key, trusted_clients=pki.trusted,
                        audit=null_logger(), clock_utc=clock.utc)
        async with srv:
            unit.request_mode(Mode.ON, who="test", where="hmi", utc=clock.utc())
            for k in range(40):
                clock.set(k * 5.0)
                rec = await unit.cycle(k, k * 5.0, clock.monotonic(), clock.utc())
                if k == 12:
                    assert unit.batch_command("start", "olga", "test") == ""
                if k == 20:
                    assert unit.batch_command("hold", "olga", "test") == ""
                await srv.publish("vim-1", rec)
                await srv.update_batch("vim-1", hmi_batch_status(batch.status()))
            async with session(srv, pki.creds("vic")) as (c, ns):
                state = await c.get_node(ua.NodeId(hmi_node_id("vim-1", "Batch", "State"), ns)).read_value()
                hold = await c.get_node(ua.NodeId(hmi_node_id("vim-1", "Batch", "HoldDegC"), ns)).read_value()
            assert state == "held" and 20.0 < hold < 200.0

    asyncio.run(run())


def test_soak_clock_stops_while_the_plant_link_is_down() -> None:
    """During a soak, a read failure (link down) sheds the unit and stops the soak clock: an open-loop
    estimate never counts as soak time."""
    loaded = load(VIM)
    soak_index = next(i for i, s in enumerate(loaded.recipe.curve.segments) if s.kind == "soak")  # type: ignore[union-attr]

    async def run() -> None:
        clock = VirtualClock()
        unit, io = build_sim_unit("vim", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                                  audit=null_logger(), with_kpis=False, controller_kind="mpc")
        batch = unit.batch
        unit.request_mode(Mode.ON, who="test", where="link", utc=clock.utc())
        k = 0

        async def step() -> None:
            nonlocal k
            clock.set(k * 5.0)
            await unit.cycle(k, k * 5.0, clock.monotonic(), clock.utc())
            k += 1

        while not (batch.status()["segment"] == soak_index and batch.status()["soak_done_s"] >= 60.0):
            await step()
            if batch.status()["state"] == "idle" and unit.modes.actual is Mode.ON:
                assert unit.batch_command("start", "test", "link") == ""
            assert k < 3000
        done = batch.status()["soak_done_s"]

        async def broken(tags: object) -> object:
            raise ConnectionError("plant link down")

        io.read = broken  # type: ignore[method-assign]
        for _ in range(24):
            await step()
        assert unit.modes.actual is Mode.STANDBY  # the link loss shed the unit
        assert batch.status()["soak_done_s"] == done  # two minutes of outage did not count

    asyncio.run(run())

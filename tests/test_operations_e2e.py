"""`apc run` end to end for operators: a shed raises an OPC UA alarm a plain asyncua subscriber receives, an
operator acknowledges it (a viewer cannot), it clears when the unit re-engages, and the Prometheus counters move."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from asyncua import ua
from prometheus_client.parser import text_string_to_metric_families

from apc.assembly import load_site_file
from apc.recorder import read_record
from apc.runtime import run_site
from sim.scenario import SCENARIO_DIR
from tests.helpers.hmi_pki import HmiPki, make_pki
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, event_from_cycle
from tests.test_alarms_hmi import ACK, Events, client

SPEED = 200.0  # 5 s cycles every 25 ms
FAULT_K, FAULT_CYCLES = 700, 30
UNIT = "cell-01"


def _site(tmp: Path, hmi_port: int, metrics_port: int) -> tuple[Path, HmiPki]:
    pki = make_pki(tmp)
    scenario = yaml.safe_load((SCENARIO_DIR / "nominal.yaml").read_text())
    scenario["events"] = [{"at_h": event_from_cycle(FAULT_K), "kind": "input_fault", "signal": "cell_voltage_V",
                           "fault": "bad", "duration_h": FAULT_CYCLES * 5.0 / 3600.0}]
    (tmp / "fault.yaml").write_text(yaml.safe_dump(scenario))
    site = {"schema_version": 1, "site": "ops-test", "compute_workers": 0, "state_dir": "state",
            "metrics": {"port": metrics_port},
            "hmi": {"endpoint_url": f"opc.tcp://127.0.0.1:{hmi_port}/apc", "certificate": pki.server_cert.name,
                    "private_key": pki.server_key.name, "users": pki.users.name, "trusted_clients": "trusted"},
            "units": [{"name": UNIT, "recipe": str(ND_RECIPE), "requested_mode": "ON",
                       "plant": {"kind": "sim", "scenario": str(tmp / "fault.yaml"), "seed": 3}}]}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path, pki


class Started(io.StringIO):
    """The run's output; ``started`` is set once the run says its units are running (HMI up)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    def write(self, text: str) -> int:
        if "records and audit log in" in text:
            self.started.set()
        return super().write(text)


class Heartbeats:
    """Data-change handler of the unit's Heartbeat node: set when it passes ``above``."""

    def __init__(self, above: int) -> None:
        self.above = above
        self.passed = asyncio.Event()

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        if isinstance(value, int) and value > self.above:
            self.passed.set()


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_shed_alarm_ack_clear_and_metrics_through_apc_run(tmp_path: Path) -> None:
    """Through `apc run`: the shed's alarm event carries the shed cycle's time, a viewer's Acknowledge is refused and an operator's accepted, re-engaging clears it, and the shed and cycle counters and the active-alarm gauge move on /metrics."""
    hmi_port, metrics_port = free_port(), free_port()
    site_path, pki = _site(tmp_path, hmi_port, metrics_port)
    site = load_site_file(site_path)
    url, metrics_url = f"opc.tcp://127.0.0.1:{hmi_port}/apc", f"http://127.0.0.1:{metrics_port}/metrics"
    seen: dict[str, Any] = {}

    async def operate() -> None:
        out, stop = Started(), asyncio.Event()
        run = asyncio.create_task(run_site(site, speed=SPEED, hours=2.0, record_dir=tmp_path / "rec", out=out,
                                           stop=stop))
        await asyncio.wait_for(out.started.wait(), 60)
        async with client(url, pki.creds("olga")) as op, client(url, pki.creds("vic")) as viewer:
            ns = await op.get_namespace_index("urn:apc:hmi")
            events, beats = Events(), Heartbeats(FAULT_K + FAULT_CYCLES + 10)
            sub = await op.create_subscription(20, events)
            await sub.subscribe_events(op.nodes.server, ua.ObjectIds.AlarmConditionType)
            raised = await events.next_of("shed", timeout_s=120)
            beat_sub = await op.create_subscription(20, beats)
            await beat_sub.subscribe_data_change(op.get_node(ua.NodeId(f"{UNIT}.Heartbeat", ns)))
            try:
                await viewer.get_node(raised.NodeId).call_method(ACK, raised.EventId, ua.LocalizedText("x"))
                seen["viewer"] = "Good"
            except ua.UaStatusCodeError as exc:
                seen["viewer"] = ua.StatusCode(exc.code).name
            await op.get_node(raised.NodeId).call_method(ACK, raised.EventId, ua.LocalizedText("checked"))
            seen["acked"] = await events.next_of("shed", timeout_s=30)
            seen["during"] = await asyncio.to_thread(_scrape, metrics_url)
            await asyncio.wait_for(beats.passed.wait(), 120)  # the voltage fault is over: ask for ON again
            await op.get_node(ua.NodeId(f"{UNIT}.RequestedMode", ns)).write_value(
                ua.DataValue(ua.Variant("ON", ua.VariantType.String)))
            seen["cleared"] = await events.next_of("shed", timeout_s=120)
            seen["after"] = await asyncio.to_thread(_scrape, metrics_url)
            seen["raised"] = raised
        stop.set()
        await run

    asyncio.run(operate())
    raised, acked, cleared = seen["raised"], seen["acked"], seen["cleared"]
    records = [r for f in sorted((tmp_path / "rec").glob(f"{UNIT}-*.apcrec*")) for r in read_record(f).cycle_records()]
    shed_rec = next(r for r in records if r.shed)
    assert abs(raised.Time.timestamp() - shed_rec.utc) < 1e-5, "the event is sent in the cycle that shed"
    assert getattr(raised, "ActiveState/Id") and not getattr(raised, "AckedState/Id") and raised.Severity == 700
    assert seen["viewer"] == "BadUserAccessDenied"
    assert getattr(acked, "AckedState/Id") and getattr(acked, "ActiveState/Id")
    assert not getattr(cleared, "ActiveState/Id") and cleared.Retain is False
    unit = frozenset({("unit", UNIT), ("kind", "electrolysis_cell")})
    during, after = seen["during"], seen["after"]
    assert sum(v for (n, lab), v in after.items() if n == "apc_unit_sheds_total" and unit <= lab) == 1
    assert after[("apc_unit_cycles_total", unit)] > during[("apc_unit_cycles_total", unit)] > 0
    assert during[("apc_active_alarms", unit)] >= 1
    assert after[("apc_active_alarms", unit)] < during[("apc_active_alarms", unit)]

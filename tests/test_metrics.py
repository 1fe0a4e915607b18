"""Prometheus metrics of ``apc run`` (apc.metrics): a real scrape of a short run, the site section's
loopback rule, a taken port, the alarm hook and the Grafana dashboard's metric names."""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import apc.runtime as runtime
from apc.assembly import load_site_file
from apc.cli import main
from apc.cycle_record import CycleRecord, EstimateRecord, ModeRecord, PlanRecord, TimingRecord, WriteRecord
from apc.metrics import MetricsServer, MetricsServerError, RuntimeMetrics, metrics_endpoint, shed_category
from apc.recipe.errors import RecipeError
from apc.recipe.schema import MetricsSection
from apc.scheduler import ScheduleStats
from apc.types import Mode
from apc.unit import Unit
from tests.helpers.sim_harness import ND_RECIPE

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "apc-runtime-dashboard.json"
SPEED = 500.0  # 5 s cycles every 10 ms of real time
ON_CALLS_BEFORE_FAULT = 5


class FailsWhenOn:
    """The unit's own estimator, until it has been ON for a few updates: then it raises once (a plug-in bug)."""

    def __init__(self, unit: Unit) -> None:
        self.inner = unit.estimator
        self.unit = unit
        self.on_calls = 0

    def update(self, t_s: float, inputs: Any, applied: Any) -> Any:
        if self.unit.modes.actual is Mode.ON:
            self.on_calls += 1
            if self.on_calls == ON_CALLS_BEFORE_FAULT:
                raise RuntimeError("estimator bug")
        return self.inner.update(t_s, inputs, applied)

    def reset(self) -> None:
        self.inner.reset()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped[(name, frozenset(labels.items()))]


def write_site(tmp_path: Path, metrics: str = "metrics: {port: 0}\n") -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        "schema_version: 1\nsite: metrics-test\n" + metrics + "units:\n"
        f"  - {{name: c1, recipe: {ND_RECIPE}, plant: {{kind: sim, scenario: nominal, seed: 31}}, "
        "requested_mode: 'ON'}\n")
    return site


def test_a_short_run_serves_cycles_writes_and_a_shed_over_http(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape over loopback HTTP during a run shows cycles, writes, modes, solve times, the link up and a
    shed counted with its reason's category; the endpoint is closed when the run ends."""
    units: dict[str, Unit] = {}
    shed = asyncio.Event()
    after_shed: list[CycleRecord] = []
    real_build = runtime.build_sim_unit

    def build(name: str, *args: Any, **kwargs: Any) -> Any:
        unit, plant = real_build(name, *args, **kwargs)
        unit.estimator = FailsWhenOn(unit)
        inner = unit.cycle

        async def cycle(*a: Any) -> CycleRecord:
            rec = await inner(*a)
            if rec.shed or after_shed:
                after_shed.append(rec)
            if len(after_shed) == 3:  # the shed and two healthy cycles since
                shed.set()
            return rec

        unit.cycle = cycle  # type: ignore[method-assign]
        units[name] = unit
        return unit, plant

    monkeypatch.setattr(runtime, "build_sim_unit", build)
    out = io.StringIO()

    async def main_() -> tuple[int, str, str]:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run_site(load_site_file(write_site(tmp_path)), speed=SPEED, hours=2.0,
                                                    record_dir=tmp_path / "rec", out=out, compute_workers=0,
                                                    stop=stop))
        await asyncio.wait_for(shed.wait(), timeout=60)
        url = re.search(r"^metrics: (\S+)$", out.getvalue(), re.M)
        assert url, out.getvalue()
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url[1], timeout=10).read().decode())
        stop.set()
        return await task, url[1], body

    code, url, body = asyncio.run(main_())
    assert code == 1  # the estimator's fault is counted as an error
    assert url.startswith("http://127.0.0.1:")
    got = samples(body)
    unit = {"unit": "c1", "kind": "electrolysis_cell"}
    assert value(got, "apc_unit_cycles_total", **unit) > ON_CALLS_BEFORE_FAULT
    assert value(got, "apc_unit_writes_total", **unit) > 0
    assert value(got, "apc_unit_sheds_total", **unit, reason="estimate failed") == 1
    assert value(got, "apc_unit_requested_mode", **unit, mode="ON") == 1
    assert value(got, "apc_unit_mode", **unit, mode="STANDBY") == 1
    assert value(got, "apc_unit_mode", **unit, mode="ON") == 0
    assert value(got, "apc_unit_solve_time_seconds_count", **unit) > 0
    assert value(got, "apc_unit_estimate_time_seconds_count", **unit) > 0
    assert value(got, "apc_plant_link_up", **unit) == 1
    assert value(got, "apc_unit_estimator_healthy", **unit) == 1  # it works again after its one fault
    assert [r.estimate.health == "ok" for r in after_shed[:3]] == [False, True, True]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_the_metrics_host_defaults_to_loopback(tmp_path: Path) -> None:
    """A metrics section with only a port, and --metrics-port without one, listen on 127.0.0.1; no section
    and no flag: no endpoint."""
    site = load_site_file(write_site(tmp_path, "metrics: {port: 9464}\n")).site
    assert site.metrics == MetricsSection(port=9464, host="127.0.0.1", allow_remote=False)
    assert metrics_endpoint(None, 9100) == MetricsSection(port=9100, host="127.0.0.1")
    assert metrics_endpoint(None, None) is None
    assert load_site_file(write_site(tmp_path, "")).site.metrics is None


def test_the_flag_overrides_the_sites_port_and_keeps_its_host() -> None:
    """--metrics-port replaces the section's port, keeping its host and permission; a bad port is refused."""
    section = MetricsSection(port=9464, host="10.0.0.5", allow_remote=True)
    assert metrics_endpoint(section, 9500) == MetricsSection(port=9500, host="10.0.0.5", allow_remote=True)
    with pytest.raises(MetricsServerError, match=r"port must be in 0\.\.65535"):
        metrics_endpoint(section, 70000)


def test_a_remote_host_without_allow_remote_is_refused_naming_the_field(tmp_path: Path) -> None:
    """A host that is not loopback is refused at its line, naming metrics.host, unless allow_remote is true."""
    path = write_site(tmp_path, "metrics:\n  port: 9464\n  host: 0.0.0.0\n")
    with pytest.raises(RecipeError) as err:
        load_site_file(path)
    assert f"{path}:5: metrics.host: host '0.0.0.0' is not loopback" in str(err.value)
    assert "allow_remote: true" in str(err.value)
    allowed = load_site_file(write_site(tmp_path, "metrics:\n  port: 9464\n  host: 0.0.0.0\n  allow_remote: true\n"))
    assert allowed.site.metrics == MetricsSection(port=9464, host="0.0.0.0", allow_remote=True)


def test_apc_run_with_the_metrics_port_taken_prints_one_line_and_fails(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`apc run --metrics-port P` with P already bound on loopback exits 1 with one 'error: ... already in use' line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", str(write_site(tmp_path, "")), "--hours", "0.01", "--compute-workers", "0",
                     "--record-dir", str(tmp_path / "rec"), "--metrics-port", str(port)])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: metrics endpoint http://127.0.0.1:{port}/metrics: port {port} already in use"]


def record(*, mode: str = "ON", shed_reason: str = "", writes: tuple[WriteRecord, ...] = ()) -> CycleRecord:
    """A cycle record with what the metrics read."""
    return CycleRecord(
        k=0, t_s=0.0, scheduled_mono_s=0.0, actual_mono_s=0.0, utc=0.0, inputs={},
        estimate=EstimateRecord((), (), None, "ok"), mode=ModeRecord("ON", mode, "", {}),
        plan=PlanRecord({}, {}, "ok", 3, 0.02, ""), guard_clamps=0, decisions={}, writes=writes, readback={},
        dcs_at_limit={}, shed=bool(shed_reason), shed_reason=shed_reason, timing=TimingRecord(0.001, 0.004, 0.03, 0.031))


def scrape(metrics: RuntimeMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(generate_latest(metrics.registry).decode())


def test_active_alarms_come_from_the_callable_and_a_failing_one_gives_nan() -> None:
    """apc_active_alarms shows what alarms_active(unit) returns at the scrape; a callable that raises gives
    NaN for that unit and the scrape still answers."""
    counts = {"c1": 2, "c2": 0}

    def alarms(unit: str) -> int:
        return counts[unit]  # c3: KeyError

    metrics = RuntimeMetrics(alarms_active=alarms)
    for name in ("c1", "c2", "c3"):
        metrics.add_unit(name, "electrolysis_cell", ScheduleStats())
    got = scrape(metrics)
    assert value(got, "apc_active_alarms", unit="c1", kind="electrolysis_cell") == 2
    assert value(got, "apc_active_alarms", unit="c2", kind="electrolysis_cell") == 0
    assert math.isnan(value(got, "apc_active_alarms", unit="c3", kind="electrolysis_cell"))
    counts["c2"] = 5
    assert value(scrape(metrics), "apc_active_alarms", unit="c2", kind="electrolysis_cell") == 5
    assert not any(name == "apc_active_alarms" for name, _ in scrape(RuntimeMetrics()))


def test_observe_counts_writes_refusals_sheds_and_the_schedule() -> None:
    """Each observed cycle adds its writes and refused writes; a shed counts under its category; the
    schedule's counters and the worker restarts are read at the scrape."""
    stats = ScheduleStats()
    restarts = [0, 0]
    metrics = RuntimeMetrics(worker_restarts=lambda: restarts)
    metrics.add_unit("c1", "electrolysis_cell", stats, link=lambda: False)
    ok, refused = WriteRecord("a.sp", 1.0, True, ""), WriteRecord("b.sp", 2.0, False, "not written: link down")
    metrics.observe("c1", record(writes=(ok, refused)))
    metrics.observe("c1", record(writes=(ok,)))
    metrics.observe("c1", record(mode="STANDBY", shed_reason="bath_temp_degC: frozen for 6 cycles"))
    stats.cycles, stats.overruns, stats.skipped_slots = 3, 1, 2
    restarts[1] = 1
    got = scrape(metrics)
    unit = {"unit": "c1", "kind": "electrolysis_cell"}
    assert value(got, "apc_unit_writes_total", **unit) == 3
    assert value(got, "apc_unit_refused_writes_total", **unit) == 1
    assert value(got, "apc_unit_sheds_total", **unit, reason="bath_temp_degC") == 1
    assert value(got, "apc_unit_cycles_total", **unit) == 3
    assert value(got, "apc_unit_overruns_total", **unit) == 1
    assert value(got, "apc_unit_missed_slots_total", **unit) == 2
    assert value(got, "apc_compute_worker_restarts_total", worker="1") == 1
    assert value(got, "apc_plant_link_up", **unit) == 0
    assert value(got, "apc_unit_solve_time_seconds_count", **unit) == 3
    assert value(got, "apc_unit_solve_time_seconds_sum", **unit) == pytest.approx(0.06)
    assert value(got, "apc_unit_estimate_time_seconds_sum", **unit) == pytest.approx(0.009)
    assert value(got, "apc_unit_mode", **unit, mode="STANDBY") == 1
    assert value(got, "apc_unit_mode", **unit, mode="ON") == 0


@pytest.mark.parametrize(("reason", "category"), [
    ("estimate failed: ZeroDivisionError: estimator bug", "estimate failed"),
    ("compute late: the cycle's deadline (12 ms wall left at the request) for 6 cycles", "compute late"),
    ("DCS heartbeat frozen for 31 s", "DCS heartbeat frozen for # s"),
    ("", "unknown"),
    ("x" * 200, "x" * 48),
], ids=["stage-fault", "late", "numbers", "empty", "long"])
def test_shed_reasons_are_reduced_to_a_bounded_category(reason: str, category: str) -> None:
    """A shed reason's label is its text before ':', numbers replaced by '#', at most 48 characters."""
    assert shed_category(reason) == category


def dashboard_metric_names() -> set[str]:
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            exprs.extend(v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(DASHBOARD.read_text()))
    return {name for e in exprs for name in re.findall(r"\bapc_[a-z_]+", e)}


def exported_names(metrics: RuntimeMetrics) -> set[str]:
    suffixes: dict[str, tuple[str, ...]] = {"counter": ("_total",), "gauge": ("",),
                                            "histogram": ("_bucket", "_sum", "_count")}
    return {f.name + s for f in metrics.registry.collect() for s in suffixes[f.type]}


def test_every_metric_the_dashboard_references_is_exported() -> None:
    """The Grafana dashboard is valid JSON whose panels query only metric names the runtime exports, and
    at least the modes, cycles, overruns, missed slots, solve and estimator times, sheds, refused writes,
    link and alarms."""
    used = dashboard_metric_names()
    exported = exported_names(RuntimeMetrics())
    assert used <= exported, used - exported
    assert {"apc_unit_mode", "apc_unit_cycles_total", "apc_unit_overruns_total", "apc_unit_missed_slots_total",
            "apc_unit_solve_time_seconds_bucket", "apc_unit_estimate_time_seconds_bucket", "apc_unit_sheds_total",
            "apc_unit_refused_writes_total", "apc_plant_link_up", "apc_active_alarms"} <= used


def test_the_server_stops_and_frees_its_port() -> None:
    """A stopped metrics server releases its port: a second one can listen on it at once."""
    async def twice() -> tuple[int, int]:
        first = MetricsServer(RuntimeMetrics(), MetricsSection(port=0))
        first.start()
        port = first.port
        await first.stop()
        second = MetricsServer(RuntimeMetrics(), MetricsSection(port=port))
        second.start()
        await second.stop()
        return port, second.port

    port, again = asyncio.run(twice())
    assert port == again != 0


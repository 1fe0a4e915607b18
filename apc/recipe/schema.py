"""Typed, frozen recipe and site schema (schema_version 1).

Every field is documented once here; :mod:`apc.recipe.loader` turns YAML into
these dataclasses and reports each problem with file, line and field path.
Validation that involves several fields lives in ``__post_init__`` (raising
``ValueError`` with a message naming the field) or in the loader's
cross-checks (tags, names).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from apc.recipe.group_schema import GroupSpec
from apc.types import MvKind

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FrozenCheck:
    """A normally noisy signal counts as frozen when it moves less than
    ``epsilon`` for ``cycles`` consecutive reads."""

    epsilon: float
    cycles: int

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise ValueError("epsilon must be >= 0")
        if self.cycles < 2:
            raise ValueError("cycles must be >= 2")


@dataclass(frozen=True)
class InputSpec:
    """One measured plant signal."""

    tag: str
    """Plant tag (OPC UA node id, Modbus binding name or simulator signal)."""
    unit: str
    """Engineering unit, checked against the model signal it feeds."""
    range: tuple[float, float]
    """Validity range; a value outside it is rejected (not clamped)."""
    max_age_s: float
    """Oldest acceptable sample, judged by local receive time (or sample time
    for lab/dip samples)."""
    role: Literal["measurement", "disturbance", "sample", "auxiliary"] = "measurement"
    """``disturbance`` is fed forward to the controller; ``sample`` is a lab or
    dip result that arrives now and then and never blocks control;
    ``auxiliary`` is a continuous signal the estimator uses when it is good
    (e.g. the cumulative tapped metal) that never blocks control either."""
    frozen: FrozenCheck | None = None
    """Frozen-value detection; only for normally noisy signals."""
    accept_uncertain: bool = False
    """Treat Uncertain quality as usable."""
    model_output: str | None = None
    """Furnaces: the model output this input measures (fused by the furnace filter)."""

    def __post_init__(self) -> None:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError("range must be [low, high] with low < high")
        if self.max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")


@dataclass(frozen=True)
class MvSpec:
    """One manipulated variable and how it is written."""

    tag: str
    """Tag written by the APC (setpoint, or increment request)."""
    readback: str
    """Tag the DCS reports the value in force on (for increments: position)."""
    unit: str
    kind: MvKind
    fallback: Literal["hold", "dcs_schedule", "no_moves"]
    """What the DCS does on its own when the APC stops writing."""
    model_input: str
    """Name of the model input this MV drives."""
    remote_status: str | None = None
    """Tag that reads 1 while the DCS loop accepts APC setpoints."""
    active_flag: str | None = None
    """Tag the APC sets to 1 while it drives this loop (``apc_active``)."""
    sequence_tag: str | None = None
    """Increment MVs only: sequence number written with each move."""
    readback_tolerance: float = 0.0
    """Largest |written − readback| accepted on the next cycle."""
    high_limit_status: str | None = None
    """Tag that reads 1 while the DCS loop's output is at its high limit (windup): the APC does
    not push this MV up meanwhile. An unreadable status counts as at the limit."""
    low_limit_status: str | None = None
    """As ``high_limit_status``, for the low limit."""


@dataclass(frozen=True)
class HeartbeatSpec:
    """Heartbeats in both directions."""

    apc_tag: str
    """Counter the APC increments every cycle."""
    dcs_tag: str
    """Counter the DCS increments; frozen longer than ``dcs_timeout_s`` = link loss."""
    dcs_timeout_s: float


@dataclass(frozen=True)
class IoSection:
    """Tag bindings of the unit."""

    inputs: dict[str, InputSpec]
    mvs: dict[str, MvSpec]
    heartbeat: HeartbeatSpec

    def input_with_unit(self, unit: str, roles: tuple[str, ...] | None = None) -> str | None:
        """Name of the first input in ``unit`` (and one of ``roles``, if given), else None."""
        for name, spec in self.inputs.items():
            if spec.unit == unit and (roles is None or spec.role in roles):
                return name
        return None

    def tags(self) -> frozenset[str]:
        """Every plant tag the unit reads or writes (inputs, MV tags and statuses, heartbeats)."""
        out = {s.tag for s in self.inputs.values()} | {self.heartbeat.apc_tag, self.heartbeat.dcs_tag}
        for mv in self.mvs.values():
            out |= {t for t in (mv.tag, mv.readback, mv.remote_status, mv.active_flag, mv.sequence_tag,
                                mv.high_limit_status, mv.low_limit_status) if t}
        return frozenset(out)

    def mv_driving(self, model_input: str) -> str | None:
        """Name of the MV that drives ``model_input``, else None."""
        for name, mv in self.mvs.items():
            if mv.model_input == model_input:
                return name
        return None


@dataclass(frozen=True)
class ModelSection:
    """Process model and its nominal parameters (what controllers see)."""

    name: str
    """Registered model name in ``sim.models``."""
    parameters: dict[str, float] = field(default_factory=dict)
    """Overrides of the model's nominal parameters; unknown names fail."""


@dataclass(frozen=True)
class EstimatorSection:
    """Estimator choice and tuning (each unit kind extends it with its estimator's sections)."""

    kind: str = "ekf"
    """Which estimator; the unit kind's recipe says which kinds it knows."""
    warmup_s: float = 600.0
    """Inputs and estimator must be healthy this long before ON is granted."""


@dataclass(frozen=True)
class ControllerSection:
    """Controller choice and its scheduling (each unit kind extends it with its controllers' sections)."""

    kind: Literal["baseline", "mpc"] = "baseline"
    period_multiple: int = 1
    """Controller runs every N base periods; guard and recorder every period."""
    hold_cycles: int = 6
    """Cycles a failed controller may follow its last valid plan before shedding."""


@dataclass(frozen=True)
class MvLimits:
    """Limits and rate of one MV."""

    engineering: tuple[float, float]
    """Hard limits under management of change."""
    operator: tuple[float, float]
    """Operator limits, must lie inside the engineering limits."""
    rate_per_s: float
    """Largest change per second of a setpoint (increments without ``max_step``:
    largest step is ``rate_per_s`` × cycle time)."""
    min_interval_s: float = 0.0
    """Increments only: shortest time between two moves."""
    max_step: float | None = None
    """Increments/pulses only: largest single move (absolute, in MV units);
    ``None`` falls back to ``rate_per_s`` × cycle time."""

    def __post_init__(self) -> None:
        elo, ehi = self.engineering
        olo, ohi = self.operator
        if not elo <= ehi:
            raise ValueError("engineering limits must be [low, high] with low <= high")
        if not olo <= ohi:
            raise ValueError("operator limits must be [low, high] with low <= high")
        if olo < elo or ohi > ehi:
            raise ValueError(
                f"operator limits [{olo}, {ohi}] lie outside engineering limits [{elo}, {ehi}]"
            )
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if self.min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0")
        if self.max_step is not None and not self.max_step > 0:
            raise ValueError("max_step must be > 0")


@dataclass(frozen=True)
class Permissive:
    """A condition that must hold for the APC to write the listed MVs."""

    expr: str
    """Boolean expression over input/estimate names and constants, with
    and/or/not and comparisons; parsed without eval."""
    applies_to: tuple[str, ...] = ()
    """MV names it gates; empty means all MVs."""


@dataclass(frozen=True)
class ModesSection:
    """Mode and shed behaviour."""

    shed_after_bad_cycles: int = 6
    """Consecutive cycles with bad inputs, guard or permissive failures (or late answers) before a shed."""
    readback_fault_cycles: int = 3
    compute_deadline_s: float | None = None
    """Wall-clock time (in plant seconds: divided by the speed of an accelerated run) the estimator and
    controller have to answer each cycle in ``apc run``; a later answer is never used. ``None``: half
    the period. Offline simulation has no deadline (iteration caps bound it)."""
    max_input_age_s: float | None = None
    """A move whose inputs were read longer ago than this is not written. ``None``: one period."""

    def __post_init__(self) -> None:
        if self.shed_after_bad_cycles < 1 or self.readback_fault_cycles < 1:
            raise ValueError("shed_after_bad_cycles and readback_fault_cycles must be >= 1")
        for name in ("compute_deadline_s", "max_input_age_s"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < float("inf"):
                raise ValueError(f"{name} must be a number > 0 (or omitted)")


ALARM_CAUSES = ("shed", "batch_held", "estimator_unhealthy", "link_lost", "dcs_heartbeat_lost", "solver_failing",
                "anode_effect", "anode_effect_forecast", "specific_energy_high", "recorder_failed",
                "compute_restarted")
"""Every alarm cause a unit raises (``docs/alarms.md``)."""


@dataclass(frozen=True)
class AlarmsSection:
    """Thresholds and severities of the unit's alarms (``docs/alarms.md``)."""

    solver_failing_n: int = 3
    """``solver_failing`` is active while at least this many …"""
    solver_failing_m: int = 10
    """… of the last this many controller solves did not succeed."""
    ae_forecast_probability: float | None = None
    """Cells: ``anode_effect_forecast`` is active while the forecast probability is at least this;
    ``None``: while the forecast gives a lead time (its own ``estimator.ae_forecast_threshold``)."""
    specific_energy_max_kWh_kg: float | None = None
    """Cells: ``specific_energy_high`` is active while the specific energy of the last tap interval
    (measured voltage × current over the tapped metal) exceeds this; ``None``: no such alarm."""
    severity: dict[str, int] = field(default_factory=dict)
    """Severity (1–1000, OPC UA) per cause, overriding the defaults."""
    disabled: tuple[str, ...] = ()
    """Causes this unit never raises."""

    def __post_init__(self) -> None:
        if not 1 <= self.solver_failing_n <= self.solver_failing_m:
            raise ValueError("solver_failing_n must be >= 1 and <= solver_failing_m")
        if self.ae_forecast_probability is not None and not 0.0 < self.ae_forecast_probability <= 1.0:
            raise ValueError("ae_forecast_probability must be in (0, 1]")
        if self.specific_energy_max_kWh_kg is not None and not 0.0 < self.specific_energy_max_kWh_kg < float("inf"):
            raise ValueError("specific_energy_max_kWh_kg must be a number > 0 (or omitted)")
        for cause in (*self.severity, *self.disabled):
            if cause not in ALARM_CAUSES:
                raise ValueError(f"unknown alarm cause {cause!r}; known: {', '.join(ALARM_CAUSES)}")
        for cause, sev in self.severity.items():
            if not 1 <= sev <= 1000:
                raise ValueError(f"severity of {cause} must be 1..1000, got {sev}")


@dataclass(frozen=True)
class Recipe:
    """One unit: model, bindings, tuning, limits, permissives. Each unit kind subclasses it with its
    own estimator and controller sections (and e.g. a furnace's curve); :mod:`apc.kinds` finds the
    subclass by ``unit_kind``."""

    schema_version: int
    name: str
    unit_kind: str
    """Registered unit kind (:mod:`apc.kinds.registry`)."""
    period_s: float
    model: ModelSection
    io: IoSection
    estimator: EstimatorSection
    controller: ControllerSection
    limits: dict[str, MvLimits]
    permissives: dict[str, Permissive] = field(default_factory=dict)
    modes: ModesSection = field(default_factory=ModesSection)
    alarms: AlarmsSection = field(default_factory=AlarmsSection)
    kpi_warmup_h: float = 6.0
    """KPIs are computed from the simulator's truth after this warm-up."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        if self.period_s <= 0:
            raise ValueError("period_s must be > 0")


@dataclass(frozen=True)
class PlantSpec:
    """Where a unit's plant is: the in-process simulator, or a plant reached over OPC UA / Modbus."""

    kind: Literal["sim", "opcua", "modbus"]
    scenario: str = "nominal"
    """``sim``: scenario name (``apc plant-sim`` serves the same over real protocols)."""
    seed: int = 0
    bindings: str | None = None
    """``opcua`` / ``modbus``: binding file (endpoint + tag bindings, e.g. written by
    ``apc plant-sim --bindings-out``), relative to the site file."""

    def __post_init__(self) -> None:
        if self.kind != "sim" and not self.bindings:
            raise ValueError(f"a plant of kind {self.kind!r} needs a bindings file")
        if self.kind == "sim" and self.bindings:
            raise ValueError("bindings are for kind 'opcua' or 'modbus' (the simulator serves its own tags)")


SimPlantSpec = PlantSpec
"""Former name of :class:`PlantSpec` (sites written for schema 1 keep loading)."""


@dataclass(frozen=True)
class SiteUnit:
    """One unit a runtime process runs."""

    name: str
    recipe: str
    """Path of the recipe file, relative to the site file."""
    plant: PlantSpec
    requested_mode: Literal["OFF", "STANDBY", "ON"] = "STANDBY"


@dataclass(frozen=True)
class HmiSection:
    """The runtime's own OPC UA server for the HMI (see ``docs/hmi.md``); paths relative to the site file."""

    endpoint_url: str
    """e.g. ``opc.tcp://0.0.0.0:4850/apc/hmi``."""
    certificate: str
    """Server certificate (``apc hmi-cert``)."""
    private_key: str
    """Its private key (``.pem``, mode 0600)."""
    users: str
    """Users file (``apc hmi-user``; mode 0600), never the recipe."""
    allow_insecure_loopback: bool = False
    """Also offer an unsecured endpoint; refused unless the endpoint host is loopback."""
    trusted_clients: str | None = None
    """Directory of the client certificates allowed to connect (re-read when it changes). Required,
    except with ``allow_insecure_loopback``: then, without it, the secure endpoint trusts no client
    and only the loopback endpoint serves sessions."""

    def __post_init__(self) -> None:
        if self.trusted_clients is None and not self.allow_insecure_loopback:
            raise ValueError("trusted_clients is required: the directory of the HMI client certificates "
                             "allowed to connect (see docs/hmi.md)")


def _is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MetricsSection:
    """The Prometheus metrics endpoint of ``apc run`` (see ``docs/metrics.md``)."""

    port: int
    """TCP port of ``http://HOST:PORT/metrics`` (0: any free port, printed at the start)."""
    host: str = "127.0.0.1"
    """Address it listens on: loopback unless ``allow_remote``."""
    allow_remote: bool = False
    """Allow a host that is not loopback (the endpoint has no authentication: expose it only on a
    network the scraper and nobody else reaches)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not self.host:
            raise ValueError("host must not be empty")
        if not self.allow_remote and not _is_loopback_host(self.host):
            raise ValueError(f"host {self.host!r} is not loopback: the metrics endpoint has no authentication; "
                             "set allow_remote: true to listen there")


@dataclass(frozen=True)
class Site:
    """The units of one runtime process."""

    schema_version: int
    site: str
    units: tuple[SiteUnit, ...]
    record_dir: str = "records"
    speed: float = 1.0
    """Real-time multiple for simulated plants (1 = real time)."""
    hmi: HmiSection | None = None
    """The HMI server; none: operators use the site file's requested modes only."""
    state_dir: str = "state"
    """Where units keep their state files (furnace batches; on a real plant, each unit's latched shed,
    operator limits, MV enables and electrode moves), relative to the site file."""
    compute_workers: int = -1
    """Processes the units' estimators and controllers run in (``apc run``): -1 one per core, 0 in the
    runtime's own process (no isolation: a slow or hung computation delays every unit; debugging only)."""
    rotate_mb: float = 256.0
    """Flight records and the audit log start a new (gzipped) segment past this size, MB."""
    rotate_daily: bool = True
    """… and at each UTC midnight."""
    keep_days: float = 90.0
    """Compressed segments and audit logs older than this are deleted (0: kept for ever)."""
    fsync_interval_s: float = 1.0
    """The audit log and the flight records are fsynced this often (wall seconds): a power loss loses
    at most this long of them. State files are fsynced on every change."""
    metrics: MetricsSection | None = None
    """The Prometheus metrics endpoint; none: no endpoint (unless ``apc run --metrics-port``)."""
    groups: tuple[GroupSpec, ...] = ()
    """Units operated together (a potline, a furnace bay): see :mod:`apc.recipe.group_schema`."""

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError("unit names must be unique")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if not 0 < self.fsync_interval_s <= 60:
            raise ValueError("fsync_interval_s must be in (0, 60] seconds")
        if not self.rotate_mb > 0 or not self.keep_days >= 0:
            raise ValueError("rotate_mb must be > 0 and keep_days >= 0")
        if self.compute_workers < -1:
            raise ValueError("compute_workers must be -1 (one per core), 0 (in process) or a count")

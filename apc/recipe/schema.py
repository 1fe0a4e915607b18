"""Typed, frozen recipe and site schema (schema_version 1).

Every field is documented once here; :mod:`apc.recipe.loader` turns YAML into
these dataclasses and reports each problem with file, line and field path.
Validation that involves several fields lives in ``__post_init__`` (raising
``ValueError`` with a message naming the field) or in the loader's
cross-checks (tags, names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    role: Literal["measurement", "disturbance", "sample"] = "measurement"
    """``disturbance`` is fed forward to the controller; ``sample`` is a lab or
    dip result that arrives now and then and never blocks control."""
    frozen: FrozenCheck | None = None
    """Frozen-value detection; only for normally noisy signals."""
    accept_uncertain: bool = False
    """Treat Uncertain quality as usable."""

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


@dataclass(frozen=True)
class ModelSection:
    """Process model and its nominal parameters (what controllers see)."""

    name: str
    """Registered model name in ``sim.models``."""
    parameters: dict[str, float] = field(default_factory=dict)
    """Overrides of the model's nominal parameters; unknown names fail."""


@dataclass(frozen=True)
class FilteredEstimatorSection:
    """Baseline estimate: filtered measurements, pseudo-resistance and slope."""

    voltage_filter_tau_s: float = 30.0
    slope_window_s: float = 1200.0
    """Length of the pseudo-resistance slope fit (line through 2-min means)."""
    mean_interval_s: float = 120.0
    """Means of this length feed the slope fit."""
    back_emf_V: float = 1.6
    """E0 in R = (U − E0)/I."""


@dataclass(frozen=True)
class EkfSection:
    """Extended Kalman filter on the recipe's nominal process model.

    Names are model state names plus the random-walk bias states
    ``heat_loss_bias`` (relative change of the heat-loss resistance, 1) and
    ``ce_bias`` (additive current-efficiency bias, 1).
    """

    initial: dict[str, float] = field(default_factory=dict)
    """Initial state (model units); missing names use the model's nominal operating point."""
    initial_std: dict[str, float] = field(default_factory=dict)
    """Initial standard deviation per state."""
    process_std_per_sqrt_h: dict[str, float] = field(default_factory=dict)
    """Random-walk process noise per state, as standard deviation per sqrt(hour)."""
    voltage_std_V: float = 0.04
    """Cell-voltage measurement noise (bubble noise, inflated for its correlation)."""
    dip_std_degC: float = 3.0
    """Thermocouple dip noise including its lag bias."""
    lab_oxide_std_wtpct: float = 0.08
    """Oxide lab result noise."""
    gate_sigma: float = 4.0
    """Innovations beyond this many standard deviations are rejected and logged."""
    history_h: float = 2.0
    """Buffered history for fusing delayed samples at their sample time."""
    dip_offset_degC: float = 0.0
    """Known mean error of a dip reading (reading − bath temperature, e.g. the
    thermocouple lag over the dip, negative); subtracted before fusing."""
    anode_effect_voltage_V: float = 15.0
    """Above this cell voltage the cell is taken to be in anode effect: the
    voltage is not fused and the model runs with its anode-effect input on."""


@dataclass(frozen=True)
class SoftSensorSection:
    """An ONNX soft sensor with a lab/thermocouple bias update."""

    model_file: str
    """ONNX file, relative to the recipe file."""
    features: tuple[str, ...]
    """Feature names in the model's input order (see estimators.features)."""
    input_name: str
    """Name of the model's input tensor, shape [1, len(features)] (or [N, len])."""
    output_name: str
    """Name of the model's output tensor, shape [1, 1]."""
    target: str
    """Signal it predicts, e.g. ``bath_temp_degC``."""
    unit: str
    sample_input: str
    """Recipe input (role sample) whose results update the bias."""
    bias_gain: float = 0.3
    """b ← b + gain·(e − b) on each accepted sample."""
    first_sample_sets_bias: bool = True
    """The first accepted sample sets b = e outright (the starting bias 0 is no estimate);
    later samples use ``bias_gain``."""
    max_sample_age_s: float = 7200.0
    """Samples older than this (sample time vs now) are rejected."""
    valid_range: tuple[float, float] = (-1e9, 1e9)
    """Samples and predictions outside this range are rejected."""
    use_in_filter: bool = False
    """Feed the bias-corrected prediction into the Kalman filter as a measurement."""
    measurement_std: float = 5.0
    """Standard deviation of the soft sensor as a filter measurement."""


@dataclass(frozen=True)
class EstimatorSection:
    """Estimator choice and tuning."""

    kind: Literal["filtered", "ekf"] = "filtered"
    """``filtered``: baseline signals only; ``ekf``: baseline signals plus the
    Kalman filter's hidden states with covariance."""
    filtered: FilteredEstimatorSection = field(default_factory=FilteredEstimatorSection)
    ekf: EkfSection = field(default_factory=EkfSection)
    soft_sensor: SoftSensorSection | None = None
    warmup_s: float = 600.0
    """Inputs and estimator must be healthy this long before ON is granted."""


@dataclass(frozen=True)
class TrackingFeedSection:
    """Industrial tracking feed and electrode control (reference §2)."""

    nominal_feed_kg_h: float
    underfeed_ratio: float = 0.7
    overfeed_ratio: float = 1.4
    overfeed_duration_s: float = 3600.0
    min_underfeed_s: float = 1800.0
    max_underfeed_s: float = 10800.0
    slope_trigger_uohm_per_h: float = 1.0
    """Switch to overfeed when the pseudo-resistance slope exceeds this."""
    target_resistance_uohm: float = 1300.0
    resistance_deadband_uohm: float = 40.0
    electrode_step_cm: float = 0.2
    electrode_min_interval_s: float = 1800.0
    electrode_uohm_per_cm: float = 140.0
    """Approximate ∂R/∂ACD, sizes a move."""
    anode_effect_voltage_V: float = 15.0
    """Voltage above which the baseline treats the cell as in anode effect."""
    bath_temp_target_degC: float = 1050.0
    """Bath temperature the resistance target is corrected toward after each dip."""
    target_correction_uohm_per_K: float = 0.0
    """Change of the resistance target per K of dip error (0 = no correction)."""
    target_correction_limit_uohm: float = 100.0
    """Largest total correction of the resistance target."""


@dataclass(frozen=True)
class ControllerSection:
    """Controller choice and tuning."""

    kind: Literal["baseline", "mpc"] = "baseline"
    baseline: TrackingFeedSection | None = None
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
    """Consecutive cycles with bad inputs, guard or permissive failures before a shed."""
    readback_fault_cycles: int = 3


@dataclass(frozen=True)
class Recipe:
    """One unit kind: model, bindings, tuning, limits, permissives."""

    schema_version: int
    name: str
    unit_kind: Literal["electrolysis_cell", "vacuum_furnace", "annealing_furnace"]
    period_s: float
    model: ModelSection
    io: IoSection
    estimator: EstimatorSection
    controller: ControllerSection
    limits: dict[str, MvLimits]
    permissives: dict[str, Permissive] = field(default_factory=dict)
    modes: ModesSection = field(default_factory=ModesSection)
    kpi_warmup_h: float = 6.0
    """KPIs are computed from the simulator's truth after this warm-up."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        if self.period_s <= 0:
            raise ValueError("period_s must be > 0")


@dataclass(frozen=True)
class SimPlantSpec:
    """A unit served by the in-process simulator."""

    kind: Literal["sim"]
    scenario: str = "nominal"
    seed: int = 0


@dataclass(frozen=True)
class SiteUnit:
    """One unit a runtime process runs."""

    name: str
    recipe: str
    """Path of the recipe file, relative to the site file."""
    plant: SimPlantSpec
    requested_mode: Literal["OFF", "STANDBY", "ON"] = "STANDBY"


@dataclass(frozen=True)
class Site:
    """The units of one runtime process."""

    schema_version: int
    site: str
    units: tuple[SiteUnit, ...]
    record_dir: str = "records"
    speed: float = 1.0
    """Real-time multiple for simulated plants (1 = real time)."""

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError("unit names must be unique")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")

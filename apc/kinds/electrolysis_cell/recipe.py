"""Recipe sections of the electrolysis cell: its baseline signals, Kalman filter, soft sensor,
industrial tracking-feed baseline and cell MPC (defaults for the 6 kA Nd cell, with their sources),
and the cell recipe that holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from apc.recipe.schema import ControllerSection, EstimatorSection, Recipe


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
    ae_confirm_s: float = 10.0
    """An anode effect is confirmed only when the measured cell voltage stays above the recipe's
    anode-effect threshold (``controller.baseline.anode_effect_voltage_V``) this long, from the
    first sample above to the current one: 10 s = the first sample and two more 5 s cycles, so
    one or two outlier samples are not an anode effect (see ``docs/anode_effects.md``)."""
    ae_clear_s: float = 30.0
    """A confirmed anode effect ends once the measured voltage has stayed below the threshold this long."""
    ae_min_current_kA: float = 1.0
    """Voltage samples with a smaller line current are not judged for anode effects."""

    def __post_init__(self) -> None:
        for name in ("ae_confirm_s", "ae_clear_s", "ae_min_current_kA"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0")


@dataclass(frozen=True)
class EkfSection:
    """Extended Kalman filter on the recipe's nominal process model.

    Names are model state names plus the random-walk bias states
    ``heat_loss_bias`` (relative change of the heat-loss resistance, 1) and
    ``ce_bias`` (additive current-efficiency bias, 1). Defaults are tuned for
    the 6 kA cell on seeds 1–6 of the simulator (bench/estimator_accuracy.py).
    """

    initial: dict[str, float] = field(default_factory=dict)
    """Initial state (model units); missing names use the model's nominal operating point."""
    initial_std: dict[str, float] = field(default_factory=dict)
    """Initial standard deviation per state."""
    process_std_per_sqrt_h: dict[str, float] = field(default_factory=dict)
    """Random-walk process noise per state, as standard deviation per sqrt(hour)."""
    voltage_std_V: float = 0.03
    """Cell-voltage noise from gas bubbles. With ``voltage_noise_tau_s > 0`` the
    std of that coloured noise; with ``voltage_noise_tau_s = 0`` the white
    noise assumed instead (then inflate it for the correlation: σ·sqrt((1+a)/(1−a)),
    a = exp(−period/τ), ≈ 0.085 V for σ = 0.03 V, τ = 20 s, 5 s period)."""
    voltage_noise_tau_s: float = 20.0
    """Correlation time of the bubble noise. ``> 0``: carried as a first-order
    Gauss–Markov state and the voltage fused with ``voltage_white_std_V``;
    ``0``: treated as white noise of ``voltage_std_V``."""
    voltage_white_std_V: float = 0.008
    """White part of the voltage noise (instrument, and the line-current noise
    seen through the voltage), used when ``voltage_noise_tau_s > 0``."""
    dip_std_degC: float = 1.2
    """Thermocouple dip noise (after removing ``dip_offset_degC``)."""
    dip_offset_degC: float = -2.5
    """Mean error of a dip reading (reading − bath temperature), subtracted
    before fusing: a thermocouple of time constant τ_tc dipped for t_dip from
    ambient reads low by (T − T_amb)·exp(−t_dip/τ_tc), ≈ 2.5 K for 120 s and 20 s."""
    lab_oxide_std_wtpct: float = 0.05
    """Oxide lab result noise (repeatability of the analysis)."""
    gate_sigma: float = 4.0
    """Innovations beyond this many standard deviations are rejected and logged."""
    history_h: float = 2.0
    """Buffered history for fusing delayed samples at their sample time."""
    anode_effect_voltage_V: float = 15.0
    """Above this cell voltage the cell is taken to be in anode effect: the
    voltage is not fused and the model runs with its anode-effect input on."""
    voltage_step_gap_std_cm: float = 0.5
    """A voltage step the gate rejected 12 cycles in a row is taken as a step of the gap (an anode
    change, a move the filter was not told of): before that voltage is fused ungated the gap's
    variance is widened by this std, so the step goes to the gap and not to the oxide or the
    temperature; 0 = no widening."""
    anode_effect_max_s: float = 600.0
    """How long an anode effect may keep the voltage unfused before the filter
    reports itself unhealthy (the MPC sheds). Shorter anode effects are a process
    event the filter models, not a fault: the MPC stays on and answers them."""
    anode_effect_margin_std_A_cm2: float = 0.05
    """At an anode effect's onset the anode current density has just reached the
    critical one: the model's anode-effect margin is fused as 0 with this std
    (ungated), which corrects an oxide estimate that ran above the truth; 0 = off."""


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
    """Feed the bias-corrected prediction into the Kalman filter as a measurement.

    Its error is slow (a level that the dip bias update moves), not white, and
    its bias is learnt from the same dips the filter fuses: fused every cycle
    it would make the filter far more confident than it is. It is therefore
    fused at most once per ``filter_interval_s``, with ``measurement_std``."""
    measurement_std: float = 5.0
    """Standard deviation of the soft sensor as a filter measurement (its
    bias-corrected RMSE, not its noise)."""
    filter_interval_s: float = 1800.0
    """Shortest time between two fusions into the filter (≈ the correlation
    time of its error)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.measurement_std < float("inf"):
            raise ValueError("measurement_std must be a finite number > 0")
        if not 0.0 <= self.filter_interval_s < float("inf"):
            raise ValueError("filter_interval_s must be a finite number >= 0")


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
    """Threshold of the anode-effect detector of the baseline signals: the baseline answers an anode
    effect once the measured voltage has stayed above it for ``estimator.filtered.ae_confirm_s``."""
    bath_temp_target_degC: float = 1050.0
    """Bath temperature the resistance target is corrected toward after each dip."""
    target_correction_uohm_per_K: float = 0.0
    """Change of the resistance target per K of dip error (0 = no correction)."""
    target_correction_limit_uohm: float = 100.0
    """Largest total correction of the resistance target."""


MPC_CV_RANKS = ("ae_margin", "metal_melting", "oxide_band", "bath_temp_band")
"""Soft constraints of the cell MPC, highest rank first (the order of ``MpcSection.rank_penalties``)."""


@dataclass(frozen=True)
class MpcSection:
    """Nonlinear MPC of the electrolysis cell on the recipe's nominal model (``controllers.cell_mpc``).

    Ranked objectives: anode-effect margin > metal above its melting point >
    oxide band > bath-temperature band (soft constraints, exact L1 penalties
    separated by orders of magnitude, averaged over the horizon) > production
    > energy per kg. Needs ``estimator.kind: ekf``.
    """

    horizon_steps: int = 36
    """Prediction steps N (horizon = N × step length)."""
    step_multiple: int = 60
    """Length of one prediction step as a multiple of the recipe's ``period_s``."""
    rk4_substeps: int = 2
    """RK4 substeps per prediction step (the metal node settles in ~100 s)."""
    oxide_band_wtpct: tuple[float, float] = (1.8, 2.7)
    """Dissolved-oxide band, wt% (soft)."""
    bath_temp_band_degC: tuple[float, float] = (1040.0, 1060.0)
    """Bath-temperature band, degC (soft)."""
    min_ae_margin_A_cm2: float = 0.3
    """Smallest critical-minus-actual anode current density, A/cm² (soft)."""
    metal_melting_margin_K: float = 10.0
    """Metal temperature kept this far above the model's ``metal_melting_degC``, K (soft)."""
    rank_penalties: tuple[float, float, float, float] = (1.0e6, 1.0e5, 1.0e4, 1.0e3)
    """Linear penalty per violation unit for ae_margin, metal_melting, oxide_band, bath_temp_band
    (strictly decreasing)."""
    violation_units: tuple[float, float, float, float] = (0.02, 1.0, 0.1, 1.0)
    """Size of one violation unit for the same four: A/cm², K, wt%, K."""
    quadratic_penalty_ratio: float = 0.1
    """Quadratic slack penalty as a share of the linear one (per squared violation unit); keeps the NLP smooth."""
    production_weight: float = 1.0
    """Reward per kg/h of predicted metal production."""
    energy_weight: float = 0.2
    """Cost per kWh/kg of predicted specific energy."""
    move_weights: dict[str, float] = field(default_factory=dict)
    """Move suppression per MV name: cost per (Δ per step / MV range)²; missing MVs use 1.0.
    For increment MVs the planned rate is penalised: cost per (rate / largest rate)²."""
    undissolved_weight: float = 0.3
    """Cost per kg of predicted undissolved (suspended) oxide, a sludge guard."""
    terminal_temp_rate_weight: float = 0.0
    """Cost per (K/h)² of the bath-temperature rate at the end of the horizon (turnpike guard)."""
    min_increment: float = 0.02
    """Increment MVs: planned moves smaller than this (MV unit) are rounded to zero."""
    disturbance_values: dict[str, float] = field(default_factory=dict)
    """Model disturbances not measured: value used in the prediction (every model disturbance
    needs a value here or a binding in ``disturbance_inputs``)."""
    disturbance_inputs: dict[str, str] = field(default_factory=dict)
    """Model disturbance → recipe input (role disturbance) fed forward; falls back to
    ``disturbance_values`` when the input is not valid this cycle."""
    max_iter: int = 60
    """IPOPT iteration cap per solve (the real-time budget; deterministic in virtual time)."""
    tol: float = 1.0e-6
    """IPOPT convergence tolerance."""
    acceptable_tol: float = 1.0e-4
    """IPOPT acceptable tolerance (accepted after a few iterations at this level)."""
    max_solve_wall_s: float = 0.0
    """Wall-time budget of one IPOPT attempt in real-time operation, s (0: none). A warm attempt
    that runs out is not retried cold (the last plan is held). Applied only by a controller built
    for real time; offline simulation (``apc sim``) is capped by ``max_iter`` alone and stays
    deterministic."""
    mumps_scaling: bool = False
    """Let MUMPS scale (and permute for scaling) the KKT system of every IPOPT iteration. Off by
    default: the NLP is scaled by construction (state deviations, violation units), and the
    scaling analysis is a large share of a warm solve's linear algebra."""
    compile_nlp: bool = True
    """Compile the NLP functions (model, derivatives) to C with ``compiler``, once per generated
    source (cached by its hash in ``compile_cache_dir``); without a working compiler they stay
    interpreted (same results, slower), with a log message."""
    compiler: str = "gcc"
    """C compiler command for ``compile_nlp``."""
    compile_cache_dir: str = ""
    """Directory of the compiled NLP libraries; empty: ``$XDG_CACHE_HOME/apc/cell_mpc``
    (``~/.cache/apc/cell_mpc``)."""

    def __post_init__(self) -> None:
        if self.horizon_steps < 2:
            raise ValueError("horizon_steps must be >= 2")
        if self.step_multiple < 1 or self.rk4_substeps < 1:
            raise ValueError("step_multiple and rk4_substeps must be >= 1")
        for name in ("oxide_band_wtpct", "bath_temp_band_degC"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be [low, high] with low < high")
        if not all(p > 0 for p in self.rank_penalties):
            raise ValueError("rank_penalties must be > 0")
        if any(a <= b for a, b in zip(self.rank_penalties, self.rank_penalties[1:])):
            raise ValueError("rank_penalties must be strictly decreasing (highest rank first)")
        if not all(v > 0 for v in self.violation_units):
            raise ValueError("violation_units must be > 0")
        for name in ("quadratic_penalty_ratio", "production_weight", "energy_weight", "undissolved_weight",
                     "terminal_temp_rate_weight", "min_increment"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if any(w < 0 for w in self.move_weights.values()):
            raise ValueError("move_weights must be >= 0")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not (0 < self.tol <= self.acceptable_tol):
            raise ValueError("need 0 < tol <= acceptable_tol")
        if not 0 <= self.max_solve_wall_s < float("inf"):
            raise ValueError("max_solve_wall_s must be a finite number >= 0 (0: no wall-time budget)")
        if self.compile_nlp and not self.compiler.strip():
            raise ValueError("compiler must name a C compiler when compile_nlp is on")


@dataclass(frozen=True)
class CellEstimatorSection(EstimatorSection):
    """Estimator choice and tuning of a cell."""

    kind: Literal["filtered", "ekf"] = "filtered"
    """``filtered``: baseline signals only; ``ekf``: baseline signals plus the
    Kalman filter's hidden states with covariance."""
    filtered: FilteredEstimatorSection = field(default_factory=FilteredEstimatorSection)
    ekf: EkfSection = field(default_factory=EkfSection)
    soft_sensor: SoftSensorSection | None = None
    ae_forecast_horizon_s: float = 1800.0
    """Anode-effect forecast: how far ahead it looks (``docs/anode_effects.md``). Beside
    ``filtered``'s detection fields rather than inside that section, whose contents enter the
    baseline's hash."""
    ae_forecast_step_s: float = 60.0
    """Spacing of the forecast's horizon steps (the lead time's resolution)."""
    ae_forecast_threshold: float = 0.2
    """Forecast probability at or above which an anode effect is forecast (the lead time is
    reported, and an alarm may be raised); below it ``ae_forecast_lead_s`` is NaN. 0.2 and the slope
    point below: best F1 on the tuning seeds 31–33 of ``bench/anode_effect_forecast.py``."""
    ae_forecast_slope_uohm_h: float = 40.0
    """Pseudo-resistance slope at which the voltage route of the forecast gives ½."""
    ae_forecast_slope_width_uohm_h: float = 10.0
    """Width of the voltage route's logistic (slope change from ½ to ≈ 0.73)."""

    def __post_init__(self) -> None:
        for name in ("ae_forecast_horizon_s", "ae_forecast_step_s", "ae_forecast_slope_width_uohm_h"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0")
        if not (isinstance(self.ae_forecast_threshold, (int, float)) and 0.0 < self.ae_forecast_threshold <= 1.0):
            raise ValueError("ae_forecast_threshold must lie in (0, 1]")
        if not (isinstance(self.ae_forecast_slope_uohm_h, (int, float))
                and math.isfinite(self.ae_forecast_slope_uohm_h)):
            raise ValueError("ae_forecast_slope_uohm_h must be a finite number")


@dataclass(frozen=True)
class CellControllerSection(ControllerSection):
    """Controller choice and tuning of a cell."""

    baseline: TrackingFeedSection | None = None
    """The industrial tracking-feed baseline; required when ``kind`` is ``baseline``."""
    mpc: MpcSection | None = None
    """Cell MPC tuning; required when ``kind`` is ``mpc``."""


@dataclass(frozen=True)
class CellRecipe(Recipe):
    """An electrolysis cell's recipe (``unit_kind: electrolysis_cell``)."""

    estimator: CellEstimatorSection
    controller: CellControllerSection

"""One cycle of a unit as a typed record: built once per cycle by the unit, read by the recorder (as
JSON), the HMI, the KPIs, metrics, the status line and tests.

:meth:`CycleRecord.to_json` gives the flight record's cycle object (``docs/flight_record.md``);
:meth:`CycleRecord.from_json` reads one back (``apc report``, exports, replays).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputRecord:
    """One validated input: its sample (None when none was read) and the validator's verdict."""

    value: float | None
    quality: str | None
    source_ts: float | None
    receive_ts: float | None
    sample_ts: float | None
    verdict: str

    def to_json(self) -> list[Any]:
        return [self.value, self.quality, self.source_ts, self.receive_ts, self.sample_ts, self.verdict]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> InputRecord:
        value, quality, source_ts, receive_ts, sample_ts, verdict = data
        return cls(value, quality, source_ts, receive_ts, sample_ts, str(verdict))


@dataclass(frozen=True)
class EstimateRecord:
    """The estimate: state names and values, covariance diagonal, health and extra signals."""

    names: tuple[str, ...]
    x: tuple[float, ...]
    P_diag: tuple[float, ...] | None
    health: str
    extras: Mapping[str, float] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """Every estimated signal by name (states, then extras)."""
        out = dict(zip(self.names, self.x))
        out.update(self.extras)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "x": list(self.x),
                "P_diag": None if self.P_diag is None else list(self.P_diag), "health": self.health,
                "extras": dict(self.extras)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EstimateRecord:
        p = data.get("P_diag")
        return cls(tuple(data["names"]), tuple(data["x"]), None if p is None else tuple(p), str(data["health"]),
                   dict(data.get("extras") or {}))


@dataclass(frozen=True)
class ModeRecord:
    """Requested and actual mode, the hold in force ('' when none) and each MV's enable."""

    requested: str
    actual: str
    hold: str
    mvs: Mapping[str, bool]

    def to_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "actual": self.actual, "hold": self.hold, "mvs": dict(self.mvs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModeRecord:
        return cls(str(data["requested"]), str(data["actual"]), str(data.get("hold") or ""),
                   dict(data.get("mvs") or {}))


@dataclass(frozen=True)
class PlanRecord:
    """The controller's plan: proposed moves, predicted trajectories and the solve."""

    moves: Mapping[str, float]
    predicted: Mapping[str, tuple[float, ...]]
    status: str
    iterations: int
    solve_time_s: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"moves": dict(self.moves), "predicted": {n: list(v) for n, v in self.predicted.items()},
                "status": self.status, "iterations": self.iterations, "solve_time_s": self.solve_time_s,
                "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanRecord:
        return cls(dict(data["moves"]), {n: tuple(v) for n, v in (data.get("predicted") or {}).items()},
                   str(data["status"]), int(data["iterations"]), float(data["solve_time_s"]), str(data["reason"]))


@dataclass(frozen=True)
class DecisionRecord:
    """The guard's decision on one MV: what was proposed, what may be written, and why."""

    proposed: float | None
    value: float
    write: bool
    clamps: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"proposed": self.proposed, "value": self.value, "write": self.write, "clamps": list(self.clamps),
                "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionRecord:
        return cls(data.get("proposed"), float(data["value"]), bool(data["write"]), tuple(data.get("clamps") or ()),
                   str(data.get("reason") or ""))


@dataclass(frozen=True)
class WriteRecord:
    """One write of the cycle and the plant's answer."""

    tag: str
    value: float
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "value": self.value, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WriteRecord:
        return cls(str(data["tag"]), float(data["value"]), bool(data["ok"]), str(data.get("detail") or ""))


@dataclass(frozen=True)
class TimingRecord:
    """When (s after the cycle's UTC) the read, the estimate, the plan and the write were done (real time)."""

    read_s: float
    estimate_s: float
    plan_s: float
    write_s: float

    def to_json(self) -> dict[str, float]:
        return {"read_s": self.read_s, "estimate_s": self.estimate_s, "plan_s": self.plan_s, "write_s": self.write_s}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimingRecord:
        return cls(float(data["read_s"]), float(data["estimate_s"]), float(data["plan_s"]), float(data["write_s"]))


@dataclass(frozen=True)
class BatchRecord:
    """The batch's reference in force: state, segment, target and band of the controlled temperature."""

    state: str
    segment: int
    kind: str
    target_degC: float
    upper_degC: float
    lower_degC: float
    hold_degC: float | None
    soak_done_s: float
    stage_power_kW: float

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "segment": self.segment, "kind": self.kind, "target_degC": self.target_degC,
                "upper_degC": self.upper_degC, "lower_degC": self.lower_degC, "hold_degC": self.hold_degC,
                "soak_done_s": self.soak_done_s, "stage_power_kW": self.stage_power_kW}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchRecord:
        return cls(str(data["state"]), int(data["segment"]), str(data.get("kind") or ""), float(data["target_degC"]),
                   float(data["upper_degC"]), float(data["lower_degC"]), data.get("hold_degC"),
                   float(data.get("soak_done_s", 0.0)), float(data.get("stage_power_kW", float("nan"))))


@dataclass(frozen=True)
class CycleRecord:
    """Everything one cycle saw and did (see the module docstring)."""

    k: int
    t_s: float
    scheduled_mono_s: float
    actual_mono_s: float
    utc: float
    inputs: Mapping[str, InputRecord]
    estimate: EstimateRecord
    mode: ModeRecord
    plan: PlanRecord | None
    guard_clamps: int
    """MVs the guard clamped this cycle."""
    decisions: Mapping[str, DecisionRecord]
    writes: tuple[WriteRecord, ...]
    readback: Mapping[str, float]
    dcs_at_limit: Mapping[str, str]
    """MVs whose DCS loop reports its output at a limit (``high``, ``low``, ``highlow``)."""
    shed: bool
    """A shed was latched in this cycle."""
    shed_reason: str
    timing: TimingRecord | None = None
    late: str = ""
    """Which answer missed its deadline (``estimate`` or ``plan``), '' when none."""
    fault: Mapping[str, str] | None = None
    """A block that raised: ``stage`` and ``error``."""
    batch: BatchRecord | None = None
    recipe_reload: Mapping[str, str] | None = None
    truth: Mapping[str, float] | None = None
    """The simulator's truth (simulated plants only; KPIs and benchmarks, never control)."""

    def to_json(self) -> dict[str, Any]:
        """The flight record's cycle object."""
        rec: dict[str, Any] = {
            "k": self.k, "t_s": self.t_s, "scheduled_mono_s": self.scheduled_mono_s,
            "actual_mono_s": self.actual_mono_s, "utc": self.utc,
            "inputs": {n: v.to_json() for n, v in self.inputs.items()},
            "estimate": self.estimate.to_json(),
            "mode": self.mode.to_json(),
            "plan": None if self.plan is None else self.plan.to_json(),
            "guard": {"clamps": self.guard_clamps, "decisions": {n: d.to_json() for n, d in self.decisions.items()}},
            "writes": [w.to_json() for w in self.writes],
            "readback": dict(self.readback),
            "dcs_at_limit": dict(self.dcs_at_limit),
            "shed": self.shed,
            "shed_reason": self.shed_reason,
        }
        if self.timing is not None:
            rec["timing"] = self.timing.to_json()
        if self.late:
            rec["late"] = self.late
        if self.fault is not None:
            rec["fault"] = dict(self.fault)
        if self.batch is not None:
            rec["batch"] = self.batch.to_json()
        if self.recipe_reload is not None:
            rec["recipe_reload"] = dict(self.recipe_reload)
        if self.truth is not None:
            rec["truth"] = dict(self.truth)
        return rec

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CycleRecord:
        """A cycle object of a flight record (``KeyError`` names a missing key)."""
        guard = data.get("guard") or {}
        plan, timing, batch = data.get("plan"), data.get("timing"), data.get("batch")
        return cls(
            k=int(data["k"]), t_s=float(data["t_s"]), scheduled_mono_s=float(data.get("scheduled_mono_s", data["t_s"])),
            actual_mono_s=float(data.get("actual_mono_s", data["t_s"])), utc=float(data.get("utc", 0.0)),
            inputs={n: InputRecord.from_json(v) for n, v in (data.get("inputs") or {}).items()},
            estimate=EstimateRecord.from_json(data["estimate"]) if "estimate" in data
            else EstimateRecord((), (), None, ""),
            mode=ModeRecord.from_json(data["mode"]) if "mode" in data else ModeRecord("", "", "", {}),
            plan=None if plan is None else PlanRecord.from_json(plan),
            guard_clamps=int(guard["clamps"]),
            decisions={n: DecisionRecord.from_json(d) for n, d in (guard.get("decisions") or {}).items()},
            writes=tuple(WriteRecord.from_json(w) for w in data.get("writes") or ()),
            readback=dict(data.get("readback") or {}),
            dcs_at_limit=dict(data.get("dcs_at_limit") or {}),
            shed=bool(data["shed"]),
            shed_reason=str(data.get("shed_reason") or ""),
            timing=None if timing is None else TimingRecord.from_json(timing),
            late=str(data.get("late") or ""),
            fault=data.get("fault"),
            batch=None if batch is None else BatchRecord.from_json(batch),
            recipe_reload=data.get("recipe_reload"),
            truth=data.get("truth"),
        )

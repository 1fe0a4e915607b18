"""Where a unit's estimator and controller compute, as the unit cycle sees it.

The unit's real-time part (read, validate, modes, guard, write, heartbeat, record) asks a
:class:`UnitCompute` for the estimate and the plan of each cycle and awaits them until a deadline.
Two backends implement it:

* :class:`InlineCompute` (this module): the estimator and controller live in the calling process
  and answer at once. Offline simulation (``apc sim``) and tests use it: virtual time, iteration
  caps, no wall-clock deadline, bit-for-bit reproducible.
* :class:`apc.compute_pool.PooledCompute`: they live in a compute worker process; every request
  has a hard wall-clock deadline, a late answer is never used, a crashed or hung worker is killed
  and respawned (``apc run``).

Answers that do not come are exceptions the unit turns into holds and sheds:
:class:`ComputeLate` (no answer before the deadline) and :class:`ComputeLost` (the worker died;
the unit's estimator and controller start again from nothing and must re-warm).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from apc.curve_preview import CurvePreview
from apc.protocols import Controller, Estimator
from apc.types import Estimate, MvConstraint, Plan, ValidatedInput


class ComputeLate(Exception):
    """No answer before the cycle's deadline (the answer, if it comes, is dropped)."""


class ComputeLost(Exception):
    """The computation is gone (its worker died or was killed): estimator and controller restart."""


class ComputeError(Exception):
    """The estimator or controller raised in a compute worker; the message is its error."""


@dataclass(frozen=True)
class ControlRequest:
    """What the controller needs for one cycle (after the unit decided its mode)."""

    t_s: float
    estimate: Estimate
    applied: Mapping[str, float]
    enabled: Mapping[str, bool]
    disturbances: Mapping[str, float]
    constraints: Mapping[str, MvConstraint]
    tracking: Mapping[str, float]
    """MVs the APC does not drive this cycle, at their DCS readback (the controller tracks them)."""
    run: bool
    """False: track only (the estimate or a readback is not usable); no plan."""
    preview: CurvePreview | None = None
    """Furnaces: the batch's curve preview in force."""


class PreviewHolder:
    """The batch's curve preview as a furnace controller reads it (``preview_source``) where the
    batch is not (a compute worker): set from each control request before the step."""

    def __init__(self) -> None:
        self._preview: CurvePreview | None = None

    def set(self, preview: CurvePreview | None) -> None:
        """The preview in force for the next step."""
        self._preview = preview

    def __call__(self) -> CurvePreview:
        if self._preview is None:
            raise RuntimeError("no curve preview was sent with this control request")
        return self._preview


@dataclass
class Parts:
    """One unit's estimator and controller (and, for a furnace in a worker, its preview holder)."""

    estimator: Estimator
    controller: Controller
    preview: PreviewHolder | None = None


@runtime_checkable
class Deadlined(Protocol):
    """A controller whose solver can stop itself at a wall-clock deadline (IPOPT's ``max_wall_time``)."""

    def set_deadline(self, deadline_mono: float | None) -> None:
        """Stop solving by this ``time.monotonic()`` (``None``: only iteration caps)."""
        ...


def step_parts(parts: Parts, request: ControlRequest, deadline_mono: float | None = None) -> Plan | None:
    """Track, then step the controller of ``parts`` as ``request`` says (both backends run this)."""
    if parts.preview is not None:
        parts.preview.set(request.preview)
    if request.tracking:
        parts.controller.track(request.tracking)
    if not request.run:
        return None
    if isinstance(parts.controller, Deadlined):
        parts.controller.set_deadline(deadline_mono)
    return parts.controller.step(request.t_s, request.estimate, request.applied, request.enabled,
                                 request.disturbances, request.constraints)


def prime_parts(parts: Parts, prior: Mapping[str, tuple[float, float]]) -> None:
    """Give the estimator of ``parts`` a parameter prior (bias name → (value, std)) if it takes one."""
    prime = getattr(parts.estimator, "prime", None)
    if prime is not None:
        prime(prior)


@runtime_checkable
class Primeable(Protocol):
    """A compute whose estimator can be handed a parameter prior (a furnace batch learned from history)."""

    def prime(self, prior: Mapping[str, tuple[float, float]]) -> None:
        """Start the estimator's parameter biases from ``prior``."""
        ...


class UnitCompute(Protocol):
    """A unit's estimator and controller, wherever they run."""

    async def estimate(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float],
                       deadline_mono: float | None) -> Estimate:
        """The estimate at ``t_s``; :class:`ComputeLate` / :class:`ComputeLost` when it does not come."""
        ...

    async def control(self, request: ControlRequest, deadline_mono: float | None) -> Plan | None:
        """The plan (``None`` when ``request.run`` is false); the same exceptions."""
        ...

    async def prepare(self, loaded: Any) -> Any:
        """Build new parts for a recipe reload (off the real-time path); what :meth:`install` takes."""
        ...

    def install(self, prepared: Any) -> None:
        """Use the parts :meth:`prepare` built from now on (at a cycle boundary)."""
        ...

    def inject(self, fault: str, duration_s: float = 0.0) -> None:
        """A scenario fault: ``stall`` (no answer for ``duration_s`` plant seconds) or ``crash``."""
        ...

    @property
    def needs_preview(self) -> bool:
        """True when control requests must carry the batch's curve preview (a furnace not reading its batch)."""
        ...


class InlineCompute:
    """Estimator and controller in this process; answers at once (see module docstring).

    ``build`` makes the parts of a recipe (for a reload, and fresh ones after an injected crash;
    ``None``: neither is possible). Stalls are counted in the plant seconds of the cycles' ``t_s``.
    """

    def __init__(self, parts: Parts, build: Callable[[Any], Parts] | None = None, loaded: Any = None) -> None:
        self.parts = parts
        self._build = build
        self._loaded = loaded
        self._stall_s = 0.0
        self._stall_until: float | None = None
        self._crash = False

    async def estimate(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float],
                       deadline_mono: float | None) -> Estimate:
        """The estimator's update (a stalled or crashed computation raises as a worker's would)."""
        self._faults(t_s)
        return self.parts.estimator.update(t_s, inputs, applied)

    async def control(self, request: ControlRequest, deadline_mono: float | None) -> Plan | None:
        """Track and step (see :func:`step_parts`)."""
        self._faults(request.t_s)
        return step_parts(self.parts, request, deadline_mono)

    async def prepare(self, loaded: Any) -> Any:
        """Parts for ``loaded``, built in a worker thread (solvers take a while to set up)."""
        if self._build is None:
            raise ComputeError("this unit's compute cannot build parts for a reload")
        parts = await asyncio.to_thread(self._build, loaded)
        return loaded, parts

    def install(self, prepared: Any) -> None:
        """Use the parts :meth:`prepare` built (or a :class:`Parts`) from now on."""
        if isinstance(prepared, Parts):
            self.parts = prepared
            return
        self._loaded, self.parts = prepared

    @property
    def needs_preview(self) -> bool:
        """True when the controller reads the preview from requests (not from the batch itself)."""
        return self.parts.preview is not None

    def prime(self, prior: Mapping[str, tuple[float, float]]) -> None:
        """Hand the estimator a parameter prior (see :func:`prime_parts`)."""
        prime_parts(self.parts, prior)

    def inject(self, fault: str, duration_s: float = 0.0) -> None:
        """Queue a scenario fault for the next request."""
        if fault == "stall":
            self._stall_s = max(self._stall_s, duration_s)
        elif fault == "crash":
            self._crash = True
        else:
            raise ValueError(f"unknown compute fault {fault!r} (stall, crash)")

    def _faults(self, t_s: float) -> None:
        if self._crash:
            self._crash = False
            if self._build is not None and self._loaded is not None:
                self.parts = self._build(self._loaded)
            raise ComputeLost("injected crash: the computation was restarted")
        if self._stall_s > 0.0:
            self._stall_until = t_s + self._stall_s if self._stall_until is None else self._stall_until
            self._stall_s = 0.0
        if self._stall_until is not None:
            if t_s < self._stall_until:
                raise ComputeLate(f"injected stall until t = {self._stall_until:.0f} s")
            self._stall_until = None

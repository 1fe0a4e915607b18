"""Per-cycle input validation.

Each input gets exactly one :class:`~apc.types.Verdict` per cycle, checked in
this order: missing, bad quality, uncertain, not finite, (samples: no new
sample), stale, out of range, frozen.

Age is judged on the local clock only; the DCS clock is never compared with
ours. For continuous signals the age is ``now_utc`` minus the local receive
time at which the current ``source_ts`` was first seen (a DCS that stops
updating its timestamp makes the value age, whatever its clock says). Lab and
dip samples (role ``sample``) age from ``sample_ts`` and are reported
``NO_NEW_SAMPLE`` once they have been seen in an earlier cycle.

Frozen detection counts fresh reads only (a new ``source_ts``, or none given):
a value the DCS has not refreshed is the staleness check's business.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from apc.recipe.schema import InputSpec
from apc.types import Quality, Sample, ValidatedInput, Verdict

#: Verdicts that do not make a cycle fail (a lab sample that has not changed).
BENIGN_VERDICTS = frozenset({Verdict.OK, Verdict.NO_NEW_SAMPLE})


@dataclass
class _InputState:
    """Memory of one input between cycles (bounded)."""

    source_ts: float | None = None
    first_seen_receive_ts: float | None = None
    seen_sample_key: float | None = None
    history: deque[float] = field(default_factory=deque)


class InputValidator:
    """Validates one snapshot per cycle against the recipe's input specs."""

    def __init__(self, specs: Mapping[str, InputSpec]) -> None:
        self._specs: dict[str, InputSpec] = dict(specs)
        self._state: dict[str, _InputState] = {}
        self.reset()

    @property
    def specs(self) -> Mapping[str, InputSpec]:
        """Input specs by input name."""
        return self._specs

    def reset(self) -> None:
        """Forget all timestamps, seen samples and frozen-value history."""
        self._state = {name: self._new_state(spec) for name, spec in self._specs.items()}

    @staticmethod
    def _new_state(spec: InputSpec) -> _InputState:
        maxlen = spec.frozen.cycles if spec.frozen is not None else 0
        return _InputState(history=deque(maxlen=maxlen))

    def validate(self, now_utc: float, snapshot: Mapping[str, Sample]) -> dict[str, ValidatedInput]:
        """Validate this cycle's ``snapshot`` (keyed by tag); result keyed by input name."""
        out: dict[str, ValidatedInput] = {}
        for name, spec in self._specs.items():
            sample = snapshot.get(spec.tag)
            out[name] = ValidatedInput(name, sample, self._judge(name, spec, now_utc, sample))
        return out

    def _judge(self, name: str, spec: InputSpec, now_utc: float, s: Sample | None) -> Verdict:
        st = self._state[name]
        if s is None:
            return Verdict.MISSING
        # Lab/dip samples are identified by sample_ts (fallback: source_ts).
        key: float | None = None
        if spec.role == "sample" and s.sample_ts is not None:
            age, fresh, key = now_utc - s.sample_ts, True, s.sample_ts
        else:
            age, fresh = self._continuous_age(st, now_utc, s)
            key = s.source_ts if spec.role == "sample" else None
        repeat = key is not None and key == st.seen_sample_key

        if s.quality is Quality.BAD:
            return Verdict.BAD_QUALITY
        if s.quality is Quality.UNCERTAIN and not spec.accept_uncertain:
            return Verdict.UNCERTAIN
        if not math.isfinite(s.value):
            return Verdict.NOT_FINITE
        if repeat:
            return Verdict.NO_NEW_SAMPLE
        if key is not None:
            st.seen_sample_key = key  # first sighting of a usable sample
        if fresh and spec.frozen is not None:
            st.history.append(s.value)
        if not age <= spec.max_age_s:
            return Verdict.STALE
        lo, hi = spec.range
        if not lo <= s.value <= hi:
            return Verdict.OUT_OF_RANGE
        if spec.frozen is not None and self._is_frozen(st.history, spec.frozen.cycles, spec.frozen.epsilon):
            return Verdict.FROZEN
        return Verdict.OK

    @staticmethod
    def _continuous_age(st: _InputState, now_utc: float, s: Sample) -> tuple[float, bool]:
        """Age by local receive time of the current ``source_ts``; also whether it is new."""
        if s.source_ts is None:
            st.source_ts, st.first_seen_receive_ts = None, s.receive_ts
            return now_utc - s.receive_ts, True
        if st.first_seen_receive_ts is None or s.source_ts != st.source_ts:
            st.source_ts, st.first_seen_receive_ts = s.source_ts, s.receive_ts
            return now_utc - s.receive_ts, True
        return now_utc - st.first_seen_receive_ts, False

    @staticmethod
    def _is_frozen(history: deque[float], cycles: int, epsilon: float) -> bool:
        """True when the last ``cycles`` fresh reads each moved at most ``epsilon``."""
        if len(history) < cycles:
            return False
        vals = list(history)
        return all(abs(b - a) <= epsilon for a, b in itertools.pairwise(vals))


def cycle_ok(validated: Mapping[str, ValidatedInput], required: Iterable[str]) -> tuple[bool, str]:
    """Whether every required input is usable; the reason names each failure.

    ``NO_NEW_SAMPLE`` is not a failure; a required name absent from
    ``validated`` counts as missing. Reason format: ``"name: verdict; ..."``.
    """
    failed: list[str] = []
    for name in required:
        v = validated.get(name)
        verdict = v.verdict if v is not None else Verdict.MISSING
        if verdict not in BENIGN_VERDICTS:
            failed.append(f"{name}: {verdict.value}")
    return (not failed, "; ".join(failed))

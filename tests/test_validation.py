"""Tests of per-cycle input validation (apc.validation)."""

from __future__ import annotations

import math
import random

import pytest

from apc.recipe.schema import FrozenCheck, InputSpec
from apc.types import Quality, Sample, ValidatedInput, Verdict
from apc.validation import InputValidator, cycle_ok

T0 = 1_700_000_000.0
DCS_OFFSET = -5 * 3600.0  # DCS clock five hours behind ours


def spec(**kw: object) -> InputSpec:
    base: dict[str, object] = {"tag": "U_TAG", "unit": "V", "range": (0.0, 20.0), "max_age_s": 30.0}
    base.update(kw)
    return InputSpec(**base)  # type: ignore[arg-type]


def good(value: float, now: float, *, quality: Quality = Quality.GOOD, src: float | None = None) -> Sample:
    return Sample(value, quality, now + DCS_OFFSET if src is None else src, now)


def one(v: InputValidator, now: float, sample: Sample | None, tag: str = "U_TAG") -> Verdict:
    snap = {} if sample is None else {tag: sample}
    return v.validate(now, snap)["u"].verdict


def test_ok_result_keyed_by_input_name() -> None:
    """A good, fresh, in-range value is OK and the result is keyed by input name, not tag."""
    v = InputValidator({"u": spec()})
    out = v.validate(T0, {"U_TAG": good(4.2, T0)})
    assert set(out) == {"u"}
    assert out["u"].verdict is Verdict.OK and out["u"].ok
    assert out["u"].sample is not None and out["u"].sample.value == 4.2


def test_missing() -> None:
    """An input whose tag is absent from the snapshot is MISSING."""
    v = InputValidator({"u": spec()})
    out = v.validate(T0, {"OTHER": good(1.0, T0)})
    assert out["u"].verdict is Verdict.MISSING and out["u"].sample is None


def test_bad_quality() -> None:
    """Bad quality gives BAD_QUALITY even for a plausible value."""
    v = InputValidator({"u": spec()})
    assert one(v, T0, good(4.0, T0, quality=Quality.BAD)) is Verdict.BAD_QUALITY


def test_uncertain_rejected_unless_accepted() -> None:
    """Uncertain quality is rejected by default and OK when accept_uncertain is set."""
    assert one(InputValidator({"u": spec()}), T0, good(4.0, T0, quality=Quality.UNCERTAIN)) is Verdict.UNCERTAIN
    v = InputValidator({"u": spec(accept_uncertain=True)})
    assert one(v, T0, good(4.0, T0, quality=Quality.UNCERTAIN)) is Verdict.OK


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_not_finite(value: float) -> None:
    """NaN and ±inf with good quality are NOT_FINITE."""
    v = InputValidator({"u": spec()})
    assert one(v, T0, good(value, T0)) is Verdict.NOT_FINITE


def test_nan_never_ok_under_any_spec() -> None:
    """NaN is never OK, whatever quality, role or acceptance flags (seeded random sweep)."""
    rng = random.Random(1234)
    for i in range(200):
        s = spec(
            role=rng.choice(["measurement", "disturbance", "sample"]),
            accept_uncertain=rng.random() < 0.5,
            range=(-math.inf, math.inf) if rng.random() < 0.3 else (0.0, 20.0),
            max_age_s=1e9,
        )
        v = InputValidator({"u": s})
        q = rng.choice(list(Quality))
        now = T0 + i
        sample = Sample(math.nan, q, now, now, sample_ts=now if s.role == "sample" else None)
        assert one(v, now, sample) is not Verdict.OK


def test_stale_by_local_receive_time() -> None:
    """A source_ts that stops changing ages by local receive time and turns STALE after max_age_s."""
    v = InputValidator({"u": spec(max_age_s=30.0)})
    src = T0 + DCS_OFFSET
    assert one(v, T0, good(4.0, T0, src=src)) is Verdict.OK
    assert one(v, T0 + 30.0, good(4.0, T0 + 30.0, src=src)) is Verdict.OK
    assert one(v, T0 + 31.0, good(4.0, T0 + 31.0, src=src)) is Verdict.STALE
    # A new DCS timestamp makes it fresh again.
    assert one(v, T0 + 40.0, good(4.1, T0 + 40.0, src=src + 1.0)) is Verdict.OK


def test_dcs_clock_hours_off_does_not_trip() -> None:
    """A DCS clock hours behind or ahead never makes an updating signal stale."""
    for offset in (-6 * 3600.0, +9 * 3600.0):
        v = InputValidator({"u": spec(max_age_s=30.0)})
        for k in range(20):
            now = T0 + 10.0 * k
            s = Sample(4.0 + 0.01 * k, Quality.GOOD, now + offset, now)
            assert one(v, now, s) is Verdict.OK


def test_no_source_ts_uses_receive_ts() -> None:
    """Without source_ts the age is now − receive_ts, so an old receive time is STALE."""
    v = InputValidator({"u": spec(max_age_s=30.0)})
    assert one(v, T0, Sample(4.0, Quality.GOOD, None, T0)) is Verdict.OK
    assert one(v, T0 + 100.0, Sample(4.0, Quality.GOOD, None, T0 + 100.0)) is Verdict.OK
    assert one(v, T0 + 100.0, Sample(4.0, Quality.GOOD, None, T0 + 50.0)) is Verdict.STALE


def test_out_of_range_rejected_not_clamped() -> None:
    """Values outside range are OUT_OF_RANGE and the raw sample is kept unchanged."""
    v = InputValidator({"u": spec(range=(0.0, 20.0))})
    out = v.validate(T0, {"U_TAG": good(25.0, T0)})
    assert out["u"].verdict is Verdict.OUT_OF_RANGE
    assert out["u"].sample is not None and out["u"].sample.value == 25.0
    assert one(v, T0 + 1, good(-0.1, T0 + 1)) is Verdict.OUT_OF_RANGE
    assert one(v, T0 + 2, good(20.0, T0 + 2)) is Verdict.OK


def test_check_order_bad_before_not_finite_before_stale() -> None:
    """Checks run in the documented order: bad quality over NaN, NaN over stale, stale over range."""
    v = InputValidator({"u": spec()})
    assert one(v, T0, Sample(math.nan, Quality.BAD, None, T0 - 1e6)) is Verdict.BAD_QUALITY
    assert one(v, T0, Sample(math.nan, Quality.GOOD, None, T0 - 1e6)) is Verdict.NOT_FINITE
    assert one(v, T0, Sample(99.0, Quality.GOOD, None, T0 - 1e6)) is Verdict.STALE


@pytest.mark.parametrize("cycles", [2, 3, 5])
def test_frozen_after_n_identical_reads_not_n_minus_1(cycles: int) -> None:
    """With FrozenCheck(cycles=N), N−1 identical reads are OK and the N-th is FROZEN."""
    v = InputValidator({"u": spec(frozen=FrozenCheck(epsilon=1e-6, cycles=cycles))})
    for k in range(cycles - 1):
        assert one(v, T0 + k, good(4.0, T0 + k)) is Verdict.OK
    assert one(v, T0 + cycles, good(4.0, T0 + cycles)) is Verdict.FROZEN
    # Movement beyond epsilon clears it.
    assert one(v, T0 + cycles + 1, good(4.1, T0 + cycles + 1)) is Verdict.OK


def test_frozen_epsilon_zero_means_exactly_identical() -> None:
    """epsilon=0 flags exactly repeated values only."""
    v = InputValidator({"u": spec(frozen=FrozenCheck(epsilon=0.0, cycles=2))})
    assert one(v, T0, good(4.0, T0)) is Verdict.OK
    assert one(v, T0 + 1, good(4.0 + 1e-12, T0 + 1)) is Verdict.OK
    assert one(v, T0 + 2, good(4.0 + 1e-12, T0 + 2)) is Verdict.FROZEN


def test_noisy_signal_never_frozen_and_history_bounded() -> None:
    """A noisy signal is never FROZEN over many cycles and the history stays bounded."""
    rng = random.Random(7)
    v = InputValidator({"u": spec(frozen=FrozenCheck(epsilon=1e-3, cycles=4))})
    for k in range(1000):
        assert one(v, T0 + k, good(4.0 + rng.uniform(0.01, 0.05) * rng.choice([-1, 1]), T0 + k)) is Verdict.OK
    assert len(v._state["u"].history) <= 4


def test_sample_first_sighting_ok_then_no_new_sample() -> None:
    """A lab sample is OK when first seen and NO_NEW_SAMPLE while its sample_ts repeats."""
    s = spec(role="sample", max_age_s=4 * 3600.0, range=(0.0, 100.0))
    v = InputValidator({"u": s})
    taken = T0 - 1800.0
    lab = Sample(12.5, Quality.GOOD, T0 + DCS_OFFSET, T0, sample_ts=taken)
    assert one(v, T0, lab) is Verdict.OK
    for k in range(1, 5):
        assert one(v, T0 + 10 * k, lab) is Verdict.NO_NEW_SAMPLE
    new = Sample(13.0, Quality.GOOD, T0 + DCS_OFFSET, T0 + 100, sample_ts=T0 + 50)
    assert one(v, T0 + 100, new) is Verdict.OK


def test_sample_age_from_sample_ts() -> None:
    """A new lab sample taken longer ago than max_age_s is STALE."""
    v = InputValidator({"u": spec(role="sample", max_age_s=3600.0)})
    old = Sample(5.0, Quality.GOOD, None, T0, sample_ts=T0 - 7200.0)
    assert one(v, T0, old) is Verdict.STALE


def test_cycle_ok_reason_and_no_new_sample_benign() -> None:
    """cycle_ok fails naming each failed input and verdict; NO_NEW_SAMPLE does not fail."""
    validated = {
        "cell_voltage": ValidatedInput("cell_voltage", None, Verdict.BAD_QUALITY),
        "current": ValidatedInput("current", None, Verdict.OK),
        "lab": ValidatedInput("lab", None, Verdict.NO_NEW_SAMPLE),
        "temp": ValidatedInput("temp", None, Verdict.STALE),
    }
    ok, reason = cycle_ok(validated, ["cell_voltage", "current", "lab"])
    assert not ok and reason == "cell_voltage: bad_quality"
    ok, reason = cycle_ok(validated, ["cell_voltage", "temp", "absent"])
    assert not ok and reason == "cell_voltage: bad_quality; temp: stale; absent: missing"
    assert cycle_ok(validated, ["current", "lab"]) == (True, "")


def test_reset_forgets_state() -> None:
    """reset() forgets seen samples and timestamps."""
    v = InputValidator({"u": spec(role="sample", max_age_s=3600.0)})
    lab = Sample(5.0, Quality.GOOD, None, T0, sample_ts=T0 - 60.0)
    assert one(v, T0, lab) is Verdict.OK
    assert one(v, T0 + 10, lab) is Verdict.NO_NEW_SAMPLE
    v.reset()
    assert one(v, T0 + 20, lab) is Verdict.OK


def test_instances_do_not_share_state() -> None:
    """Two validators keep independent state (no globals)."""
    a = InputValidator({"u": spec(role="sample", max_age_s=3600.0)})
    b = InputValidator({"u": spec(role="sample", max_age_s=3600.0)})
    lab = Sample(5.0, Quality.GOOD, None, T0, sample_ts=T0 - 60.0)
    assert one(a, T0, lab) is Verdict.OK
    assert one(b, T0, lab) is Verdict.OK


def test_sample_rejected_on_first_sighting_is_used_when_corrected() -> None:
    """A lab sample first seen with bad quality is not marked seen; the corrected one is OK."""
    v = InputValidator({"u": spec(role="sample", max_age_s=3600.0)})
    bad = Sample(5.0, Quality.BAD, None, T0, sample_ts=T0 - 60.0)
    assert one(v, T0, bad) is Verdict.BAD_QUALITY
    fixed = Sample(5.0, Quality.GOOD, None, T0 + 10, sample_ts=T0 - 60.0)
    assert one(v, T0 + 10, fixed) is Verdict.OK
    assert one(v, T0 + 20, fixed) is Verdict.NO_NEW_SAMPLE


def test_frozen_ignores_reads_with_repeated_source_ts() -> None:
    """Reads repeating the same source_ts are not new values and do not count towards FROZEN."""
    v = InputValidator({"u": spec(max_age_s=1e6, frozen=FrozenCheck(epsilon=1e-6, cycles=3))})
    src = T0 + DCS_OFFSET
    for k in range(10):
        assert one(v, T0 + k, good(4.0, T0 + k, src=src)) is Verdict.OK

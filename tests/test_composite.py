"""Composite estimate (estimators.composite): which health gates the unit."""

from __future__ import annotations

from collections.abc import Mapping

from apc.types import Estimate, ValidatedInput
from estimators.composite import CompositeEstimator


class _Fixed:
    """An estimator that always reports the same health."""

    def __init__(self, names: tuple[str, ...], health: str) -> None:
        self.names, self.health = names, health

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float],
               extra_measurements: object = None) -> Estimate:
        return Estimate(self.names, tuple("1" for _ in self.names), tuple(1.0 for _ in self.names), None,
                        self.health, {})

    def reset(self) -> None:
        pass


def test_filter_health_gates_only_when_asked() -> None:
    """An unhealthy filter makes the estimate unhealthy only with gate_on_filter; it is always reported."""
    signals, bad_filter = _Fixed(("pseudo_resistance_uohm",), "ok"), _Fixed(("acd_cm",), "no voltage fused")
    gated = CompositeEstimator(signals, bad_filter, gate_on_filter=True).update(0.0, {}, {})
    ungated = CompositeEstimator(signals, bad_filter, gate_on_filter=False).update(0.0, {}, {})
    assert not gated.healthy and gated.health == "no voltage fused"
    assert ungated.healthy and ungated.extras["filter_healthy"] == 0.0
    assert ungated.names == ("acd_cm",) and ungated.extras["pseudo_resistance_uohm"] == 1.0


def test_unhealthy_signals_gate_in_any_case() -> None:
    """Bad baseline signals make the estimate unhealthy whether or not the filter gates."""
    signals, good_filter = _Fixed(("pseudo_resistance_uohm",), "voltage stale"), _Fixed(("acd_cm",), "ok")
    for gate in (True, False):
        est = CompositeEstimator(signals, good_filter, gate_on_filter=gate).update(0.0, {}, {})
        assert est.health == "voltage stale"

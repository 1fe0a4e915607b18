"""Offline training of soft sensors on simulated flight records (not imported by the runtime)."""

"""Helper for the recorder kill test: append cycles forever, reporting each.

Usage: python flight_writer.py RECORD_PATH

After every *completed* ``FlightRecorder.append`` the cycle index is printed
on its own line (flushed), so the parent knows which cycles must survive a
SIGKILL. Cycle ``i`` is fully determined by ``i`` (see :func:`cycle`), so the
parent can check each one is intact.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from apc.recorder import FlightRecorder


def cycle(i: int) -> dict[str, Any]:
    """The deterministic cycle record number ``i`` (~2 kB)."""
    return {
        "k": i,
        "t_s": i * 5.0,
        "truth": {"bath_temp_degC": 1050.0 + i / 7.0, "metal_kg": i * 0.0123},
        "payload": [i * 0.1 + j for j in range(100)],
        "note": f"cycle-{i}-" + "x" * (i % 97),
    }


def main() -> None:
    path = Path(sys.argv[1])
    out = sys.stdout
    with FlightRecorder(path, {"unit": "kill-test"}) as rec:
        i = 0
        while True:
            rec.append(cycle(i))
            out.write(f"{i}\n")
            out.flush()
            i += 1


if __name__ == "__main__":
    main()

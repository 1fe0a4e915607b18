"""Tests for the flight recorder (apc.recorder)."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apc.recorder import (
    FORMAT,
    FORMAT_VERSION,
    FlightRecorder,
    NullRecorder,
    RecordError,
    iter_record,
    read_record,
)

HELPER = Path(__file__).parent / "helpers" / "flight_writer.py"
HEADER = {"unit": "cell-07", "recipe": "nd-6ka", "recipe_sha256": "ab" * 32, "seed": 42, "period_s": 5.0}


def _load_helper() -> Any:
    spec = importlib.util.spec_from_file_location("flight_writer", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, cycles: list[dict[str, Any]], header: dict[str, Any] = HEADER) -> None:
    with FlightRecorder(path, header) as rec:
        for c in cycles:
            rec.append(c)


def test_round_trip_keeps_nan_infinity_and_nested_dicts(tmp_path: Path) -> None:
    """Cycles read back equal what was appended, including NaN, infinities and nesting."""
    path = tmp_path / "run.jsonl"
    cycles = [
        {
            "k": i,
            "t_s": i * 5.0 + 0.1,
            "estimate": {"names": ["T", "ox"], "x": [1050.0 + i / 3, math.nan], "extras": {"deep": {"v": -math.inf}}},
            "plan": {"status": "optimal", "moves": {"feed": 0.1 * i}, "reason": None},
            "shed": bool(i % 2),
            "text": 'line\nbreak "quoted" é',
        }
        for i in range(5)
    ]
    _write(path, cycles)

    rf = read_record(path)
    assert rf.truncated_tail is False
    assert rf.headers == ({"format": FORMAT, "version": FORMAT_VERSION, **HEADER},)
    assert len(rf.cycles) == 5
    for got, want in zip(rf.cycles, cycles):
        assert math.isnan(got["estimate"]["x"][1])
        assert got["estimate"]["extras"]["deep"]["v"] == -math.inf
        got["estimate"]["x"][1] = want["estimate"]["x"][1] = 0.0
        assert got == want
    # One line per cycle plus the header, each a JSON object.
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 7
    assert b"NaN" in lines[1] and b"-Infinity" in lines[1]


def test_numpy_and_enum_values_are_serialised(tmp_path: Path) -> None:
    """numpy scalars/arrays and enums are written as plain JSON numbers, lists and values."""
    import enum

    class Colour(enum.Enum):
        RED = "red"

    path = tmp_path / "np.jsonl"
    _write(path, [{"a": np.float32(0.5), "b": np.int64(7), "c": np.arange(3), "d": Colour.RED, "e": np.float64(0.1)}])
    assert read_record(path).cycles == ({"a": 0.5, "b": 7, "c": [0, 1, 2], "d": "red", "e": 0.1},)


def test_append_to_existing_file_keeps_cycles_and_adds_resumed_header(tmp_path: Path) -> None:
    """Reopening a record appends a resumed header and keeps all earlier cycles in order."""
    path = tmp_path / "run.jsonl"
    _write(path, [{"k": 0}, {"k": 1}])
    _write(path, [{"k": 2}], header={**HEADER, "started_utc": "later"})

    rf = read_record(path)
    assert [c["k"] for c in rf.cycles] == [0, 1, 2]
    assert len(rf.headers) == 2
    assert "resumed" not in rf.headers[0]
    assert rf.headers[1]["resumed"] is True and rf.headers[1]["started_utc"] == "later"
    assert rf.truncated_tail is False


def test_resume_after_kill_cuts_partial_line(tmp_path: Path) -> None:
    """A writer reopening a record whose last line was cut off drops that fragment, keeping the file readable."""
    path = tmp_path / "run.jsonl"
    _write(path, [{"k": 0}, {"k": 1}])
    with open(path, "ab") as f:
        f.write(b'{"k":2,"t_s":1')  # cycle in progress when killed
    assert read_record(path).truncated_tail is True

    _write(path, [{"k": 3}])
    rf = read_record(path)
    assert [c["k"] for c in rf.cycles] == [0, 1, 3]
    assert rf.truncated_tail is False
    assert rf.headers[1]["resumed"] is True


def test_truncated_final_line_is_dropped_and_flagged(tmp_path: Path) -> None:
    """A final line without newline, or with newline but unparsable, is dropped and reported as truncated."""
    path = tmp_path / "run.jsonl"
    _write(path, [{"k": 0}, {"k": 1}])
    full = path.read_bytes()

    path.write_bytes(full + b'{"k":2,"nested":{"a"')
    rf = read_record(path)
    assert [c["k"] for c in rf.cycles] == [0, 1] and rf.truncated_tail is True

    path.write_bytes(full + b'{"k":2,"nes\n')
    rf = read_record(path)
    assert [c["k"] for c in rf.cycles] == [0, 1] and rf.truncated_tail is True

    entries = list(iter_record(path))
    assert [e.kind for e in entries] == ["header", "cycle", "cycle", "truncated"]
    assert entries[-1].line_no == 4


def test_corrupt_middle_line_raises_with_line_number(tmp_path: Path) -> None:
    """A corrupt line followed by further lines is an error that names its line number."""
    path = tmp_path / "run.jsonl"
    _write(path, [{"k": 0}, {"k": 1}, {"k": 2}])
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:5]  # line 3 = cycle k=1
    path.write_bytes(b"\n".join(lines))

    with pytest.raises(RecordError, match=r"run\.jsonl:3: corrupt line") as info:
        read_record(path)
    assert info.value.line_no == 3


def test_non_object_middle_line_raises(tmp_path: Path) -> None:
    """A middle line that is valid JSON but not an object is rejected with its line number."""
    path = tmp_path / "run.jsonl"
    _write(path, [{"k": 0}])
    path.write_bytes(path.read_bytes() + b"[1,2]\n" + b'{"k":1}\n')
    with pytest.raises(RecordError) as info:
        read_record(path)
    assert info.value.line_no == 3


def test_newer_version_and_unknown_format_are_refused(tmp_path: Path) -> None:
    """Records of a newer version or a foreign format are refused by readers and writers."""
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION + 1}) + "\n" + '{"k":0}\n')
    with pytest.raises(RecordError, match="newer than the supported version"):
        read_record(newer)
    with pytest.raises(RecordError, match="newer than the supported version"):
        FlightRecorder(newer, HEADER)
    assert newer.read_text().count("\n") == 2  # writer refused before touching it

    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"format": "something-else", "version": 1}\n')
    with pytest.raises(RecordError, match="not an 'apc-flight-record' header"):
        read_record(foreign)

    no_header = tmp_path / "cycles_only.jsonl"
    no_header.write_text('{"k":0}\n')
    with pytest.raises(RecordError, match=":1:"):
        read_record(no_header)

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(RecordError, match="empty file"):
        read_record(empty)

    # A resumed header of a newer version in the middle is refused too.
    mixed = tmp_path / "mixed.jsonl"
    _write(mixed, [{"k": 0}])
    mixed.write_text(mixed.read_text() + json.dumps({"format": FORMAT, "version": 99}) + "\n")
    with pytest.raises(RecordError) as info:
        read_record(mixed)
    assert info.value.line_no == 3


def test_reserved_keys_and_closed_recorder(tmp_path: Path) -> None:
    """Headers cannot override format/version, cycles cannot carry 'format', and a closed recorder refuses appends."""
    with pytest.raises(ValueError, match="reserved"):
        FlightRecorder(tmp_path / "a.jsonl", {"version": 9})
    rec = FlightRecorder(tmp_path / "b.jsonl", HEADER)
    with pytest.raises(ValueError, match="format"):
        rec.append({"format": "x"})
    rec.append({"k": 0})
    assert rec.cycles_written == 1
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(ValueError, match="closed"):
        rec.append({"k": 1})
    assert [c["k"] for c in read_record(tmp_path / "b.jsonl").cycles] == [0]


def test_second_writer_is_refused(tmp_path: Path) -> None:
    """Only one writer may hold a record; the second gets a RecordError and the file is unchanged."""
    if sys.platform == "win32":
        pytest.skip("flock is POSIX only")
    path = tmp_path / "run.jsonl"
    with FlightRecorder(path, HEADER) as rec:
        rec.append({"k": 0})
        with pytest.raises(RecordError, match="another process"):
            FlightRecorder(path, HEADER)
        rec.append({"k": 1})
    rf = read_record(path)
    assert len(rf.headers) == 1 and [c["k"] for c in rf.cycles] == [0, 1]


def test_fsync_mode_writes_the_same_record(tmp_path: Path) -> None:
    """fsync=True produces the same bytes as the default mode."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cycles = [{"k": i, "v": i / 3} for i in range(3)]
    with FlightRecorder(a, HEADER, fsync=True) as rec:
        for c in cycles:
            rec.append(c)
    _write(b, cycles)
    assert a.read_bytes() == b.read_bytes()


def test_null_recorder_drops_everything() -> None:
    """NullRecorder accepts the FlightRecorder API and writes nothing."""
    with NullRecorder(Path("/nonexistent/dir/x.jsonl"), HEADER, fsync=True) as rec:
        rec.append({"k": 0})
        assert rec.path is None and rec.cycles_written == 1
    assert rec.closed
    with pytest.raises(ValueError):
        rec.append({"k": 1})
    assert not Path("/nonexistent/dir/x.jsonl").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX only")
def test_sigkill_loses_at_most_the_cycle_in_progress(tmp_path: Path) -> None:
    """After a real SIGKILL every cycle the writer reported complete is present and intact."""
    helper = _load_helper()
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    reported: list[int] = []
    try:
        while len(reported) < 200:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read().decode(errors='replace')}")
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever the writer reported before dying is still in the pipe.
        for line in proc.stdout.read().splitlines():
            reported.append(int(line))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert reported == list(range(len(reported)))
    last = reported[-1]

    rf = read_record(path)
    assert len(rf.headers) == 1 and rf.headers[0]["unit"] == "kill-test"
    n = len(rf.cycles)
    # Every reported cycle survives; at most the one in progress (written but
    # not yet reported) is additionally present, never anything beyond it.
    assert last + 1 <= n <= last + 2
    for i, got in enumerate(rf.cycles):
        assert got == helper.cycle(i)

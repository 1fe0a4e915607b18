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
    with pytest.raises(ValueError, match="null recorder is closed"):
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


def test_version_2_leaves_out_what_repeats_and_reads_back_whole_cycles(tmp_path: Path) -> None:
    """Values equal to the previous cycle's (whole keys and second-level keys) are not written again, yet every cycle reads back equal to what was appended; the first cycle after a header is whole."""
    path = tmp_path / "r.apcrec"
    cycles = [{"k": i, "t_s": 5.0 * i, "mode": {"requested": "ON", "actual": "ON"},
               "estimate": {"names": ["a", "b"], "x": [float(i), 2.0], "health": "ok"},
               "plan": {"predicted": {"T": [1.0, 2.0, 3.0]}, "status": "ok" if i % 2 else "held"},
               "shed_reason": "", "nan": float("nan")} for i in range(6)]
    with FlightRecorder(path, HEADER) as rec:
        for c in cycles:
            rec.append(c)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert "_same" not in lines[1]
    assert {"mode", "estimate.names", "estimate.health", "plan.predicted", "shed_reason"} <= set(lines[2]["_same"])
    assert "names" not in lines[2]["estimate"] and "mode" not in lines[2]
    back = read_record(path).cycles
    assert len(back) == 6
    for got, want in zip(back, cycles):
        assert {k: v for k, v in got.items() if k != "nan"} == {k: v for k, v in want.items() if k != "nan"}
        assert math.isnan(got["nan"])
    full = sum(len(json.dumps(c)) for c in cycles[1:])
    written = sum(len(json.dumps(x)) for x in lines[2:])
    assert written < 0.85 * full


def test_rotating_record_splits_into_gzipped_segments_that_read_back_in_order(tmp_path: Path) -> None:
    """Past max_bytes (and at a UTC midnight) the record goes on in a new segment; closed segments are gzipped, every cycle is found once in order, and each segment's header names its number."""
    from apc.recorder import RotatingRecorder

    path = tmp_path / "cell-01-run.apcrec"
    day = 86400.0 * 20000
    rec = RotatingRecorder(path, HEADER, max_bytes=800, daily=True, prefix="cell-01")
    for k in range(60):
        rec.append({"k": k, "utc": day - 300.0 + 10.0 * k, "x": [float(k)] * 5})
    rec.close()
    segments = sorted(tmp_path.glob("cell-01-run.*.apcrec.gz"))
    assert len(segments) >= 3 and not list(tmp_path.glob("*.apcrec.tmp"))
    ks = [c["k"] for seg in segments for c in read_record(seg).cycles] + [c["k"] for c in read_record(path).cycles]
    assert ks == list(range(60))
    heads = [read_record(seg).headers[0] for seg in segments] + [read_record(path).headers[0]]
    assert [h.get("segment", 1) for h in heads] == list(range(1, len(heads) + 1))
    midnight = [c["k"] for seg in segments for c in read_record(seg).cycles[:1]] + [read_record(path).cycles[0]["k"]]
    assert 30 in midnight  # the first cycle of the new UTC day opens a segment


def test_retention_deletes_old_segments_of_the_unit_only(tmp_path: Path) -> None:
    """At a rotation, the unit's compressed segments older than keep_days are deleted; other units' files stay."""
    import os
    import time

    from apc.recorder import RotatingRecorder

    old = tmp_path / "cell-01-old.0001.apcrec.gz"
    other = tmp_path / "cell-02-old.0001.apcrec.gz"
    for p in (old, other):
        p.write_bytes(b"")
        os.utime(p, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    rec = RotatingRecorder(tmp_path / "cell-01-new.apcrec", HEADER, max_bytes=200, keep_days=30, prefix="cell-01")
    for k in range(10):
        rec.append({"k": k, "utc": 1.0e9 + k})
    rec.close()
    assert not old.exists() and other.exists()


def test_audit_log_rotates_by_size_and_day_and_gzips_the_old_ones(tmp_path: Path) -> None:
    """The audit log starts a new file past its size or at a UTC midnight; the old ones are gzipped and every line is kept once."""
    import gzip

    from apc.journal import RotatingTextFile

    now = [86400.0 * 20000 - 50.0]
    log = RotatingTextFile(tmp_path / "audit.jsonl", max_bytes=300, daily=True, keep_days=0, utc=lambda: now[0])
    for i in range(40):
        log.write(json.dumps({"event": "e", "i": i}) + "\n")
        now[0] += 5.0
    log.close()
    old = sorted(tmp_path.glob("audit.*.jsonl.gz"))
    assert len(old) >= 3
    lines = [json.loads(x) for p in old for x in gzip.decompress(p.read_bytes()).decode().splitlines()]
    lines += [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["i"] for x in lines] == list(range(40))

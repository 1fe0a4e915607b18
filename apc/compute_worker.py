"""A compute worker process: holds some units' estimators and controllers and answers their requests.

Started by :class:`apc.compute_pool.ComputePool` as ``python -m apc.compute_worker``; it speaks
length-prefixed pickle frames on stdin (requests) and stdout (answers), see :mod:`apc.compute_pool`
for the messages. Each unit computes in its own thread, in request order, so a unit whose
computation stalls (sleeps, waits, or sits in native code that releases the GIL) delays only itself;
the main thread keeps reading requests and answering pings, so the pool kills the whole process
only when the process itself stops answering (a native hang holding the GIL, a deadlock). A
segfault or OOM ends the process: the pool sees it and respawns the worker.

Nothing in here waits on the runtime: a request whose deadline passed before its turn is still
applied to the estimator (its state must see every cycle's inputs) but its control step is skipped
and answered ``late``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from apc.compute import Parts, prime_parts, step_parts
from apc.unit_parts import PartsSpec, build_parts

FRAME_HEADER = 4
CRASH_EXIT_CODE = 70
"""Exit status of a worker told to crash (a scenario's ``compute_crash``: stands for a segfault)."""


def read_frame(stream: BinaryIO) -> Any:
    """One message from a blocking stream; ``None`` at end of file."""
    head = stream.read(FRAME_HEADER)
    if len(head) < FRAME_HEADER:
        return None
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def frame(message: Any) -> bytes:
    """A message as one length-prefixed pickle frame."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(FRAME_HEADER, "big") + body


class _UnitThread:
    """One unit's parts and the thread that runs its requests in order."""

    def __init__(self, unit: str, send: Callable[[Any], None]) -> None:
        self.unit = unit
        self._send = send
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._parts: Parts | None = None
        self._prepared: dict[int, Parts] = {}
        self._thread = threading.Thread(target=self._run, name=f"unit-{unit}", daemon=True)
        self._thread.start()

    def put(self, job: tuple[Any, ...]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._do(job)
            except Exception as exc:  # one request's failure is its answer, never the thread's end
                rid = job[1] if len(job) > 1 and isinstance(job[1], int) else -1
                self._send(("error", rid, self.unit, f"{type(exc).__name__}: {exc}",
                            traceback.format_exc(limit=6)))

    def _do(self, job: tuple[Any, ...]) -> None:
        kind = job[0]
        if kind == "build":
            _, rid, spec = job
            self._parts = _build(spec)
            self._send(("built", rid, self.unit))
        elif kind == "prepare":
            _, rid, spec = job
            self._prepared[rid] = _build(spec)
            self._send(("prepared", rid, self.unit))
        elif kind == "install":
            _, rid = job
            self._parts = self._prepared.pop(rid)
        elif kind == "stall":
            time.sleep(float(job[1]))
        elif kind == "prime":
            prime_parts(self._require(), job[1])
        elif kind == "estimate":
            _, rid, t_s, inputs, applied, deadline = job
            parts = self._require()
            cpu0 = time.thread_time()
            estimate = parts.estimator.update(t_s, inputs, applied)
            self._send(("result", rid, self.unit, estimate, time.thread_time() - cpu0, _late(deadline)))
        elif kind == "control":
            _, rid, request, deadline = job
            parts = self._require()
            if _late(deadline):  # too late to be used: keep tracking, skip the solve
                step_parts(parts, dataclasses.replace(request, run=False), deadline)
                self._send(("late", rid, self.unit))
                return
            cpu0 = time.thread_time()
            plan = step_parts(parts, request, deadline)
            self._send(("result", rid, self.unit, plan, time.thread_time() - cpu0, _late(deadline)))
        else:
            raise ValueError(f"unknown request {kind!r}")

    def _require(self) -> Parts:
        if self._parts is None:
            raise RuntimeError(f"unit {self.unit} has no parts (its build failed)")
        return self._parts


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _build(spec: PartsSpec) -> Parts:
    from apc.assembly import load

    loaded = load(spec.recipe_path)
    if loaded.sha256 != spec.recipe_sha256:
        raise ValueError(f"{spec.recipe_path} changed since the runtime loaded it (sha256 {loaded.sha256[:12]} "
                         f"is not {spec.recipe_sha256[:12]})")
    return build_parts(loaded, spec.controller_kind, real_time=spec.real_time)


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests from ``inp`` on ``out`` until ``stop`` or end of input; the exit status."""
    lock = threading.Lock()

    def send(message: Any) -> None:
        data = frame(message)
        with lock:
            out.write(data)
            out.flush()

    units: dict[str, _UnitThread] = {}
    while (msg := read_frame(inp)) is not None:
        kind = msg[0]
        if kind == "ping":
            send(("pong", msg[1]))
        elif kind == "stop":
            break
        elif kind == "crash":
            os._exit(CRASH_EXIT_CODE)  # stands for a segfault: no cleanup, no goodbye
        elif kind == "drop":
            thread = units.pop(msg[1], None)
            if thread is not None:
                thread.stop()
        else:
            unit = msg[2] if kind in ("build", "estimate", "control", "prepare") else msg[1]
            if kind == "build" and unit not in units:
                units[unit] = _UnitThread(unit, send)
            job = (kind, msg[1], *msg[3:]) if kind in ("build", "estimate", "control", "prepare") else (kind, *msg[2:])
            target = units.get(unit)
            if target is None:
                send(("error", msg[1] if isinstance(msg[1], int) else -1, unit, f"unit {unit} is not built here", ""))
                continue
            target.put(job)
    for thread in units.values():
        thread.stop()
    return 0


def main() -> int:
    """Entry point of ``python -m apc.compute_worker``."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by a library goes to the log, never into the frames
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    raise SystemExit(main())

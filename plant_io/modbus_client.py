"""Plant I/O over Modbus TCP (pymodbus 3.16) behind :class:`apc.protocols.PlantIO`.

* Reads are grouped per table into as few requests as possible (contiguous
  blocks, optionally spanning ``endpoint.max_read_gap`` unused addresses; at
  most 125 registers / 2000 bits per request); both words of a 32-bit value
  always come from the same request.
* Modbus exception responses are *returned* by pymodbus, not raised: every tag
  of a failed request gets ``Quality.BAD`` and :attr:`ModbusPlantIO.last_read_errors`
  names the table, register range and exception code.
* Timing: a read request waits ``timeout_s`` and is re-sent ``retries`` times (by this
  module: reads are idempotent), so a dead device stalls a cycle for
  ``timeout_s * (retries + 1)``; the first request that fails that way aborts the read
  with :class:`~plant_io.errors.PlantLinkDown`. The constructor refuses a config whose
  worst case exceeds ``cycle_budget_s``; the whole read is also capped at
  ``cycle_budget_s`` as a backstop.
* Writes are never re-sent, by any layer: pymodbus' own retries are off (a re-sent FC16 of
  an increment would move an electrode twice). A write without an answer is reported as not
  acknowledged; the unit decides what to do next.
* Modbus carries no quality or timestamps: ``source_ts`` is ``None`` and the
  quality is ``GOOD`` whenever the request succeeded.
* pymodbus' own reconnect loop is disabled; the runtime calls
  :meth:`ModbusPlantIO.reconnect_if_due` each cycle (capped exponential back-off
  on the injected monotonic clock), and every connect builds a new client.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException, ModbusIOException

from apc.types import Quality, Sample, Write, WriteResult
from plant_io.backoff import ReconnectBackoff
from plant_io.bindings import ModbusEndpoint, ModbusTag, counter_max
from plant_io.errors import PlantIOError, PlantLinkDown

MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
COMPANION_SUFFIXES = (".quality", ".sample_ts", ".source_ts")
"""Companion registers applied to the tag they follow (see :meth:`ModbusPlantIO.read`)."""

_DT = AsyncModbusTcpClient.DATATYPE
_DATATYPE: Mapping[str, Any] = {
    "int16": _DT.INT16, "uint16": _DT.UINT16, "int32": _DT.INT32, "uint32": _DT.UINT32, "float32": _DT.FLOAT32,
}
_INT_RANGE: Mapping[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


def _swap_bytes(registers: Sequence[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


def _exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return f"code {code}"


def decode_registers(tag: ModbusTag, registers: Sequence[int]) -> float:
    """Raw registers of one tag → engineering value (``raw * scale + offset``)."""
    regs = _swap_bytes(registers) if tag.byte_swap else list(registers)
    raw = AsyncModbusTcpClient.convert_from_registers(regs, _DATATYPE[tag.data_type], word_order=tag.word_order)
    assert isinstance(raw, (int, float))
    return float(raw) * tag.scale + tag.offset


def encode_registers(tag: ModbusTag, value: float) -> list[int] | str:
    """Engineering value → registers of one tag, or the reason it cannot be written.

    Integer types are rounded to the nearest raw count (the register
    resolution is ``scale``) and refused when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"value {value!r} is not a finite number"
    raw = (float(value) - tag.offset) / tag.scale
    if tag.data_type == "float32":
        if abs(raw) > _FLOAT32_MAX:
            return f"value {value!r} out of float32 range"
        regs = AsyncModbusTcpClient.convert_to_registers(raw, _DT.FLOAT32, word_order=tag.word_order)
    else:
        lo, hi = _INT_RANGE[tag.data_type]
        count = round(raw)
        if not lo <= count <= hi:
            return f"value {value!r} (raw {raw:g}) out of {tag.data_type} range [{lo}, {hi}]"
        regs = AsyncModbusTcpClient.convert_to_registers(count, _DATATYPE[tag.data_type], word_order=tag.word_order)
    return _swap_bytes(regs) if tag.byte_swap else regs


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers/bits of ``table`` from ``start``, serving ``tags``."""

    table: str
    start: int
    count: int
    tags: tuple[tuple[str, ModbusTag], ...]

    def describe(self) -> str:
        """Human-readable range, e.g. ``holding 10..13``."""
        return f"{self.table} {self.start}..{self.start + self.count - 1}"


def plan_reads(tags: Mapping[str, ModbusTag], max_gap: int) -> list[ReadBlock]:
    """Group tags into as few requests as possible, per table, in address order."""
    blocks: list[ReadBlock] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_READ_BITS if table in ("coil", "discrete") else MAX_READ_REGISTERS
        members = sorted(((n, t) for n, t in tags.items() if t.table == table), key=lambda nt: (nt[1].address, nt[0]))
        current: list[tuple[str, ModbusTag]] = []
        start = end = 0
        for name, tag in members:
            t_end = tag.address + tag.width
            if current and tag.address - end <= max_gap and max(end, t_end) - start <= limit:
                current.append((name, tag))
                end = max(end, t_end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [(name, tag)], tag.address, t_end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks


class ModbusPlantIO:
    """One unit's plant tags on one Modbus TCP device.

    ``cycle_budget_s`` is the time the I/O may take per cycle; a config whose
    worst-case stall ``timeout_s * (retries + 1)`` exceeds it is refused
    (``ValueError``). ``log`` defaults to ``structlog.get_logger(__name__)``.
    """

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        tags: Mapping[str, ModbusTag],
        clock_utc: Callable[[], float],
        clock_monotonic: Callable[[], float],
        *,
        cycle_budget_s: float,
        log: Any = None,
    ) -> None:
        for name, tag in tags.items():
            if not isinstance(tag, ModbusTag):
                raise TypeError(f"tag {name!r}: expected ModbusTag, got {type(tag).__name__}")
        if not math.isfinite(cycle_budget_s) or cycle_budget_s <= 0.0:
            raise ValueError(f"cycle_budget_s must be > 0, got {cycle_budget_s}")
        if endpoint.worst_case_stall_s > cycle_budget_s:
            raise ValueError(
                f"worst-case stall timeout_s*(retries+1) = {endpoint.timeout_s}*({endpoint.retries}+1) = "
                f"{endpoint.worst_case_stall_s:g} s exceeds cycle_budget_s = {cycle_budget_s:g} s"
            )
        self._endpoint = endpoint
        self._tags: dict[str, ModbusTag] = dict(tags)
        self._clock_utc = clock_utc
        self._clock_monotonic = clock_monotonic
        self._cycle_budget_s = cycle_budget_s
        self._log = (log if log is not None else structlog.get_logger(__name__)).bind(
            plant_io="modbus", host=endpoint.host, port=endpoint.port, device_id=endpoint.device_id
        )
        self._client: AsyncModbusTcpClient | None = None
        self._plan: tuple[tuple[str, ...], list[ReadBlock]] | None = None
        self._backoff = ReconnectBackoff(endpoint.reconnect_min_s, endpoint.reconnect_max_s)
        self._last_read_errors: dict[str, str] = {}
        self._unbound_logged: set[str] = set()

    # ------------------------------------------------------------------ types
    def counter_max(self, tag: str) -> int:
        """Largest value a counter written to ``tag`` takes before wrapping (see :func:`counter_max`)."""
        return counter_max(tag, self._tags.get(tag))

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """True while the TCP connection is open."""
        return self._client is not None and self._client.connected

    @property
    def next_reconnect_s(self) -> float:
        """Monotonic time at which :meth:`reconnect_if_due` will try again."""
        return self._backoff.next_attempt_s

    @property
    def backoff_s(self) -> float:
        """Delay added after the next failed reconnect attempt."""
        return self._backoff.delay_s

    @property
    def last_read_errors(self) -> Mapping[str, str]:
        """Tags that came back BAD in the last read, with the failing request and exception code."""
        return dict(self._last_read_errors)

    def read_plan(self, tags: Sequence[str]) -> list[ReadBlock]:
        """The requests :meth:`read` sends for ``tags`` (cached for the last tag list)."""
        key = tuple(tags)
        if self._plan is None or self._plan[0] != key:
            bound = {t: self._tags[t] for t in dict.fromkeys(key) if t in self._tags}
            for t in key:
                if t not in self._tags and t not in self._unbound_logged:
                    self._unbound_logged.add(t)
                    self._log.warning("plant_tag_not_bound", tag=t)
            self._plan = (key, plan_reads(bound, self._endpoint.max_read_gap))
        return self._plan[1]

    # -------------------------------------------------------------- connect
    async def connect(self) -> None:
        """Open a new TCP connection (bounded by ``timeout_s``); raise :class:`PlantLinkDown` on failure."""
        self._drop_client("reconnect")
        ep = self._endpoint
        client = AsyncModbusTcpClient(
            ep.host, port=ep.port, timeout=ep.timeout_s,
            retries=0,  # never re-send a request: reads are retried here, writes never
            reconnect_delay=0,  # no background reconnect: the runtime drives it
            name=f"apc-{ep.host}:{ep.port}",
        )
        try:
            async with asyncio.timeout(ep.timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise PlantLinkDown(f"modbus {ep.host}:{ep.port}: connect failed ({type(exc).__name__}: {exc})") from exc
        if not ok or not client.connected:
            client.close()
            raise PlantLinkDown(f"modbus {ep.host}:{ep.port}: connect failed")
        self._client = client
        self._backoff.connected()
        self._log.info("plant_link_up", tags=len(self._tags))

    async def reconnect_if_due(self, now_s: float | None = None) -> bool:
        """Reconnect when disconnected and the back-off has elapsed; True when connected.

        An attempt blocks at most ``timeout_s``; after a failed attempt the next
        one is due ``backoff`` later, doubling from ``reconnect_min_s`` up to
        ``reconnect_max_s``. ``now_s`` defaults to the injected monotonic clock.
        """
        if self.connected:
            return True
        if self._client is not None:
            self._link_lost("connection closed")
        now = self._clock_monotonic() if now_s is None else now_s
        return await self._backoff.attempt(now, self.connect, self._log)

    # -------------------------------------------------------------- read
    async def read(self, tags: Sequence[str]) -> Mapping[str, Sample]:
        """Read all bound ``tags`` in as few requests as possible; unbound tags are absent.

        Modbus carries no quality or sample time. Where the device map has them as companion
        registers, bound as ``<tag>.quality`` (0 good, 1 uncertain, 2 bad) and
        ``<tag>.sample_ts`` (UTC POSIX seconds a lab or dip sample was taken, 0: none), they are
        read in the same requests and applied to ``<tag>``'s sample; so is ``<tag>.source_ts`` (UTC
        POSIX seconds of the device's last update of ``<tag>``, 0: none), the sample's source timestamp
        (a value that keeps changing while this stops is stale).
        """
        wanted = list(tags)
        companions = [f"{t}{suffix}" for t in wanted for suffix in COMPANION_SUFFIXES
                      if f"{t}{suffix}" in self._tags and f"{t}{suffix}" not in wanted]
        out = await self._read_bound(wanted + companions)
        for tag in wanted:
            sample = out.get(tag)
            if sample is None:
                continue
            q = out.get(f"{tag}.quality")
            ts = out.get(f"{tag}.sample_ts")
            src = out.get(f"{tag}.source_ts")
            quality = sample.quality
            if q is not None:
                code = q.value if q.usable else 2.0
                quality = Quality.BAD if code >= 2 or quality is Quality.BAD else (
                    Quality.UNCERTAIN if code >= 1 else quality)
            sample_ts = ts.value if ts is not None and ts.usable and ts.value > 0 else sample.sample_ts
            source_ts = src.value if src is not None and src.usable and src.value > 0 else sample.source_ts
            if quality is not sample.quality or sample_ts != sample.sample_ts or source_ts != sample.source_ts:
                out[tag] = Sample(sample.value, quality, source_ts, sample.receive_ts, sample_ts)
        for extra in companions:
            out.pop(extra, None)
        return out

    async def _read_bound(self, tags: Sequence[str]) -> dict[str, Sample]:
        client = self._require_client()
        blocks = self.read_plan(tags)
        if not blocks:
            return {}
        device_id = self._endpoint.device_id
        responses: list[Any] = []
        try:
            async with asyncio.timeout(self._cycle_budget_s):
                for block in blocks:
                    responses.append(await self._read_block(client, block, device_id))
        except (TimeoutError, OSError, ModbusException) as exc:
            raise self._link_down(exc, "read") from exc
        receive_ts = self._clock_utc()
        out: dict[str, Sample] = {}
        errors: dict[str, str] = {}
        for block, rr in zip(blocks, responses):
            failure = self._block_failure(block, rr)
            if failure is not None:
                names = [n for n, _ in block.tags]
                self._log.warning("plant_read_error", request=block.describe(), error=failure, tags=names)
                for name, tag in block.tags:
                    errors[name] = f"{failure} reading {block.describe()} (tag at {tag.table} {tag.address})"
                    out[name] = Sample(math.nan, Quality.BAD, None, receive_ts)
                continue
            for name, tag in block.tags:
                offset = tag.address - block.start
                if tag.data_type == "bool":
                    value = 1.0 if rr.bits[offset] else 0.0
                else:
                    value = decode_registers(tag, rr.registers[offset : offset + tag.width])
                quality = Quality.GOOD if math.isfinite(value) else Quality.BAD
                out[name] = Sample(value, quality, None, receive_ts)
        self._last_read_errors = errors
        return out

    async def _read_block(self, client: AsyncModbusTcpClient, block: ReadBlock, device_id: int) -> Any:
        """One read request, re-sent up to ``retries`` times when it goes unanswered (reads only)."""
        for attempt in range(self._endpoint.retries + 1):
            try:
                if block.table == "holding":
                    return await client.read_holding_registers(block.start, count=block.count, device_id=device_id)
                if block.table == "input":
                    return await client.read_input_registers(block.start, count=block.count, device_id=device_id)
                if block.table == "coil":
                    return await client.read_coils(block.start, count=block.count, device_id=device_id)
                return await client.read_discrete_inputs(block.start, count=block.count, device_id=device_id)
            except ModbusIOException:
                if attempt == self._endpoint.retries or not client.connected:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _block_failure(block: ReadBlock, rr: Any) -> str | None:
        if rr is None:
            return "no response"
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            return f"exception {code} ({_exception_name(code)})"
        have = len(rr.bits) if block.table in ("coil", "discrete") else len(rr.registers)
        if have < block.count:
            return f"short response ({have} of {block.count})"
        return None

    # -------------------------------------------------------------- write
    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """One request per write (FC16 for registers, both words of 32-bit values together; FC05 for coils).

        Unbound, non-writable, input/discrete tags and values that do not fit
        are refused locally (``ok=False``) without traffic. The whole batch shares one cycle budget;
        when the link drops (or the budget is used up) part-way, the writes already acknowledged keep
        their result and the rest are reported not written (with nothing acknowledged yet,
        :class:`PlantLinkDown` is raised, as for a read).
        """
        results: list[WriteResult] = []
        device_id = self._endpoint.device_id
        deadline = asyncio.get_running_loop().time() + self._cycle_budget_s
        for i, w in enumerate(writes):
            tag = self._tags.get(w.tag)
            refusal = self._refusal(w, tag)
            if refusal is not None or tag is None:
                results.append(WriteResult(w.tag, False, refusal or "not bound"))
                self._log.warning("plant_write_refused", tag=w.tag, value=w.value, detail=results[-1].detail)
                continue
            if tag.table == "coil":
                if w.value not in (0, 1):
                    results.append(WriteResult(w.tag, False, f"value {w.value!r} is not 0 or 1 for a coil"))
                    continue
                payload: list[int] | str = []
            else:
                payload = encode_registers(tag, w.value)
                if isinstance(payload, str):
                    results.append(WriteResult(w.tag, False, payload))
                    self._log.warning("plant_write_refused", tag=w.tag, value=w.value, detail=payload)
                    continue
            try:
                client = self._require_client()
                async with asyncio.timeout_at(deadline):
                    if tag.table == "coil":
                        rr = await client.write_coil(tag.address, w.value == 1, device_id=device_id)
                    else:
                        assert isinstance(payload, list)
                        rr = await client.write_registers(tag.address, payload, device_id=device_id)
            except (TimeoutError, OSError, ModbusException, PlantIOError) as exc:
                down = exc if isinstance(exc, PlantIOError) else self._link_down(exc, "write")
                if not any(r.ok for r in results):
                    raise down from exc  # nothing reached the device: the link is down, as for a read
                results += [WriteResult(x.tag, False, f"not written: {down}") for x in writes[i:]]
                return results
            if rr is None or rr.isError():
                code = getattr(rr, "exception_code", 0)
                detail = f"exception {code} ({_exception_name(code)}) at {tag.table} {tag.address}"
                results.append(WriteResult(w.tag, False, detail))
                self._log.warning("plant_write_refused", tag=w.tag, value=w.value, detail=detail)
            else:
                results.append(WriteResult(w.tag, True))
        return results

    @staticmethod
    def _refusal(w: Write, tag: ModbusTag | None) -> str | None:
        if tag is None:
            return "not bound"
        if tag.table not in ("holding", "coil"):
            return f"{tag.table} table is read-only"
        if not tag.writable:
            return "not writable (binding)"
        return None

    # -------------------------------------------------------------- close
    async def close(self) -> None:
        """Close the TCP connection."""
        self._drop_client("close")

    # -------------------------------------------------------------- internals
    def _require_client(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            if self._client is not None:
                self._link_lost("connection closed")
            raise PlantLinkDown(f"not connected to modbus {self._endpoint.host}:{self._endpoint.port}")
        return self._client

    def _link_down(self, exc: BaseException, op: str) -> PlantLinkDown:
        if isinstance(exc, TimeoutError):
            reason = f"{op}: no answer within cycle budget {self._cycle_budget_s} s"
        else:
            reason = f"{op}: {type(exc).__name__}: {exc}"
        self._link_lost(reason)
        return PlantLinkDown(f"modbus {self._endpoint.host}:{self._endpoint.port}: {reason}")

    def _link_lost(self, reason: str) -> None:
        """Close the connection; the first reconnect attempt is due at once."""
        if self._client is not None:
            self._drop_client(reason)
            self._backoff.lost(self._clock_monotonic())
            self._log.warning("plant_link_down", reason=reason)

    def _drop_client(self, why: str) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            self._log.info("plant_link_closed", why=why)

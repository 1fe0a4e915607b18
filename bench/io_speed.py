"""I/O time of one control cycle over OPC UA and Modbus TCP, against the plain library calls.

One cycle = one batched read of all N tags + one write of 3 MVs. For N = 10,
100 and 500 tags per unit it times the plant I/O clients
(:class:`plant_io.opcua_client.OpcUaPlantIO`, :class:`plant_io.modbus_client.ModbusPlantIO`)
beside the library's own plain batched calls on the same nodes/registers in
the same run (asyncua ``read_attributes`` + ``write_values``; pymodbus
``read_holding_registers`` of the same blocks + ``write_registers``), cycles
interleaved so both see the same machine load. Servers run on 127.0.0.1 in
the same process and event loop (so server CPU is inside every figure).

    python bench/io_speed.py [--cycles 200] [--sizes 10 100 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.helpers.loopback_servers

from asyncua import Client, ua  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from apc.audit import null_logger  # noqa: E402
from apc.types import Write  # noqa: E402
from plant_io.bindings import ModbusEndpoint, ModbusTag, OpcUaEndpoint, OpcUaTag  # noqa: E402
from plant_io.modbus_client import ModbusPlantIO, plan_reads  # noqa: E402
from plant_io.opcua_client import OpcUaPlantIO  # noqa: E402
from tests.helpers.loopback_servers import UaVar, modbus_server, opcua_server  # noqa: E402

N_MV = 3
Cycle = Callable[[], Awaitable[None]]


def _clock_utc() -> float:
    return time.time()


async def _time(cycles: int, warmup: int, runs: dict[str, Cycle]) -> dict[str, list[float]]:
    """Interleave the cycle functions; return per-run wall times in ms (after warm-up)."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(warmup + cycles):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            await fn()
            if i >= warmup:
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


async def bench_opcua(sizes: list[int], cycles: int, warmup: int) -> list[tuple[str, int, str, list[float]]]:
    n_max = max(sizes)
    vars_ = [UaVar(f"pv{i:03d}", ua.VariantType.Double, float(i)) for i in range(n_max)]
    vars_ += [UaVar(f"mv{i}", ua.VariantType.Double, 0.0, writable=True) for i in range(N_MV)]
    rows = []
    async with opcua_server(vars_) as srv:
        for n in sizes:
            names = [f"pv{i:03d}" for i in range(n)]
            mvs = [f"mv{i}" for i in range(N_MV)]
            tags = {t: OpcUaTag(srv.node_id(t), "Double", writable=t in mvs) for t in names + mvs}
            ep = OpcUaEndpoint(url=srv.url, security="none", timeout_s=2.0)
            plant = OpcUaPlantIO(ep, tags, _clock_utc, time.monotonic, log=null_logger())
            await plant.connect()
            plain = Client(srv.url, timeout=2.0)
            await plain.connect()
            nodes = [plain.get_node(srv.nodes[t]) for t in names]
            mv_nodes = [plain.get_node(srv.nodes[t]) for t in mvs]
            k = 0

            async def own() -> None:
                nonlocal k
                k += 1
                await plant.read(names)
                res = await plant.write([Write(t, float(k)) for t in mvs])
                assert all(r.ok for r in res)

            async def lib() -> None:
                await plain.read_attributes(nodes)
                await plain.write_values(mv_nodes, [float(k)] * N_MV)

            times = await _time(cycles, warmup, {"plant_io OpcUaPlantIO": own,
                                                 "asyncua read_attributes+write_values": lib})
            await plant.close()
            await plain.disconnect()
            rows += [("OPC UA", n, name, ts) for name, ts in times.items()]
    return rows


async def bench_modbus(sizes: list[int], cycles: int, warmup: int) -> list[tuple[str, int, str, list[float]]]:
    n_max = max(sizes)
    mv_base = 2 * n_max
    rows = []
    async with modbus_server(holding=[0x4148, 0x0000] * n_max + [0] * (2 * N_MV)) as srv:
        for n in sizes:
            names = [f"pv{i:03d}" for i in range(n)]
            mvs = [f"mv{i}" for i in range(N_MV)]
            tags = {t: ModbusTag("holding", 2 * i, "float32") for i, t in enumerate(names)}
            tags.update({t: ModbusTag("holding", mv_base + 2 * i, "float32", writable=True) for i, t in enumerate(mvs)})
            ep = ModbusEndpoint(host=srv.host, port=srv.port, timeout_s=0.5, retries=1)
            plant = ModbusPlantIO(ep, tags, _clock_utc, time.monotonic, cycle_budget_s=1.0, log=null_logger())
            await plant.connect()
            blocks = [(b.start, b.count) for b in plan_reads({t: tags[t] for t in names}, 0)]
            plain = AsyncModbusTcpClient(srv.host, port=srv.port, timeout=0.5, retries=1, reconnect_delay=0)
            await plain.connect()
            k = 0

            async def own() -> None:
                nonlocal k
                k += 1
                await plant.read(names)
                res = await plant.write([Write(t, float(k)) for t in mvs])
                assert all(r.ok for r in res)

            async def lib() -> None:
                for start, count in blocks:
                    rr = await plain.read_holding_registers(start, count=count, device_id=1)
                    assert not rr.isError()
                for i in range(N_MV):
                    regs = plain.convert_to_registers(float(k), plain.DATATYPE.FLOAT32)
                    await plain.write_registers(mv_base + 2 * i, regs, device_id=1)

            times = await _time(cycles, warmup, {"plant_io ModbusPlantIO": own,
                                                 "pymodbus read_holding_registers+write_registers": lib})
            await plant.close()
            plain.close()
            rows += [(f"Modbus ({len(blocks)} read req)", n, name, ts) for name, ts in times.items()]
    return rows


def main() -> None:
    """Run both protocols and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    args = ap.parse_args()
    rows = asyncio.run(bench_opcua(args.sizes, args.cycles, args.warmup))
    rows += asyncio.run(bench_modbus(args.sizes, args.cycles, args.warmup))
    print(f"cycle I/O time = one batched read of N tags + write of {N_MV} MVs; {args.cycles} cycles "
          f"(+{args.warmup} warm-up), client and server in one process on 127.0.0.1, interleaved")
    print(f"{'protocol':24s} {'N':>4s} {'client':48s} {'median ms':>10s} {'p99 ms':>8s} {'vs plain':>9s}")
    base: dict[tuple[str, int], float] = {}
    for proto, n, name, ts in rows:
        med = statistics.median(ts)
        if not name.startswith("plant_io"):
            base[(proto, n)] = med
    for proto, n, name, ts in rows:
        med = statistics.median(ts)
        ratio = f"{med / base[(proto, n)]:.2f}x" if name.startswith("plant_io") else ""
        print(f"{proto:24s} {n:4d} {name:48s} {med:10.3f} {_p99(ts):8.3f} {ratio:>9s}")
    print("note: the plain pymodbus calls return raw registers; ModbusPlantIO also decodes (convert_from_registers),")
    print("scales and builds a Sample per tag. Both OPC UA clients get StatusCode + SourceTimestamp from the server.")


if __name__ == "__main__":
    main()

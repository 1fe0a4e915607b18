"""``apc plant-sim SITE``: serve a site's simulated units over real OPC UA / Modbus TCP servers.

The site file gives each unit's recipe (cell or furnace) and ``plant: {kind: sim,
scenario, seed}``. Which protocol and port serves each unit comes from a small
virtual-plant file (``--plant``; default ``plant.yaml`` beside the site file; with
neither, every unit is served over OPC UA on 127.0.0.1:4840)::

    # recipes/plant.yaml
    schema_version: 1
    host: 127.0.0.1               # loopback only, unless allow_remote_insecure: true
    scan_s: 5                     # plant seconds between scans (default: the smallest plant_dt_s)
    units:                        # every unit of the site, and only those
      cell-01: {protocol: opcua, port: 4841}
      cell-02: {protocol: opcua, port: 4841}              # same server, own namespace
      cell-03: {protocol: modbus, port: 5021, device_id: 1}

``port`` defaults to 4840 (opcua) or 5020 (modbus), ``device_id`` to 1.
``--bindings-out DIR`` writes ``DIR/<unit>.yaml`` (endpoint + bindings, see
:mod:`plant_io.virtual_plant`). Runs until Ctrl-C / SIGTERM or ``--hours`` of plant time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from apc.clock import RealClock
from apc.kinds import kind_of
from apc.recipe.errors import RecipeError
from apc.recipe.loader import LoadedSite
from apc.scheduler import stop_on_signals
from plant_io.virtual_plant import (
    OPCUA_PATH,
    PlantProtocol,
    VirtualPlant,
    VirtualPlantError,
    VirtualUnit,
    generate_bindings,
)
from sim.scenario_loader import ScenarioError

PLANT_SCHEMA_VERSION = 1
DEFAULT_PORTS: Mapping[str, int] = {"opcua": 4840, "modbus": 5020}
_TOP_KEYS = frozenset({"schema_version", "host", "scan_s", "allow_remote_insecure", "units"})
_UNIT_KEYS = frozenset({"protocol", "port", "device_id"})


class PlantFileError(ValueError):
    """A virtual-plant file is malformed; the message names the file and key."""


@dataclass(frozen=True)
class PlantUnit:
    """Where one unit is served."""

    protocol: str
    port: int
    device_id: int = 1


@dataclass(frozen=True)
class PlantFile:
    """A parsed virtual-plant file."""

    units: Mapping[str, PlantUnit]
    host: str = "127.0.0.1"
    scan_s: float | None = None
    allow_remote_insecure: bool = False


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlantFileError(f"{where}: must be an integer, got {value!r}")
    return value


def plant_file_from_mapping(data: Any, where: str) -> PlantFile:
    """Parse a virtual-plant file's YAML content; errors name ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise PlantFileError(f"{where}: top level must be a mapping")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PlantFileError(f"{where}: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    if data.get("schema_version", PLANT_SCHEMA_VERSION) != PLANT_SCHEMA_VERSION:
        raise PlantFileError(f"{where}: schema_version must be {PLANT_SCHEMA_VERSION}")
    host = data.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise PlantFileError(f"{where}: host must be a non-empty string")
    scan_s = data.get("scan_s")
    if scan_s is not None and (isinstance(scan_s, bool) or not isinstance(scan_s, (int, float))
                               or not math.isfinite(scan_s) or scan_s <= 0):
        raise PlantFileError(f"{where}: scan_s must be a number > 0, got {scan_s!r}")
    allow = data.get("allow_remote_insecure", False)
    if not isinstance(allow, bool):
        raise PlantFileError(f"{where}: allow_remote_insecure must be true or false")
    units_raw = data.get("units")
    if not isinstance(units_raw, Mapping) or not units_raw:
        raise PlantFileError(f"{where}: units must be a non-empty mapping of unit name to {{protocol, port}}")
    units: dict[str, PlantUnit] = {}
    for name, entry in units_raw.items():
        at = f"{where}: units.{name}"
        if not isinstance(entry, Mapping):
            raise PlantFileError(f"{at}: must be a mapping")
        unknown = sorted(set(entry) - _UNIT_KEYS)
        if unknown:
            raise PlantFileError(f"{at}: unknown key(s) {unknown}; known: {sorted(_UNIT_KEYS)}")
        protocol = entry.get("protocol")
        if not isinstance(protocol, str) or protocol not in DEFAULT_PORTS:
            raise PlantFileError(f"{at}.protocol: must be one of {sorted(DEFAULT_PORTS)}, got {protocol!r}")
        port = _int(entry.get("port", DEFAULT_PORTS[protocol]), f"{at}.port")
        device_id = _int(entry.get("device_id", 1), f"{at}.device_id")
        units[str(name)] = PlantUnit(protocol, port, device_id)
    return PlantFile(units, host, None if scan_s is None else float(scan_s), allow)


def load_plant_file(path: str | Path) -> PlantFile:
    """Read and parse a virtual-plant file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlantFileError(f"{p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PlantFileError(f"{p}: {exc}") from None
    return plant_file_from_mapping(data, str(p))


def is_plant_file(path: str | Path) -> bool:
    """True for a YAML file shaped like a virtual-plant file (``units`` mapping, no ``site``/``name``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("units"), dict) and not {"site", "name"} & set(data)


def default_plant_file(site: LoadedSite) -> PlantFile:
    """Every unit of the site over OPC UA on 127.0.0.1:4840 (one server, a namespace each)."""
    return PlantFile({u.name: PlantUnit("opcua", DEFAULT_PORTS["opcua"]) for u in site.site.units})


def virtual_units(site: LoadedSite, plant: PlantFile) -> list[VirtualUnit]:
    """The site's units with their scenario objects and the plant file's protocol and port."""
    names = [u.name for u in site.site.units]
    missing = [n for n in names if n not in plant.units]
    extra = sorted(set(plant.units) - set(names))
    if missing or extra:
        raise PlantFileError(f"plant file units must be the site's units {names}: "
                             f"missing {missing}, not in the site {extra}")
    out: list[VirtualUnit] = []
    for su in site.site.units:
        at = plant.units[su.name]
        protocol: PlantProtocol = "modbus" if at.protocol == "modbus" else "opcua"
        kind = kind_of(site.recipes[su.name].recipe)
        out.append(VirtualUnit(su.name, kind.load_scenario(su.plant.scenario), su.plant.seed, kind.name,
                               protocol, at.port, at.device_id))
    return out


def default_scan_s(units: list[VirtualUnit]) -> float:
    """The smallest integration step of the units' scenarios (the plants change no faster)."""
    steps = [float(u.scenario.plant_dt_s) for u in units if not isinstance(u.scenario, str)]
    return min(steps) if steps else 5.0


def _describe(vp: VirtualPlant, unit: VirtualUnit) -> str:
    ep = vp.endpoint(unit.name)
    scen = unit.scenario if isinstance(unit.scenario, str) else unit.scenario.name
    if unit.protocol == "opcua":
        where = f"{ep['url']}  namespace {unit.namespace_uri}"
    else:
        where = f"modbus://{ep['host']}:{ep['port']}  device_id {ep['device_id']}"
    return f"  {unit.name:12s} {unit.protocol:6s} {where}  ({unit.kind}, scenario {scen}, seed {unit.seed})"


async def serve(vp: VirtualPlant, clock: RealClock, hours: float | None, out: TextIO) -> None:
    """Serve until SIGINT/SIGTERM or ``hours`` of plant time."""
    stop = asyncio.Event()
    unhook = stop_on_signals(stop)
    try:
        await vp.start()
        for unit in vp.units:
            print(_describe(vp, unit), file=out)
        until = "" if hours is None else f" for {hours:g} h of plant time"
        print(f"serving{until}; Ctrl-C to stop", file=out, flush=True)
        await vp.serve_until(stop, None if hours is None else hours * 3600.0)
    finally:
        await vp.close()
        unhook()
    print(f"stopped at {clock.monotonic() / 3600.0:.3f} h plant time", file=out, flush=True)


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Body of ``apc plant-sim``; returns the exit code."""
    from apc.assembly import load_site_file

    out = out if out is not None else sys.stdout
    try:
        site = load_site_file(args.site)
        plant_path = Path(args.plant) if args.plant else Path(args.site).with_name("plant.yaml")
        if args.plant or plant_path.is_file():
            plant = load_plant_file(plant_path)
            source = str(plant_path)
        else:
            plant = default_plant_file(site)
            source = "default (every unit over OPC UA on 127.0.0.1:4840)"
        units = virtual_units(site, plant)
        speed = args.speed if args.speed is not None else site.site.speed
        if not speed > 0:
            raise PlantFileError(f"--speed must be > 0, got {speed}")
        scan_s = plant.scan_s or default_scan_s(units)
        clock = RealClock(speed)
        vp = VirtualPlant(units, clock, host=plant.host, scan_s=scan_s,
                          allow_remote_insecure=plant.allow_remote_insecure)
    except (RecipeError, ScenarioError, VirtualPlantError, PlantFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"virtual plant for site {site.site.site}: {len(units)} unit(s) from {source}, "
          f"{speed:g}x real time, a scan every {scan_s:g} s of plant time", file=out)
    if args.bindings_out:
        generate_bindings(vp, args.bindings_out)
        print(f"bindings: {Path(args.bindings_out) / '<unit>.yaml'} "
              f"(endpoint + tag bindings; OPC UA path {OPCUA_PATH})", file=out)
    try:
        asyncio.run(serve(vp, clock, args.hours, out))
    except OSError as exc:  # port in use, address not available
        print(f"error: cannot serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``plant-sim`` to the ``apc`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plant-sim", help="serve a site's simulated units over OPC UA / Modbus TCP (virtual plant)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("site", help="site file (units, recipes, plant: {kind: sim, scenario, seed})")
    p.add_argument("--plant", default=None,
                   help="virtual-plant file: protocol/port per unit (default: plant.yaml beside the site file; "
                        "without one every unit is served over OPC UA on 127.0.0.1:4840)")
    p.add_argument("--speed", type=float, default=None, help="real-time multiple (default: the site's speed)")
    p.add_argument("--hours", type=float, default=None, help="stop after this many hours of plant time")
    p.add_argument("--bindings-out", default=None, metavar="DIR",
                   help="write DIR/<unit>.yaml with each unit's endpoint and tag bindings")
    p.set_defaults(func=run_command)
    return p

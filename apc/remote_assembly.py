"""Units whose plant is reached over OPC UA or Modbus TCP (a DCS, or ``apc plant-sim``).

A binding file names the endpoint and binds every recipe tag::

    unit: cell-01
    protocol: opcua
    endpoint: {url: "opc.tcp://127.0.0.1:4841/apc/virtual-plant/", security: none}
    bindings:
      cell.voltage_V: {node_id: "nsu=urn:apc:virtual-plant:cell-01;s=cell.voltage_V", data_type: Double}
      ...

(``plant_io.bindings.parse_endpoint`` / ``parse_bindings`` give the fields.)
The unit gets the same estimator and controller as against the in-process
simulator; there is no truth, so no KPIs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from apc.assembly import AssemblyError, RecordFactory, record_header
from apc.hmi.users import UsersFileError, check_private_file
from apc.kinds import kind_of
from apc.protocols import Clock, PlantIO
from apc.recipe.loader import LoadedRecipe
from apc.recipe.schema import Recipe
from apc.recorder import FlightRecorder, NullRecorder, Recorder
from apc.unit import Unit
from apc.unit_parts import ComputeFactory, inline_compute
from apc.unit_state import UnitStateFile
from plant_io.bindings import ModbusEndpoint, ModbusTag, OpcUaEndpoint, OpcUaTag, parse_bindings, parse_endpoint
from plant_io.modbus_client import ModbusPlantIO
from plant_io.opcua_client import OpcUaPlantIO


def load_binding_file(path: Path, recipe: Recipe) -> tuple[OpcUaEndpoint | ModbusEndpoint, dict[str, Any]]:
    """Endpoint and tag bindings from ``path``; every recipe tag must be bound, with the right protocol."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        endpoint = parse_endpoint(data["endpoint"])
        bindings = parse_bindings(data["bindings"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise AssemblyError(f"{path}: {exc}") from None
    if getattr(endpoint, "password", None):  # a plant password is a secret: private file only
        try:
            check_private_file(path, "binding file with a password")
        except UsersFileError as exc:
            raise AssemblyError(str(exc)) from None
    want = OpcUaTag if isinstance(endpoint, OpcUaEndpoint) else ModbusTag
    wrong = sorted(t for t, b in bindings.items() if not isinstance(b, want))
    if wrong:
        raise AssemblyError(f"{path}: bindings of another protocol than the endpoint's: {wrong}")
    missing = sorted(recipe.io.tags() - set(bindings))
    if missing:
        raise AssemblyError(f"{path}: recipe {recipe.name} uses tags that are not bound: {missing}")
    return endpoint, bindings


def build_plant_io(path: Path, recipe: Recipe, clock: Clock, log: Any = None) -> PlantIO:
    """The OPC UA or Modbus client of one unit. Reconnect back-off runs on the real monotonic clock
    (network time), whatever the plant-time acceleration."""
    endpoint, bindings = load_binding_file(path, recipe)
    io: OpcUaPlantIO | ModbusPlantIO
    try:
        if isinstance(endpoint, OpcUaEndpoint):
            io = OpcUaPlantIO(endpoint, bindings, clock.utc, time.monotonic, log=log)
        else:
            io = ModbusPlantIO(endpoint, bindings, clock.utc, time.monotonic, cycle_budget_s=0.5 * recipe.period_s,
                               log=log)
        io.counter_max(recipe.io.heartbeat.apc_tag)  # the heartbeat's type is checked at bind time
    except ValueError as exc:
        raise AssemblyError(f"{path}: {exc}") from None
    return io


def build_remote_unit(name: str, loaded: LoadedRecipe, binding_file: Path, clock: Clock, *, audit: Any,
                      record_path: Path | None = None, state_dir: Path | None = None,
                      real_time: bool = True, state: UnitStateFile | None = None,
                      compute: ComputeFactory | None = None,
                      compute_faults: Callable[[float], Sequence[tuple[str, float]]] | None = None,
                      record_factory: RecordFactory | None = None) -> Unit:
    """A unit controlling a plant over OPC UA / Modbus (cells, or furnaces with their batch); ``state``:
    its state file across restarts (see :mod:`apc.unit_state`); ``compute``: where its estimator and
    controller run (default this process)."""
    recipe = loaded.recipe
    io = build_plant_io(binding_file, recipe, clock, log=audit.bind(unit=name))
    kind = recipe.controller.kind
    batch = kind_of(recipe).new_batch(loaded, kind, state_dir, audit.bind(unit=name), clock.monotonic())
    unit_compute = (compute or inline_compute)(name, loaded, kind, real_time, batch.preview if batch else None)
    recorder: Recorder = NullRecorder()
    if record_path is not None:
        recorder = (record_factory or FlightRecorder)(record_path, record_header(name, loaded, clock, kind,
                                                                                 plant=str(binding_file)))
    return Unit(name, loaded, io, None, None, compute=unit_compute, clock=clock if real_time else None, audit=audit,
                recorder=recorder, batch=batch, state=state, compute_faults=compute_faults)

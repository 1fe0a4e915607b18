"""Exceptions raised by the plant I/O clients (OPC UA, Modbus TCP)."""

from __future__ import annotations


class PlantIOError(Exception):
    """A plant I/O operation failed (configuration, protocol or service error)."""


class PlantLinkDown(PlantIOError):
    """The link to the plant is down: no answer within the timeout or connection lost.

    The client is marked disconnected; call its ``reconnect_if_due`` each cycle.
    """


class PlantBindingError(PlantIOError):
    """The server does not match the tag bindings (missing node, wrong type, not writable).

    ``problems`` lists one human-readable line per mismatched tag.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("tag bindings do not match the server:\n  " + "\n  ".join(problems))

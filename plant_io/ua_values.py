"""asyncua's value constructors typed for the plain values asyncua itself passes them.

asyncua annotates the fields of ``NodeId``, ``StatusCode``, ``DataValue`` and ``ErrorMessage`` with
marker subclasses (``ua.Int16(int)``, ``ua.UInt32(int)``, ``ua.String(str)``, ``ua.DateTime(datetime)``)
that neither its own code nor its documentation construct: ``ua.ObjectIds`` and ``ua.StatusCodes``
are plain ints, ``NodeId(2253, 0)`` is the documented form. These functions hand the values on
unchanged (no conversion, no copy); the one place the annotation gap is bridged is here.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from asyncua import ua


def node_id(identifier: int | str | uuid.UUID | bytes, namespace: int = 0,
            node_type: ua.NodeIdType | None = None) -> ua.NodeId:
    """``ua.NodeId(identifier, namespace, node_type)`` (``None``: asyncua infers the encoding)."""
    return ua.NodeId(identifier, namespace, node_type)  # type: ignore[arg-type]  # marker types, see module


def status_code(value: int) -> ua.StatusCode:
    """``ua.StatusCode(value)`` for a ``ua.StatusCodes`` constant or a received code."""
    return ua.StatusCode(value)  # type: ignore[arg-type]  # marker type UInt32, see module


def data_value(value: ua.Variant, status: ua.StatusCode, source_ts: datetime | None,
               server_ts: datetime | None) -> ua.DataValue:
    """``ua.DataValue(value, status, source_ts, server_ts)``."""
    return ua.DataValue(value, status, source_ts, server_ts)  # type: ignore[arg-type]  # marker type DateTime


def error_message(status: ua.StatusCode, reason: str) -> ua.ErrorMessage:
    """``ua.ErrorMessage(status, reason)`` (the ERR message that closes a connection)."""
    return ua.ErrorMessage(status, reason)  # type: ignore[arg-type]  # marker type String, see module

"""Argparse wiring of the HMI commands: ``hmi-cert``, ``hmi-user``, ``mode``, ``reload``, ``status``.

``apc/cli.py`` calls :func:`add_subcommands` with its sub-parser collection.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from typing import Any

from apc.types import Mode


def _cmd_hmi_cert(args: argparse.Namespace) -> int:
    from apc.hmi.certs import make_certificate

    hosts = list(args.host) if args.host else [socket.gethostname(), "localhost", "127.0.0.1"]
    try:
        cert, key = make_certificate(args.out, args.name, args.uri, hosts, days=args.days, overwrite=args.force)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"certificate {cert}\nprivate key {key} (mode 0600)\napplication URI {args.uri}; hosts {', '.join(hosts)}")
    return 0


def _read_password(confirm: bool = True) -> str:
    """From the terminal (asked twice) or, when stdin is not a terminal, its first line."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ValueError("passwords differ")
    return first


def _cmd_hmi_user(args: argparse.Namespace) -> int:
    from apc.hmi.users import UsersFileError, add_user

    try:
        password = _read_password()
        add_user(args.users, args.name, args.role, password)
    except (UsersFileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.users}: user {args.name} ({args.role}) saved (file mode 0600)")
    return 0


def _cmd_mode(args: argparse.Namespace) -> int:
    from apc.hmi.client_cmds import cmd_mode

    return cmd_mode(args)


def _cmd_reload(args: argparse.Namespace) -> int:
    from apc.hmi.client_cmds import cmd_reload

    return cmd_reload(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from apc.hmi.client_cmds import cmd_status

    return cmd_status(args)


def _cmd_alarms(args: argparse.Namespace) -> int:
    from apc.hmi.alarm_client import cmd_alarms

    return cmd_alarms(args)


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="opc.tcp://HOST:PORT/... of the APC HMI server")
    p.add_argument("--credentials", required=True,
                   help="YAML file (mode 0600): username, password, client_cert, client_key, server_cert")
    p.add_argument("--insecure-loopback", action="store_true",
                   help="connect without security (loopback endpoints only, for a server started that way)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


def add_subcommands(subparsers: Any) -> None:
    """Add ``hmi-cert``, ``hmi-user``, ``mode``, ``reload``, ``status`` and ``alarms`` to the ``apc`` sub-parsers."""
    c = subparsers.add_parser(
        "hmi-cert", help="create a self-signed OPC UA certificate and key for the HMI server or a client",
        description="Writes NAME_cert.pem and NAME_key.pem (mode 0600) in --out; the application URI goes "
                    "into the subjectAltName with every --host.")
    c.add_argument("--out", required=True, help="directory for the certificate and key")
    c.add_argument("--uri", required=True, help="application URI, e.g. urn:site:apc:hmi")
    c.add_argument("--host", action="append", help="DNS name or IP address clients use (repeatable; "
                                                   "default: this host's name, localhost, 127.0.0.1)")
    c.add_argument("--name", default="hmi_server", help="file stem (default hmi_server)")
    c.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    c.add_argument("--force", action="store_true", help="overwrite existing files")
    c.set_defaults(func=_cmd_hmi_cert)

    u = subparsers.add_parser(
        "hmi-user", help="add or replace an HMI user (password from the terminal or stdin)",
        description="Stores a scrypt hash of the password; the users file is written with mode 0600.")
    u.add_argument("--users", required=True, help="users file (YAML), created if missing")
    u.add_argument("--name", required=True)
    u.add_argument("--role", required=True, choices=("viewer", "operator", "engineer"))
    u.set_defaults(func=_cmd_hmi_user)

    m = subparsers.add_parser(
        "mode", help="request a unit's mode (or a group's, --group) through the HMI server",
        description="With --group, every member of the group is asked at once; each decides on its own "
                    "readiness, and the command prints each member's status after its next cycle.")
    m.add_argument("unit", nargs="?", help="the unit (not with --group)")
    m.add_argument("mode", choices=[x.value for x in Mode])
    m.add_argument("--group", help="request the mode for every member of this group of the site")
    m.add_argument("--wait", type=float, help="--group: seconds to wait for the members' next cycle "
                                              "(default: --timeout)")
    _client_options(m)
    m.set_defaults(func=_cmd_mode)

    r = subparsers.add_parser(
        "reload", help="reload a unit's recipe file through the HMI server (engineer; unit OFF or STANDBY)",
        description="The runtime re-reads the unit's recipe file and applies it at the unit's next cycle. "
                    "Refused while the unit is ON, and for another unit kind, MV/input names or tags.")
    r.add_argument("unit")
    _client_options(r)
    r.set_defaults(func=_cmd_reload)

    s = subparsers.add_parser("status", help="show every unit's modes, heartbeat and MVs from the HMI server")
    _client_options(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_status)

    a = subparsers.add_parser("alarms", help="list the HMI server's alarms, or acknowledge them (operator)",
                              description="Lists every retained alarm (active, or not yet acknowledged) through "
                                          "OPC UA ConditionRefresh; --ack acknowledges by condition id "
                                          "(<unit>.Alarms.<cause>).")
    _client_options(a)
    a.add_argument("--ack", action="append", metavar="CONDITION", help="acknowledge this alarm (repeatable)")
    a.add_argument("--ack-all", action="store_true", help="acknowledge every unacknowledged alarm")
    a.add_argument("--comment", default="", help="comment stored with the acknowledgement")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_alarms)

"""Batch commands over the HMI: curves, plans and learning resets need an engineer; curve and plan files stay in the recipe's folder."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from asyncua import Client, ua

from apc.assembly import build_sim_unit, load
from apc.audit import make_logger
from apc.clock import VirtualClock
from apc.hmi.server import HMI_NAMESPACE, HmiServer
from apc.hmi.users import add_user, load_users
from apc.kinds import kind_of
from apc.kinds.furnace.kind import _resolve
from tests.helpers.loopback_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
VIM = ROOT / "recipes" / "vim_furnace.yaml"
PASSWORDS = {"olga": "operator-secret", "erin": "engineer-secret"}


def test_only_an_engineer_may_change_curves_plans_or_learning_over_the_hmi(tmp_path: Path) -> None:
    """An operator's 'reset_learning', 'plan', 'curve' and 'start curve=' writes get BadUserAccessDenied and are audited; the engineer's reach the batch; 'hold' stays an operator's command."""
    loaded = load(VIM)
    clock = VirtualClock()
    buf = io.StringIO()
    audit = make_logger(buf)
    unit, _ = build_sim_unit("vim-1", loaded, kind_of(loaded.recipe).load_scenario(None), 1, clock, audit=audit,
                             with_kpis=False, state_dir=tmp_path / "state")
    users = tmp_path / "users.yaml"
    add_user(users, "olga", "operator", PASSWORDS["olga"], n=2**10)
    add_user(users, "erin", "engineer", PASSWORDS["erin"], n=2**10)
    srv = HmiServer({"vim-1": unit}, load_users(users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                    cert_path=None, key_path=None, allow_insecure_loopback=True, audit=audit, clock_utc=clock.utc)

    async def write(user: str, text: str) -> str:
        c = Client(srv.endpoint_url, timeout=3)
        c.set_user(user)
        c.set_password(PASSWORDS[user])
        async with c:
            ns = await c.get_namespace_index(HMI_NAMESPACE)
            (status,) = await c.uaclient.write_attributes(
                [ua.NodeId("vim-1.Batch.Command", ns)], [ua.DataValue(ua.Variant(text, ua.VariantType.String))],
                ua.AttributeIds.Value)
            return str(status.name)

    async def run() -> dict[str, str]:
        async with srv:
            out = {}
            for text in ("reset_learning new lining", "plan plans/week.yaml", "curve fast", "start curve=fast"):
                out[f"olga {text}"] = await write("olga", text)
            out["erin curve ../../../etc/passwd.yaml"] = await write("erin", "curve ../../../etc/passwd.yaml")
            out["olga hold"] = await write("olga", "hold")
            return out

    got = asyncio.run(run())
    assert [got[f"olga {t}"] for t in ("reset_learning new lining", "plan plans/week.yaml", "curve fast",
                                       "start curve=fast")] == ["BadUserAccessDenied"] * 4
    assert got["erin curve ../../../etc/passwd.yaml"] == "BadInvalidState"  # reached the batch, refused there
    assert got["olga hold"] in ("Good", "BadInvalidState")  # an operator's command: judged by the batch
    refused = [json.loads(x) for x in buf.getvalue().splitlines() if '"hmi_write_refused"' in x]
    assert sum("need engineer" in e["why"] for e in refused) == 4


def test_curve_and_plan_files_must_lie_in_the_recipes_folder() -> None:
    """A name is looked up in curves/, a relative path under the recipe's folder; an absolute path or one escaping through '..' is refused."""
    loaded = load(VIM)
    base = VIM.parent.resolve()
    assert _resolve(loaded, "fast") == base / "curves" / "fast.yaml"
    assert _resolve(loaded, "plans/week.yaml") == base / "plans" / "week.yaml"
    for bad in ("/etc/passwd.yaml", "../secrets.yaml", "plans/../../x.yaml"):
        with pytest.raises(ValueError, match="recipe's folder"):
            _resolve(loaded, bad)

"""Recipe reload at a cycle boundary: Unit.request_reload, the runtime's reload callback, the HMI's ReloadRecipe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from apc.assembly import load
from apc.hmi.client_cmds import HmiClientError, request_reload
from apc.runtime import reload_callback
from apc.types import Mode
from apc.unit_parts import build_parts
from tests.helpers.sim_harness import ND_RECIPE, SimUnit
from tests.test_hmi_server import UNIT, VT, Audit, Pki, hmi, pki, read, session, write  # noqa: F401 (fixture)

OLD_LIMITS = "  oxide_feed:\n    engineering: [0, 25]\n    operator: [0, 20]\n"
NEW_LIMITS = "  oxide_feed:\n    engineering: [0, 25]\n    operator: [2, 18]\n"
BAD_LIMITS = "  oxide_feed:\n    engineering: [0, 25]\n    operator: [0, 30]\n"


def edited(old: str, new: str) -> Callable[[str], str]:
    """A recipe edit replacing ``old`` (which must occur once) by ``new``."""
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)
    return edit


def retuned(text: str) -> str:
    """Operator limits of oxide_feed moved to [2, 18] and the baseline's nominal feed to 9.0 kg/h."""
    return edited("nominal_feed_kg_h: 9.2", "nominal_feed_kg_h: 9.0")(edited(OLD_LIMITS, NEW_LIMITS)(text))


def write_recipe(tmp_path: Path, edit: Callable[[str], str] = lambda t: t) -> Path:
    """The shipped cell recipe (edited) in ``tmp_path``, beside a link to its models directory."""
    models = tmp_path / "models"
    if not models.exists():
        models.symlink_to(ND_RECIPE.parent / "models")
    path = tmp_path / "cell.yaml"
    path.write_text(edit(ND_RECIPE.read_text()))
    return path


def test_reload_while_on_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A reload requested while the unit is ON is refused (audited) and the next cycle runs the old recipe."""
    audit = Audit()
    su = SimUnit(write_recipe(tmp_path), audit=audit.logger, name=UNIT)
    su.go_on()
    old_sha, controller = su.unit.loaded.sha256, su.unit.controller
    new = load(write_recipe(tmp_path, retuned))
    why = su.unit.request_reload(new, build_parts(new), who="erin", where="test", utc=su.clock.utc())
    assert why.startswith("unit is ON")
    rec = su.step()[0]
    assert rec.mode.actual == "ON" and rec.recipe_reload is None
    assert su.unit.loaded.sha256 == old_sha and su.unit.controller is controller
    assert su.unit.mvs["oxide_feed"].limits.operator == (0, 20)
    (refused,) = audit.events("recipe_reload_refused")
    assert (refused["who"], refused["old"], refused["new"], refused["why"]) == ("erin", old_sha, new.sha256, why)
    assert audit.events("recipe_reload") == []


def test_reload_in_standby_applies_limits_and_tuning_at_the_next_cycle(tmp_path: Path) -> None:
    """In STANDBY a retuned recipe is pending until the next cycle, which runs it; enabled flags and mode are kept."""
    audit = Audit()
    path = write_recipe(tmp_path)
    su = SimUnit(path, audit=audit.logger, name=UNIT)
    su.request(Mode.STANDBY)
    su.enable("anode_move", False)
    su.step(3)
    old_sha, old_controller = su.unit.loaded.sha256, su.unit.controller
    write_recipe(tmp_path, retuned)
    reload = reload_callback({UNIT: su.unit}, su.clock.utc)
    assert asyncio.run(reload(UNIT, "erin", "test")) == ""
    new_sha = su.unit.pending_reload_sha256
    assert new_sha is not None and new_sha != old_sha
    assert su.unit.mvs["oxide_feed"].limits.operator == (0, 20), "nothing changes before the cycle boundary"
    rec = su.step()[0]
    assert rec.recipe_reload == {"old_sha256": old_sha, "new_sha256": new_sha, "who": "erin"}
    assert su.unit.loaded.sha256 == new_sha and su.unit.pending_reload_sha256 is None
    assert su.unit.mvs["oxide_feed"].limits.operator == (2, 18)
    assert su.unit.controller is not old_controller and su.unit.controller.cfg.nominal_feed_kg_h == 9.0
    assert su.unit.mvs["anode_move"].enabled is False and su.unit.mvs["oxide_feed"].enabled is True
    assert rec.mode.requested == rec.mode.actual == "STANDBY"
    assert su.step()[0].recipe_reload is None, "applied once"
    (event,) = audit.events("recipe_reload")
    assert (event["who"], event["old"], event["new"], event["sections"]) == (
        "erin", old_sha, new_sha, ["controller", "limits"])
    assert event["cycle"] == rec.k and event["what"] == str(path)
    (limits,) = audit.events("operator_limits")  # the operator limits in force changed: audited
    assert (limits["mv"], limits["old"], limits["new"], limits["why"]) == ("oxide_feed", [0, 20], [2, 18],
                                                                          "recipe reload")


def test_broken_or_incompatible_recipe_file_is_refused(tmp_path: Path) -> None:
    """A recipe file with an error is refused with its file:line; a changed tag is refused by name; nothing is pending."""
    audit = Audit()
    path = write_recipe(tmp_path)
    su = SimUnit(path, audit=audit.logger, name=UNIT)
    reload = reload_callback({UNIT: su.unit}, su.clock.utc)
    write_recipe(tmp_path, edited(OLD_LIMITS, BAD_LIMITS))
    line = path.read_text().splitlines().index("    operator: [0, 30]") + 1
    why = asyncio.run(reload(UNIT, "erin", "test"))
    assert why.startswith("recipe refused: ") and f"{path}:{line}:" in why
    write_recipe(tmp_path, edited("tag: feed.sp_kg_h", "tag: feed.sp2_kg_h"))
    tag_why = asyncio.run(reload(UNIT, "erin", "test"))
    assert "tag bindings changed (io.mvs.oxide_feed.tag)" in tag_why
    assert su.unit.pending_reload_sha256 is None
    assert [e["why"] for e in audit.events("recipe_reload_refused")] == [why, tag_why]
    assert su.step()[0].recipe_reload is None


def test_hmi_reload_is_engineer_only(pki: Pki, tmp_path: Path) -> None:
    """Through the HMI an operator's ReloadRecipe gets BadUserAccessDenied; an engineer's is applied; refusals show why."""
    audit = Audit()
    path = write_recipe(tmp_path)
    su = SimUnit(path, audit=audit.logger, name=UNIT)
    old_sha = su.unit.loaded.sha256
    write_recipe(tmp_path, retuned)
    reload = reload_callback({UNIT: su.unit}, su.clock.utc)

    async def scenario() -> None:
        async with hmi(pki, su, audit, reload=reload) as srv:
            await srv.publish(UNIT, su.step()[0])
            async with session(srv, pki.creds("olga")) as (c, ns):
                assert await write(c, ns, ("ReloadRecipe",), True, VT.Boolean) == "BadUserAccessDenied"
                assert await write(c, ns, ("RecipeSha256",), "x", VT.String) == "BadNotWritable"
            assert su.unit.pending_reload_sha256 is None
            status, in_force = await request_reload(srv.endpoint_url, pki.creds("erin"), UNIT, timeout_s=5)
            assert status.startswith("pending: recipe ") and in_force == old_sha
            new_sha = su.unit.pending_reload_sha256
            await srv.publish(UNIT, su.step()[0])
            async with session(srv, pki.creds("erin")) as (c, ns):
                assert await read(c, ns, "RecipeSha256") == new_sha != old_sha
                assert await write(c, ns, ("ReloadRecipe",), False, VT.Boolean) == "BadOutOfRange"
            write_recipe(tmp_path, edited(OLD_LIMITS, BAD_LIMITS))
            with pytest.raises(HmiClientError, match=r"BadInvalidState \(refused: recipe refused: .*cell\.yaml:\d+"):
                await request_reload(srv.endpoint_url, pki.creds("erin"), UNIT, timeout_s=5)
        async with hmi(pki, su, audit) as srv, session(srv, pki.creds("erin")) as (c, ns):
            assert await write(c, ns, ("ReloadRecipe",), True, VT.Boolean) == "BadNotSupported"

    asyncio.run(scenario())
    assert su.unit.mvs["oxide_feed"].limits.operator == (2, 18)
    refused = [(e["who"], e["what"], e["status"]) for e in audit.events("hmi_write_refused")]
    assert refused == [("olga", f"{UNIT}.ReloadRecipe", "BadUserAccessDenied"),
                       ("olga", f"{UNIT}.RecipeSha256", "BadNotWritable"),
                       ("erin", f"{UNIT}.ReloadRecipe", "BadOutOfRange"),
                       ("erin", f"{UNIT}.ReloadRecipe", "BadInvalidState"),
                       ("erin", f"{UNIT}.ReloadRecipe", "BadNotSupported")]
    (applied,) = audit.events("recipe_reload")
    assert applied["who"] == "erin" and applied["where"].startswith("hmi 127.0.0.1:")

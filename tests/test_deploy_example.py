"""deploy/ works as written: the documented set-up of the example site, tried as a new user would,
end to end on loopback (set-up script, apc check, the virtual plant standing in for the DCS, apc run
with its HMI, an engineer's apc status and apc mode over a trusted certificate, a clean stop)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ROOT

APC = [sys.executable, "-m", "apc.cli"]
DEADLINE_S = 120.0


def apc(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APC, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def wait_for_line(stream: IO[str], pattern: str, proc: subprocess.Popen[str]) -> str:
    """Read ``stream`` until a line matches (the process tells when it is ready); fails on exit or time."""
    t_end = time.monotonic() + DEADLINE_S
    while time.monotonic() < t_end:
        line = stream.readline()
        if not line:
            raise AssertionError(f"process ended (rc {proc.poll()}) before printing {pattern!r}")
        if re.search(pattern, line):
            return line
    raise AssertionError(f"{pattern!r} not printed within {DEADLINE_S:g} s")


@pytest.fixture
def laid_out(tmp_path: Path) -> Path:
    """deploy/setup-site.sh run as the README says (passwords from the environment), then given free ports."""
    etc, var = tmp_path / "etc", tmp_path / "var"
    env = {**os.environ, "APC_OPERATOR_PASSWORD": "olga-password-1", "APC_ENGINEER_PASSWORD": "erin-password-1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # as the README's env PATH=
    done = subprocess.run(["bash", str(ROOT / "deploy" / "setup-site.sh"), str(etc), str(var)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    hmi_port, ua_port, mb_port = free_port(), free_port(), free_port()
    site = (etc / "site.yaml").read_text().replace(":4850/", f":{hmi_port}/")
    (etc / "site.yaml").write_text(site)
    plant = (etc / "plant.yaml").read_text().replace("4841", str(ua_port)).replace("5021", str(mb_port))
    (etc / "plant.yaml").write_text(plant)
    return etc


def test_the_documented_setup_runs_the_example_site_end_to_end(laid_out: Path, tmp_path: Path) -> None:
    """The laid-out site passes apc check; against the virtual plant apc run serves its HMI on loopback, erin's trusted certificate reads the status (every unit in STANDBY) and requests a mode, and SIGINT stops it cleanly."""
    etc, var = laid_out, tmp_path / "var"
    assert (etc / "recipes" / "models" / "nd_cell_bath_temp.onnx").is_file()
    assert (etc / "pki" / "trusted" / "erin_cert.pem").is_file()
    assert oct((etc / "hmi_users.yaml").stat().st_mode & 0o777) == "0o600"
    assert oct((etc / "clients" / "erin.yaml").stat().st_mode & 0o777) == "0o600"
    checked = apc("check", str(etc / "site.yaml"), str(etc / "plant.yaml"))
    assert checked.returncode == 0, checked.stderr
    endpoint = re.search(r"endpoint_url: (\S+)", (etc / "site.yaml").read_text())[1]  # type: ignore[index]
    assert "127.0.0.1" in endpoint  # loopback until the operator sets the control-network address
    plant = subprocess.Popen([*APC, "plant-sim", str(etc / "site.yaml"), "--bindings-out", str(etc / "bindings"),
                              "--speed", "10"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runtime: subprocess.Popen[str] | None = None
    try:
        assert plant.stdout is not None
        wait_for_line(plant.stdout, r"^serving", plant)
        runtime = subprocess.Popen([*APC, "run", str(etc / "site.yaml"), "--speed", "10"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        assert runtime.stdout is not None
        wait_for_line(runtime.stdout, r"^site example-smelter: 3 unit\(s\)", runtime)
        creds = str(etc / "clients" / "erin.yaml")
        status = apc("status", "--endpoint", endpoint, "--credentials", creds, "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        units = {u["name"]: u for u in json.loads(status.stdout)}
        assert set(units) == {"cell-01", "cell-02", "vim-01"}
        assert all(u["requested"] == "STANDBY" for u in units.values())  # a start never asks for ON
        mode = apc("mode", "cell-01", "ON", "--endpoint", endpoint, "--credentials", creds)
        assert mode.returncode == 0, mode.stdout + mode.stderr
        runtime.send_signal(signal.SIGINT)
        assert runtime.wait(timeout=60) == 0
    finally:
        for proc in (runtime, plant):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    audit = [json.loads(x) for x in (var / "records" / "audit.jsonl").read_text().splitlines()]
    asked = [e for e in audit if e["event"] == "mode_request" and e.get("who") == "erin"]
    assert asked and asked[0]["unit"] == "cell-01" and asked[0]["new"] == "ON"
    assert (var / "state" / "cell-01" / "unit_state.json").is_file()


def test_the_two_node_potline_sites_check_once_laid_out(laid_out: Path) -> None:
    """Both node site files of deploy/two-node pass apc check in a laid-out site directory (given their cells' binding files)."""
    etc = laid_out
    for i in range(1, 41):
        shutil.copy(ROOT / "deploy" / "example-site" / "bindings" / "cell-01.yaml", etc / "bindings" / f"cell-{i:02d}.yaml")
    for node in ("node-a", "node-b"):
        shutil.copy(ROOT / "deploy" / "two-node" / f"{node}.yaml", etc / f"{node}.yaml")
        done = apc("check", str(etc / f"{node}.yaml"))
        assert done.returncode == 0, done.stderr

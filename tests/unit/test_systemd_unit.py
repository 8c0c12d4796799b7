"""deploy/systemd/mediasrv.service: valid for systemd-analyze, sandboxed, and its command line is ours."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "mediasrv.service"


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is not installed; run the README's test command (bash scripts/test.sh)")
    return path


def _unit_with_existing_binary(tmp_path: Path) -> Path:
    """The unit as shipped, but ExecStart's binary pointed at one that exists here (verify checks it)."""
    text = UNIT.read_text().replace("/opt/mediasrv/bin/mediasrv", "/bin/true")
    out = tmp_path / "mediasrv.service"
    out.write_text(text)
    return out


def test_unit_verifies_without_a_warning(tmp_path):
    unit = _unit_with_existing_binary(tmp_path)
    proc = subprocess.run([_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr.strip(), proc.stdout.strip()) == (0, "", "")
    # and verify does catch mistakes (a misspelt key is a warning on stderr)
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    proc = subprocess.run([_analyze(), "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'ProtectSytem'" in proc.stderr


def test_unit_is_sandboxed_and_keeps_only_cap_sys_nice(tmp_path):
    text = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["User"] == "mediasrv" and settings["StateDirectory"] == "mediasrv"
    assert settings["AmbientCapabilities"] == settings["CapabilityBoundingSet"] == "CAP_SYS_NICE"
    assert int(settings["LimitNOFILE"]) >= 65536 and settings["ProtectSystem"] == "strict"
    proc = subprocess.run([_analyze(), "security", "--offline=true", "--no-pager", str(_unit_with_existing_binary(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for mediasrv.service: ([\d.]+)", proc.stdout)
    assert level and float(level.group(1)) <= 3.0, proc.stdout[-500:]


def test_exec_start_is_a_command_line_mediasrv_accepts():
    line = re.search(r"^ExecStart=(\S+) (.*)$", UNIT.read_text(), re.M)
    assert line and line.group(1).endswith("/bin/mediasrv")
    args = line.group(2).split()
    assert args[0] == "serve"
    help_text = subprocess.run([sys.executable, "-m", "mediasrv", "serve", "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    for flag in (a for a in args[1:] if a.startswith("--")):
        assert flag in help_text, flag

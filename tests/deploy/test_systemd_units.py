"""deploy/systemd: `systemd-analyze verify` accepts the units (paths pointed at this checkout),
and they keep the settings docs/production.md relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
PORTAL = Path(sys.executable).with_name("portal")


def parsed(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def local_copy(tmp_path: Path, name: str) -> Path:
    """The unit with its install paths replaced by this checkout's, so verify can find them."""
    env = tmp_path / "portal.env"
    env.write_text("PORTAL_BASE_URL=https://pay.example-lab.com\n")
    text = (UNITS / name).read_text()
    for old, new in (("/opt/portal/app/.venv/bin/portal", str(PORTAL)),
                     ("/opt/portal/app", str(ROOT)), ("/etc/portal/portal.env", str(env))):
        assert old in text, f"{name} no longer mentions {old}"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def verify(unit: Path, instance: str | None = None) -> subprocess.CompletedProcess:
    target = unit.with_name(unit.name.replace("@", f"@{instance}")) if instance else unit
    return subprocess.run([ANALYZE, "verify", str(target)], capture_output=True, text=True,
                          timeout=60, cwd=unit.parent)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name,instance", [("portal-web.service", None),
                                           ("portal-worker@.service", "1")])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, name, instance):
    result = verify(local_copy(tmp_path, name), instance)
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: any line about the unit fails.
    assert [line for line in result.stderr.splitlines() if name.split("@")[0] in line] == []


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_verify_would_report_a_mistake(tmp_path):
    unit = local_copy(tmp_path, "portal-web.service")
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=gently"))
    assert "kill mode" in verify(unit).stderr


@pytest.mark.parametrize("name", ["portal-web.service", "portal-worker@.service"])
def test_the_units_run_hardened_as_their_own_user_and_stop_gently(name):
    service = parsed(name)["Service"]
    assert service["User"] == service["Group"] == "portal"
    assert service["EnvironmentFile"] == "/etc/portal/portal.env"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    for setting, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                           ("CapabilityBoundingSet", "")):
        assert service[setting] == value, setting
    # Long enough for gunicorn's 30 s graceful stop, or for a worker's job in hand.
    assert int(service["TimeoutStopSec"]) >= (40 if "web" in name else 60)


def test_the_web_unit_trusts_exactly_one_proxy_and_listens_locally():
    service = parsed("portal-web.service")["Service"]
    assert "PORTAL_TRUSTED_PROXIES=1" in service["Environment"]
    assert "--host 127.0.0.1" in service["ExecStart"]

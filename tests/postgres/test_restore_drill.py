"""deploy/restore_drill.py against the local PostgreSQL: dump, restore into a new database,
the same row counts, and stored gateway credentials that decrypt with the keys (or a failure
that says which do not)."""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import ENCRYPTION_KEY
from tests.postgres.conftest import drop_database

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "restore_drill.py"


def load_drill():
    spec = importlib.util.spec_from_file_location("restore_drill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def run_drill(database_url: str, keys: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PORTAL_DATABASE_URL": database_url, "PORTAL_ENCRYPTION_KEYS": keys}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def databases(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(text("SELECT datname FROM pg_database")))
    finally:
        engine.dispose()


def fill(build) -> None:
    """Two labs with gateway keys, links, payments and an audit trail."""
    for slug in ("north", "south"):
        lab = build.lab(slug)
        for n in range(3):
            link = build.link(lab, amount=1000 + n)
            if n == 0:
                build.payment(link)


def test_the_drill_restores_every_row_and_decrypts_every_credential(pg_database, pg_build,
                                                                    tmp_path):
    fill(pg_build)
    target = f"portal_drill_{secrets.token_hex(4)}"
    dump = tmp_path / "portal.dump"
    result = run_drill(pg_database, ENCRYPTION_KEY, "--target-database", target,
                       "--keep-dump", str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restore drill PASSED" in result.stdout
    assert "stored secrets decrypted with PORTAL_ENCRYPTION_KEYS: 2 of 2" in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.split()[:4] == ["online_payments", "6", "6", "ok"] for line in lines), lines
    assert any(line.split()[:4] == ["labs", "2", "2", "ok"] for line in lines), lines
    assert dump.stat().st_size > 0  # the verified dump is kept as a backup
    assert target not in databases(pg_database)  # the drill database is dropped
    assert ENCRYPTION_KEY not in result.stdout + result.stderr


def test_the_wrong_keys_fail_the_drill_and_say_which_rows(pg_database, pg_build):
    fill(pg_build)
    other_key = Fernet.generate_key().decode()
    result = run_drill(pg_database, other_key, "--target-database",
                       f"portal_drill_{secrets.token_hex(4)}")
    assert result.returncode == 1
    assert "restore drill FAILED" in result.stdout
    assert "decrypted with PORTAL_ENCRYPTION_KEYS: 0 of 2" in result.stdout
    assert result.stdout.count("cannot be decrypted: payment_gateway_keys.credentials_"
                               "encrypted id=") == 2


def test_an_old_key_kept_after_a_rotation_still_reads_the_backup(pg_database, pg_build):
    """Keys are listed newest first: a backup made before a rotation needs the old key too."""
    fill(pg_build)
    newer = Fernet.generate_key().decode()
    result = run_drill(pg_database, f"{newer},{ENCRYPTION_KEY}", "--target-database",
                       f"portal_drill_{secrets.token_hex(4)}", "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    kept = result.stdout.split("restored into ")[1].split(" ")[0]
    assert kept in databases(pg_database)
    drop_database(make_url(pg_database), kept)


def test_row_counts_that_differ_are_named():
    drill = load_drill()
    assert drill.compare_counts({"labs": 2, "payments": 5, "jobs": 1},
                                {"labs": 2, "payments": 4, "extra": 0}) == [
        "extra: not in the source", "jobs: missing after the restore",
        "payments: 5 rows in the source, 4 restored"]


def test_without_settings_the_drill_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    result = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "PORTAL_DATABASE_URL and PORTAL_ENCRYPTION_KEYS must be set" in result.stderr

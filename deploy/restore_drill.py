#!/usr/bin/env python3
"""Restore drill: proves that a backup of the portal's database can be restored and read.

    PORTAL_DATABASE_URL=... PORTAL_ENCRYPTION_KEYS=... \\
        /opt/portal/app/.venv/bin/python deploy/restore_drill.py [--keep-dump FILE]

1. Dumps the database (`pg_dump -Fc`) inside one REPEATABLE READ snapshot, and counts the rows of
   every table in that same snapshot;
2. creates a new database (`portal_restore_drill_<time>`, or --target-database) on the same server
   and restores the dump into it (`pg_restore --no-owner --exit-on-error`);
3. counts the rows of the restored tables: every count must match;
4. decrypts every stored secret (each `*_encrypted` column: the labs' gateway credentials) with
   PORTAL_ENCRYPTION_KEYS: every one must decrypt, or the key backup is not the right one;
5. drops the drill database (unless --keep) and prints what it found.

Exit status 0 when the restore is complete and readable, 1 otherwise. `pg_dump` and
`pg_restore` must be of the server's major version or newer. Needs psycopg and cryptography
(both in the portal's virtualenv). Nothing secret is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from psycopg import sql
from sqlalchemy.engine import make_url


@dataclass
class Server:
    """Where the database lives, as libpq wants it (the password goes in the environment)."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    database: str

    @classmethod
    def from_url(cls, url: str) -> Server:
        parsed = make_url(url)
        if not parsed.drivername.startswith("postgresql"):
            raise SystemExit(f"the restore drill is for PostgreSQL, not {parsed.drivername}")
        return cls(parsed.host, parsed.port, parsed.username, parsed.password,
                   parsed.database or "postgres")

    def uri(self, database: str | None = None) -> str:
        auth = f"{quote(self.user, safe='')}@" if self.user else ""
        host = self.host or ""
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{auth}{host}{port}/{quote(database or self.database, safe='')}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, database: str | None = None, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.uri(database), password=self.password, **kwargs)


@dataclass
class Report:
    source_counts: dict[str, int] = field(default_factory=dict)
    restored_counts: dict[str, int] = field(default_factory=dict)
    secrets_checked: int = 0
    secrets_failed: list[str] = field(default_factory=list)
    dump_bytes: int = 0
    seconds: float = 0.0

    @property
    def mismatches(self) -> list[str]:
        return compare_counts(self.source_counts, self.restored_counts)

    @property
    def ok(self) -> bool:
        return bool(self.source_counts) and not self.mismatches and not self.secrets_failed


def compare_counts(source: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Every table with the same number of rows on both sides, none missing or extra."""
    problems = []
    for table in sorted(set(source) | set(restored)):
        if table not in restored:
            problems.append(f"{table}: missing after the restore")
        elif table not in source:
            problems.append(f"{table}: not in the source")
        elif source[table] != restored[table]:
            problems.append(f"{table}: {source[table]} rows in the source, "
                            f"{restored[table]} restored")
    return problems


def tables(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    return {table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table))).fetchone()[0] for table in tables(conn)}


def encrypted_columns(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type = 'bytea' "
        "AND column_name LIKE '%%\\_encrypted' ORDER BY table_name, column_name")]


def check_secrets(conn: psycopg.Connection, keys: MultiFernet, report: Report) -> None:
    for table, column in encrypted_columns(conn):
        query = sql.SQL("SELECT id, {} FROM {} WHERE {} IS NOT NULL").format(
            sql.Identifier(column), sql.Identifier(table), sql.Identifier(column))
        for row_id, token in conn.execute(query):
            report.secrets_checked += 1
            try:
                keys.decrypt(bytes(token))
            except InvalidToken:
                report.secrets_failed.append(f"{table}.{column} id={row_id}")


def dump(source: Server, path: Path, report: Report) -> None:
    """pg_dump of one snapshot, the rows counted in that same snapshot."""
    with source.connect(autocommit=False) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        report.source_counts = count_rows(conn)
        subprocess.run(["pg_dump", "--format=custom", f"--snapshot={snapshot}",
                        f"--file={path}", f"--dbname={source.uri()}"],
                       env=source.env(), check=True)
        conn.rollback()
    report.dump_bytes = path.stat().st_size


def restore(source: Server, target: str, path: Path) -> None:
    with source.connect("postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                    f"--dbname={source.uri(target)}", str(path)], env=source.env(), check=True)


def drop(source: Server, target: str) -> None:
    with source.connect("postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(target)))


def drill(database_url: str, encryption_keys: str, *, target: str, keep: bool,
          keep_dump: Path | None) -> Report:
    started = time.monotonic()
    source = Server.from_url(database_url)
    keys = MultiFernet([Fernet(k.strip().encode()) for k in encryption_keys.split(",")
                        if k.strip()])
    report = Report()
    with tempfile.TemporaryDirectory(prefix="portal-drill-") as folder:
        path = keep_dump or Path(folder) / "portal.dump"
        dump(source, path, report)
        restore(source, target, path)
        try:
            with source.connect(target) as restored:
                report.restored_counts = count_rows(restored)
                check_secrets(restored, keys, report)
        finally:
            if not keep:
                drop(source, target)
    report.seconds = time.monotonic() - started
    return report


def print_report(report: Report, target: str, keep: bool) -> None:
    print(f"restore drill: dump {report.dump_bytes} bytes, restored into {target}"
          f"{' (kept)' if keep else ' (dropped)'}, {report.seconds:.1f} s")
    width = max((len(t) for t in report.source_counts), default=10)
    for table, rows in sorted(report.source_counts.items()):
        restored = report.restored_counts.get(table, "missing")
        mark = "ok" if restored == rows else "MISMATCH"
        print(f"  {table:<{width}}  {rows:>9}  {restored!s:>9}  {mark}")
    for problem in report.mismatches:
        print(f"  row counts differ: {problem}")
    print(f"  stored secrets decrypted with PORTAL_ENCRYPTION_KEYS: "
          f"{report.secrets_checked - len(report.secrets_failed)} of {report.secrets_checked}")
    for where in report.secrets_failed:
        print(f"  cannot be decrypted: {where}")
    if not report.source_counts:
        print("  no tables in the source: is PORTAL_DATABASE_URL the portal's database?")
    if report.secrets_checked == 0:
        print("  (no stored secrets to check: no lab has gateway keys yet)")
    print("restore drill " + ("PASSED" if report.ok else "FAILED"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-database",
                        default=time.strftime("portal_restore_drill_%Y%m%d%H%M%S"))
    parser.add_argument("--keep", action="store_true", help="keep the restored database")
    parser.add_argument("--keep-dump", type=Path, help="write the dump here and keep it")
    args = parser.parse_args(argv)
    database_url = os.environ.get("PORTAL_DATABASE_URL")
    encryption_keys = os.environ.get("PORTAL_ENCRYPTION_KEYS")
    if not database_url or not encryption_keys:
        print("PORTAL_DATABASE_URL and PORTAL_ENCRYPTION_KEYS must be set", file=sys.stderr)
        return 2
    try:
        report = drill(database_url, encryption_keys, target=args.target_database,
                       keep=args.keep, keep_dump=args.keep_dump)
    except (subprocess.CalledProcessError, psycopg.Error, ValueError) as exc:
        print(f"restore drill FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print_report(report, args.target_database, args.keep)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

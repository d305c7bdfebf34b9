"""The Alembic migrations build, on PostgreSQL, exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from portal.models import SEARCH_STATISTICS, Base

from .conftest import create_database, drop_database, render


def test_migrations_match_models(pg_database):
    engine = create_engine(pg_database)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    # No filtering: on PostgreSQL 15 with SQLAlchemy 2.1 / Alembic 1.x there is no difference.
    assert diff == [], "migrations and models differ:\n" + "\n".join(map(repr, diff))


# Index columns with a statistics target of their own (NULL or -1 means the default).
STATISTICS = """SELECT ic.relname, a.attnum, a.attstattarget
    FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = ic.oid
    WHERE t.relname = :table AND a.attstattarget > 0 ORDER BY 1, 2"""


def schema_facts(url: str) -> dict:
    """What autogenerate does not compare: CHECK constraints (the enum guards among them)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            facts = {}
            for table in sorted(Base.metadata.tables):
                facts[table] = {
                    "checks": sorted((c["name"], " ".join(c["sqltext"].split()))
                                     for c in inspector.get_check_constraints(table)),
                    "uniques": sorted((c["name"], tuple(c["column_names"]))
                                      for c in inspector.get_unique_constraints(table)),
                    "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"])
                                      for i in inspector.get_indexes(table)),
                    "fks": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                                  for f in inspector.get_foreign_keys(table)),
                    "pk": inspector.get_pk_constraint(table)["name"],
                    "statistics": conn.execute(text(STATISTICS), {"table": table}).all(),
                }
            return facts
    finally:
        engine.dispose()


def test_migrated_constraints_match_create_all(pg_server, pg_database):
    """Same CHECK/unique/index/FK names and bodies as `metadata.create_all` would make."""
    reference = create_database(pg_server)
    try:
        engine = create_engine(render(reference))
        try:
            Base.metadata.create_all(engine)
        finally:
            engine.dispose()
        expected = schema_facts(render(reference))
    finally:
        drop_database(pg_server, reference.database)
    migrated = schema_facts(pg_database)
    for table in expected:
        assert migrated[table] == expected[table], table
    # The enum guards exist at all (non-native enums are VARCHAR + CHECK).
    assert any("link_status" in name for name, _ in migrated["online_payments"]["checks"])
    assert migrated["online_payments"]["statistics"] == [
        ("ix_online_payments_lab_bill_lower", 2, SEARCH_STATISTICS)]
    assert len(migrated["customers"]["statistics"]) == 2

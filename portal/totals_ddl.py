"""Triggers that keep `payment_totals` (count, amount, refunded per lab, currency, status and
gateway) equal to an aggregate over `payments`, whatever writes a payment: the ORM, a bulk
INSERT ... SELECT, or a hand-run UPDATE. Used by migration 0011 and by create_all.

A SQLite batch migration that rebuilds `payments` drops its triggers: such a migration must
run `create_sqlite()` again.
"""

from __future__ import annotations

TRACKED = ("lab_id", "currency", "status", "gateway", "amount", "amount_refunded")
CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in TRACKED)
SQLITE_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in TRACKED)

_SUBTRACT = """UPDATE payment_totals SET count = count - 1, amount = amount - OLD.amount,
    refunded = refunded - OLD.amount_refunded
  WHERE lab_id = OLD.lab_id AND currency = OLD.currency AND status = OLD.status
    AND gateway = OLD.gateway;"""
_ADD = """INSERT INTO payment_totals (lab_id, currency, status, gateway, count, amount, refunded)
  VALUES (NEW.lab_id, NEW.currency, NEW.status, NEW.gateway, 1, NEW.amount,
          NEW.amount_refunded)
  ON CONFLICT (lab_id, currency, status, gateway) DO UPDATE SET
    count = payment_totals.count + 1, amount = payment_totals.amount + excluded.amount,
    refunded = payment_totals.refunded + excluded.refunded;"""

POSTGRES = [
    f"""CREATE FUNCTION payment_totals_apply() RETURNS trigger AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {_SUBTRACT}
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {_ADD}
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER payments_totals_insert_delete AFTER INSERT OR DELETE ON payments
  FOR EACH ROW EXECUTE FUNCTION payment_totals_apply()""",
    f"""CREATE TRIGGER payments_totals_update AFTER UPDATE ON payments
  FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION payment_totals_apply()""",
]
POSTGRES_DROP = ["DROP TRIGGER IF EXISTS payments_totals_update ON payments",
                 "DROP TRIGGER IF EXISTS payments_totals_insert_delete ON payments",
                 "DROP FUNCTION IF EXISTS payment_totals_apply()"]

SQLITE = [
    f"CREATE TRIGGER payments_totals_insert AFTER INSERT ON payments BEGIN {_ADD} END",
    f"CREATE TRIGGER payments_totals_delete AFTER DELETE ON payments BEGIN {_SUBTRACT} END",
    f"""CREATE TRIGGER payments_totals_update AFTER UPDATE ON payments
  WHEN {SQLITE_CHANGED} BEGIN {_SUBTRACT} {_ADD} END""",
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS payments_totals_insert",
               "DROP TRIGGER IF EXISTS payments_totals_delete",
               "DROP TRIGGER IF EXISTS payments_totals_update"]

REBUILD = """INSERT INTO payment_totals (lab_id, currency, status, gateway, count, amount, refunded)
SELECT lab_id, currency, status, gateway, count(*), coalesce(sum(amount), 0),
       coalesce(sum(amount_refunded), 0)
FROM payments GROUP BY lab_id, currency, status, gateway"""


def create(dialect: str) -> list[str]:
    return POSTGRES if dialect == "postgresql" else SQLITE


def drop(dialect: str) -> list[str]:
    return POSTGRES_DROP if dialect == "postgresql" else SQLITE_DROP

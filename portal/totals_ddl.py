"""Triggers that keep `payment_totals` (count, amount, refunded per lab, currency, status and
gateway) equal to an aggregate over `payments`, whatever writes a payment: the ORM, a bulk
INSERT ... SELECT, or a hand-run UPDATE. Used by migrations 0011 and 0017 and by create_all.

Each key's figures are spread over SLOTS rows, a payment counting in slot `id % SLOTS`: with one
row per key, every payment of a lab that changed status took that row's lock until its
transaction committed, so a lab's concurrent webhooks queued one behind the other. Readers sum
the slots (a few dozen rows at most).

A SQLite batch migration that rebuilds `payments` drops its triggers: such a migration must
run `create("sqlite")` again.
"""

from __future__ import annotations

SLOTS = 16
TRACKED = ("lab_id", "currency", "status", "gateway", "amount", "amount_refunded")
CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in TRACKED)
SQLITE_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in TRACKED)


def _slot(row: str, slots: int, dialect: str) -> str:
    """mod() on PostgreSQL: a bare % reads as a parameter placeholder to psycopg."""
    return f"mod({row}.id, {slots})" if dialect == "postgresql" else f"{row}.id % {slots}"


def _subtract(slots: int | None, dialect: str) -> str:
    slot = f" AND slot = {_slot('OLD', slots, dialect)}" if slots else ""
    return f"""UPDATE payment_totals SET count = count - 1, amount = amount - OLD.amount,
    refunded = refunded - OLD.amount_refunded
  WHERE lab_id = OLD.lab_id AND currency = OLD.currency AND status = OLD.status
    AND gateway = OLD.gateway{slot};"""  # nosec B608  # integers of ours, no input


def _add(slots: int | None, dialect: str) -> str:
    column, value, key = ((", slot", f", {_slot('NEW', slots, dialect)}", ", slot") if slots
                          else ("", "", ""))
    return f"""INSERT INTO payment_totals (lab_id, currency, status, gateway{column}, count, amount,
                            refunded)
  VALUES (NEW.lab_id, NEW.currency, NEW.status, NEW.gateway{value}, 1, NEW.amount,
          NEW.amount_refunded)
  ON CONFLICT (lab_id, currency, status, gateway{key}) DO UPDATE SET
    count = payment_totals.count + 1, amount = payment_totals.amount + excluded.amount,
    refunded = payment_totals.refunded + excluded.refunded;"""  # nosec B608  # no input


def _postgres(slots: int | None) -> list[str]:
    return [
        f"""CREATE FUNCTION payment_totals_apply() RETURNS trigger AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {_subtract(slots, 'postgresql')}
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {_add(slots, 'postgresql')}
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER payments_totals_insert_delete AFTER INSERT OR DELETE ON payments
  FOR EACH ROW EXECUTE FUNCTION payment_totals_apply()""",
        f"""CREATE TRIGGER payments_totals_update AFTER UPDATE ON payments
  FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION payment_totals_apply()""",
    ]


def _sqlite(slots: int | None) -> list[str]:
    return [
        f"CREATE TRIGGER payments_totals_insert AFTER INSERT ON payments BEGIN "
        f"{_add(slots, 'sqlite')} END",
        f"CREATE TRIGGER payments_totals_delete AFTER DELETE ON payments BEGIN "
        f"{_subtract(slots, 'sqlite')} END",
        f"""CREATE TRIGGER payments_totals_update AFTER UPDATE ON payments
  WHEN {SQLITE_CHANGED} BEGIN {_subtract(slots, 'sqlite')} {_add(slots, 'sqlite')} END""",
    ]


POSTGRES_DROP = ["DROP TRIGGER IF EXISTS payments_totals_update ON payments",
                 "DROP TRIGGER IF EXISTS payments_totals_insert_delete ON payments",
                 "DROP FUNCTION IF EXISTS payment_totals_apply()"]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS payments_totals_insert",
               "DROP TRIGGER IF EXISTS payments_totals_delete",
               "DROP TRIGGER IF EXISTS payments_totals_update"]


def rebuild(slots: int | None = SLOTS) -> str:
    """Fills an empty `payment_totals` from `payments` (run through text(): % is escaped)."""
    if not slots:
        return """INSERT INTO payment_totals (lab_id, currency, status, gateway, count, amount,
                            refunded)
SELECT lab_id, currency, status, gateway, count(*), coalesce(sum(amount), 0),
       coalesce(sum(amount_refunded), 0)
FROM payments GROUP BY lab_id, currency, status, gateway"""
    return f"""INSERT INTO payment_totals (lab_id, currency, status, gateway, slot, count, amount,
                            refunded)
SELECT lab_id, currency, status, gateway, id % {slots}, count(*), coalesce(sum(amount), 0),
       coalesce(sum(amount_refunded), 0)
FROM payments GROUP BY lab_id, currency, status, gateway, id % {slots}"""  # nosec B608


def create(dialect: str, slots: int | None = SLOTS) -> list[str]:
    """The triggers; `slots=None`: the single-row shape of migration 0011."""
    return _postgres(slots) if dialect == "postgresql" else _sqlite(slots)


def drop(dialect: str) -> list[str]:
    return POSTGRES_DROP if dialect == "postgresql" else SQLITE_DROP

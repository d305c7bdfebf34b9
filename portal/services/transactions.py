"""A lab's payments: filtered, searched and keyset-paginated on (created_at, id), newest first.

A page is two steps: the ids of the page, read off one `(lab_id[, filter], created_at, id)`
index backwards from the cursor (an index-only scan that stops after a page: no OFFSET, no
count), then those rows with their link and patient.

Search is a UNION of indexed lookups, each carrying the filters, never a '%x%' scan: patient
name, email and bill reference match case-insensitively from their start (`lower(x) LIKE 'x%'`
on text_pattern_ops indexes); a mobile number matches exactly once normalised to E.164 with the
lab's country; the gateway's transaction id and our payment reference match exactly. So "Asha"
finds "Asha Rao", "Rao" does not; its cost grows with the number of matches.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, FromClause, Row, Select, func, join, select, tuple_, union
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import SelectBase

from ..models import (
    SETTLED_PAYMENT_STATES,
    Customer,
    Lab,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    PaymentTotal,
)
from ..money import major_string
from ..phones import to_e164

PAGE_SIZE = 25
EXPORT_BATCH = 1000
PHONE_LIKE = re.compile(r"\+?[\d\s().-]{6,20}")


@dataclass(frozen=True)
class TransactionFilter:
    status: PaymentStatus | None = None
    gateway: str | None = None
    date_from: date | None = None  # the lab's local dates, both included
    date_to: date | None = None
    amount_min: int | None = None  # minor units of `currency`
    amount_max: int | None = None
    currency: str | None = None
    query: str = ""


class CursorError(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    """A position between two rows: the page after (older than) or before (newer than) a row."""

    created_at: datetime
    id: int
    before: bool = False  # True: the newer page ("Previous")

    def encode(self) -> str:
        text = f"{'p' if self.before else 'n'}.{_micros(self.created_at)}.{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            direction, micros, row_id = raw.split(".")
            if direction not in ("n", "p"):
                raise ValueError(direction)
            moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
            return cls(moment, int(row_id), before=direction == "p")
        except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
            raise CursorError("This page link is not valid any more.") from None


def _micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (a float would round some timestamps)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# What a page shows of each payment, as plain rows: no ORM objects to build, track or expire
# for a list that only reads them (most of the page query's Python time went there).
PAGE_COLUMNS = (Payment.id, Payment.lab_id, Payment.created_at, Payment.reference,
                Payment.status, Payment.gateway, Payment.gateway_transaction_id, Payment.amount,
                Payment.amount_refunded, Payment.currency, OnlinePayment.bill_reference,
                Customer.name.label("patient_name"))
TransactionRow = Row[*tuple[Any, ...]]  # PAGE_COLUMNS by name: row.id, row.patient_name, ...


@dataclass(frozen=True)
class Page:
    rows: Sequence[TransactionRow]
    next_cursor: str | None  # older rows
    prev_cursor: str | None  # newer rows


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    count: int
    captured: int  # succeeded, partly refunded or refunded payments
    refunded: int

    @property
    def net(self) -> int:
        return self.captured - self.refunded


def local_day_bounds(lab: Lab, first: date | None, last: date | None
                     ) -> tuple[datetime | None, datetime | None]:
    """[start of `first`, start of the day after `last`) in the lab's timezone, as UTC."""
    zone = ZoneInfo(lab.timezone)

    def start(day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)

    return (start(first) if first else None,
            start(last + timedelta(days=1)) if last else None)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phone(text: str, country: str | None) -> str | None:
    return to_e164(text, country) if PHONE_LIKE.fullmatch(text) else None


def search_arms(lab: Lab, text: str) -> list[tuple[FromClause, ColumnElement[bool]]]:
    """(FROM, WHERE) of each way `text` can find a payment: one indexed lookup apiece."""
    text = text.strip()
    prefix = _like_prefix(text.lower())
    via_link = join(Payment, OnlinePayment, Payment.online_payment_id == OnlinePayment.id)
    via_customer = join(via_link, Customer, OnlinePayment.customer_id == Customer.id)
    arms = [
        (via_customer, (Customer.lab_id == lab.id)
         & func.lower(Customer.name).like(prefix, escape="\\")),
        (via_customer, (Customer.lab_id == lab.id)
         & func.lower(Customer.email).like(prefix, escape="\\")),
        (via_link, (OnlinePayment.lab_id == lab.id)
         & func.lower(OnlinePayment.bill_reference).like(prefix, escape="\\")),
        (Payment.__table__, Payment.gateway_transaction_id == text),
        (Payment.__table__, Payment.reference == text),
    ]
    phone = _phone(text, lab.country)
    if phone:
        arms.append((via_customer, (Customer.lab_id == lab.id) & (Customer.phone == phone)))
    return arms


def conditions(lab: Lab, f: TransactionFilter) -> list[ColumnElement[bool]]:
    """WHERE clauses on `payments` for the lab and the filter (the search aside)."""
    where = [Payment.lab_id == lab.id]
    if f.status is not None:
        where.append(Payment.status == f.status)
    if f.gateway:
        where.append(Payment.gateway == f.gateway)
    if f.currency:
        where.append(Payment.currency == f.currency)
    since, until = local_day_bounds(lab, f.date_from, f.date_to)
    if since is not None:
        where.append(Payment.created_at >= since)
    if until is not None:
        where.append(Payment.created_at < until)
    if f.amount_min is not None:
        where.append(Payment.amount >= f.amount_min)
    if f.amount_max is not None:
        where.append(Payment.amount <= f.amount_max)
    return where


def matching(lab: Lab, f: TransactionFilter, columns: tuple[Any, ...],
             extra: tuple[ColumnElement[bool], ...] = ()) -> SelectBase:
    """SELECT `columns` of the filtered payments. A search is a UNION of its lookups, each
    carrying every filter, so PostgreSQL never re-reads payments by id to apply it."""
    where = (*conditions(lab, f), *extra)
    if not f.query.strip():
        return select(*columns).where(*where)
    return union(*(select(*columns).select_from(source).where(match, *where)
                   for source, match in search_arms(lab, f.query)))


ROW_KEY = tuple_(Payment.created_at, Payment.id)
Position = tuple[datetime, int]  # (created_at, id) of a row


def _page_ids(lab: Lab, f: TransactionFilter, after: Position | None,
              before: Position | None, limit: int) -> SelectBase:
    """The ids of one page: the filter walked in (created_at, id) order from a position."""
    extra = ((ROW_KEY < after,) if after else ()) + ((ROW_KEY > before,) if before else ())
    found = matching(lab, f, (Payment.id, Payment.created_at), extra).subquery()
    order = (found.c.created_at.asc(), found.c.id.asc()) if before else \
        (found.c.created_at.desc(), found.c.id.desc())
    return select(found.c.id).order_by(*order).limit(limit)


def _with_link_and_customer(*columns: Any) -> Select[*tuple[Any, ...]]:
    return (select(*columns)
            .join(OnlinePayment, Payment.online_payment_id == OnlinePayment.id)
            .outerjoin(Customer, OnlinePayment.customer_id == Customer.id))


NEWEST_FIRST = (Payment.created_at.desc(), Payment.id.desc())


def list_transactions(session: Session, lab: Lab, f: TransactionFilter,
                      cursor: Cursor | None = None, limit: int = PAGE_SIZE) -> Page:
    """One page, newest first, after (or before) `cursor`; stable under equal timestamps."""
    position = None if cursor is None else (cursor.created_at, cursor.id)
    backward = cursor is not None and cursor.before
    ids = _page_ids(lab, f, None if backward else position, position if backward else None,
                    limit + 1)
    found = session.execute(_with_link_and_customer(*PAGE_COLUMNS)
                            .where(Payment.id.in_(ids)).order_by(*NEWEST_FIRST)).all()
    more = len(found) > limit
    if backward:
        if not more and len(found) < limit:  # back at the top: show a full first page
            return list_transactions(session, lab, f, None, limit)
        found = found[-limit:]  # the extra row is the newest one
        has_newer, has_older = more, True
    else:
        found = found[:limit]
        has_newer, has_older = cursor is not None, more
    return Page(rows=found,
                next_cursor=_cursor_at(found[-1], before=False) if has_older and found else None,
                prev_cursor=_cursor_at(found[0], before=True) if has_newer and found else None)


def _cursor_at(row: TransactionRow, *, before: bool) -> str:
    return Cursor(row.created_at, row.id, before=before).encode()


def _kept_totals(lab: Lab, f: TransactionFilter) -> Select[str, str, int, int, int] | None:
    """The totals from `payment_totals` (kept by triggers), when the filter is one of its keys."""
    if f.query.strip() or f.date_from or f.date_to or f.amount_min is not None \
            or f.amount_max is not None:
        return None
    kept = PaymentTotal
    where = [kept.lab_id == lab.id]
    if f.status is not None:
        where.append(kept.status == f.status.value)
    if f.gateway:
        where.append(kept.gateway == f.gateway)
    if f.currency:
        where.append(kept.currency == f.currency)
    return (select(kept.currency, kept.status, func.sum(kept.count), func.sum(kept.amount),
                   func.sum(kept.refunded))
            .where(*where).group_by(kept.currency, kept.status))


def currency_totals(session: Session, lab: Lab, f: TransactionFilter) -> list[CurrencyTotal]:
    """Per currency: a few kept rows for the plain filters, else one grouped aggregate over
    the whole filtered set (dates, amounts and searches narrow it)."""
    query: Select[*tuple[Any, ...]] | None = _kept_totals(lab, f)
    if query is None:
        rows = matching(lab, f, (Payment.id, Payment.currency, Payment.status, Payment.amount,
                                 Payment.amount_refunded)).subquery()
        query = (select(rows.c.currency, rows.c.status, func.count(), func.sum(rows.c.amount),
                        func.sum(rows.c.amount_refunded))
                 .group_by(rows.c.currency, rows.c.status))
    totals: dict[str, list[int]] = {}
    for currency, status, count, amount, refunded in session.execute(query):
        if not count:
            continue  # a kept row whose payments all moved on
        figures = totals.setdefault(currency, [0, 0, 0])
        figures[0] += count
        if PaymentStatus(status) in SETTLED_PAYMENT_STATES:
            figures[1] += int(amount)
        figures[2] += int(refunded)
    return [CurrencyTotal(currency, *totals[currency]) for currency in sorted(totals)]


EXPORT_COLUMNS = (Payment.id, Payment.created_at, Payment.reference, Payment.status,
                  Payment.gateway, Payment.gateway_transaction_id, Payment.method,
                  Payment.card_brand, Payment.card_last4, Payment.amount,
                  Payment.amount_refunded, Payment.currency, OnlinePayment.id.label("link_id"),
                  OnlinePayment.bill_reference, Customer.name.label("patient_name"),
                  Customer.phone, Customer.email)


def export_rows(session: Session, lab: Lab, f: TransactionFilter,
                batch: int | None = None) -> Iterator[Row[*tuple[Any, ...]]]:
    """Every filtered row, newest first, fetched in keyset batches of plain rows (no ORM)."""
    batch = batch or EXPORT_BATCH
    after = None
    while True:
        rows = session.execute(_with_link_and_customer(*EXPORT_COLUMNS)
                               .where(Payment.id.in_(_page_ids(lab, f, after, None, batch)))
                               .order_by(*NEWEST_FIRST)).all()
        # Ends the read transaction while the client downloads: on SQLite every transaction
        # holds the write lock (BEGIN IMMEDIATE), on PostgreSQL a long one holds back vacuum.
        session.rollback()
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].created_at, rows[-1].id)


def get_transaction(session: Session, lab_id: int, payment_id: int) -> Payment | None:
    """A payment of this lab only: another lab's id is simply not found."""
    return session.scalar(select(Payment).where(Payment.id == payment_id,
                                                Payment.lab_id == lab_id))


def payment_timeline(session: Session, payment: Payment) -> list[PaymentGatewayTransaction]:
    """Every exchange with the gateway about this payment, newest first."""
    return list(session.scalars(select(PaymentGatewayTransaction)
                                .where(PaymentGatewayTransaction.lab_id == payment.lab_id,
                                       PaymentGatewayTransaction.payment_id == payment.id)
                                .order_by(PaymentGatewayTransaction.id.desc())))


CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP's CSV injection advice)."""
    return "'" + cell if cell.startswith(CSV_FORMULA_STARTS) else cell


def export_csv(session: Session, lab: Lab, f: TransactionFilter) -> Iterator[str]:
    """The filtered set as CSV text, a batch at a time: header first, amounts in major units."""
    zone = ZoneInfo(lab.timezone)
    out = io.StringIO()
    writer = csv.writer(out)
    # The BOM lets Excel read UTF-8 (patient names in any script) instead of guessing.
    out.write("\ufeff")
    writer.writerow([f"Created ({lab.timezone})", "Payment reference", "Status", "Gateway",
                     "Gateway transaction id", "Method", "Card", "Amount", "Refunded",
                     "Currency", "Bill reference", "Patient", "Mobile", "Email", "Link id",
                     "Payment id"])
    for n, row in enumerate(export_rows(session, lab, f), start=1):
        card = " ".join(x for x in (row.card_brand, row.card_last4 and f"…{row.card_last4}")
                        if x)
        writer.writerow([spreadsheet_safe(str(cell)) for cell in (
            row.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), row.reference,
            row.status.value, row.gateway, row.gateway_transaction_id or "", row.method or "",
            card, major_string(row.amount, row.currency),
            major_string(row.amount_refunded, row.currency), row.currency, row.bill_reference,
            row.patient_name or "", row.phone or "", row.email or "", row.link_id, row.id)])
        if n % 200 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()

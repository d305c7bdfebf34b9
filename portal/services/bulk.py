"""Links in bulk: a CSV or XLSX file of bills read, every row checked, then all links made at once.

The file is read and checked in one request; the checked rows are kept server-side in a
`BulkUpload` (scoped to the lab and the uploader, expiring) so that the create step uses what
was checked, never amounts re-posted by the browser. Creation goes through `links.create_links`
for every row, in one transaction: all the links exist, or none does.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from .. import i18n
from ..i18n import staff_gettext as _s
from ..models import (
    OPEN_LINK_STATES,
    BulkUpload,
    Lab,
    LinkStatus,
    OnlinePayment,
    utcnow,
)
from ..money import MoneyError, is_known_currency, major_string, parse_amount
from ..phones import to_e164
from ..tokens import patient_url
from .audit import audit
from .links import LinkError, NewLink, create_links
from .transactions import spreadsheet_safe

MAX_ROWS = 10_000
MAX_FILE_BYTES = 5 * 1024 * 1024
# An XLSX is a zip: its parts unpacked may not exceed this (a zip bomb is refused unread).
MAX_UNPACKED_BYTES = 60 * 1024 * 1024
MAX_COLUMNS = 40
MAX_CELL = 1000  # characters of one cell kept for showing; longer ones are refused anyway
CHECKED_FOR = timedelta(hours=2)  # between the check and the create
RESULT_FOR = timedelta(hours=24)  # the result file stays downloadable this long
MAX_LIFETIME = timedelta(days=90)  # as on /links/new

# Canonical column -> the headings accepted for it (lower case, spaces and dashes as _).
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "patient", "patient_name"),
    "phone": ("phone", "mobile", "mobile_number", "phone_number"),
    "email": ("email", "e_mail", "email_address"),
    "amount": ("amount",),
    "currency": ("currency",),
    "bill_reference": ("bill_reference", "bill", "bill_ref", "bill_no", "bill_number"),
    "expiry": ("expiry", "expires", "expires_at", "expiry_date"),
    "language": ("language", "lang"),
    "description": ("description",),
    "send": ("send",),
}
REQUIRED = ("name", "amount", "bill_reference")
TEMPLATE_ROWS = [
    ["name", "phone", "email", "amount", "currency", "bill_reference", "expiry", "language",
     "description", "send"],
    ["Asha Rao", "+91 98765 43210", "asha@example.com", "1,250.50", "INR", "B-2026-0001",
     "", "hi", "Home collection", "yes"],
    ["Ravi Kumar", "98765 43211", "", "800", "", "B-2026-0002", "2026-12-31", "", "", "sms"],
]
SEND_ALL = ("sms", "email")
SEND_WORDS: dict[str, tuple[str, ...]] = {
    "yes": SEND_ALL, "y": SEND_ALL, "true": SEND_ALL, "1": SEND_ALL, "both": SEND_ALL,
    "sms+email": SEND_ALL, "email+sms": SEND_ALL, "sms,email": SEND_ALL, "email,sms": SEND_ALL,
    "sms email": SEND_ALL, "no": (), "n": (), "false": (), "0": (), "sms": ("sms",),
    "email": ("email",)}
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
EXPIRY_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                  "%d/%m/%Y %H:%M", "%d/%m/%Y")
_BY_HEADING = {heading: name for name, headings in COLUMNS.items() for heading in headings}
_LANGUAGE_NAMES = {name.lower(): code for code, name in i18n.ENGLISH_NAMES.items()}


class BulkFileError(Exception):
    """The file as a whole cannot be read; the text is for staff."""


class BulkStale(Exception):
    """Rows that were good at the check are not any more (time passed, a link appeared)."""


class Formula(str):
    """An XLSX cell holding a formula: refused, its cached value may be stale or missing."""


@dataclass
class Table:
    columns: list[str]  # canonical names by position; "" for an ignored column
    ignored: list[str]
    rows: list[tuple[int, list[str]]]  # (spreadsheet row number, cells)


@dataclass
class CheckedRow:
    number: int
    values: dict[str, str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    link: dict[str, Any] | None = None  # what create_link gets, when the row is good


# --- reading the file ---------------------------------------------------------------------------

def read_table(filename: str, data: bytes) -> Table:
    """The file's heading row and data rows; XLSX by its zip signature, CSV otherwise."""
    if not data.strip():
        raise BulkFileError(_s("The file is empty."))
    if len(data) > MAX_FILE_BYTES:
        raise BulkFileError(_s("The file is larger than %(mb)s MB. Split it into smaller files.",
                               mb=MAX_FILE_BYTES // (1024 * 1024)))
    if data[:4] == b"PK\x03\x04":
        grid = _xlsx_rows(data)
    elif filename.lower().endswith((".xlsx", ".xlsm", ".xls")):
        raise BulkFileError(_s("This is not an Excel workbook (.xlsx). Save it as .xlsx or as "
                               "CSV UTF-8."))
    else:
        grid = _csv_rows(data)
    return _table(grid)


def _csv_rows(data: bytes) -> Iterator[list[Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BulkFileError(_s("The file is not UTF-8 text. In Excel choose Save As, then "
                               "“CSV UTF-8 (Comma delimited)”.")) from None
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        yield from reader
    except csv.Error as exc:
        raise BulkFileError(_s("The CSV cannot be read near line %(line)s: %(problem)s.",
                               line=reader.line_num, problem=str(exc))) from None


def _xlsx_rows(data: bytes) -> Iterator[list[Any]]:
    """The first worksheet's cells, read-only (streamed, never evaluated)."""
    from openpyxl import load_workbook  # only uploads of workbooks pay for the import

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError):
        raise BulkFileError(_s("This workbook cannot be opened. Save it again as .xlsx or as "
                               "CSV UTF-8.")) from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise BulkFileError(_s("The workbook unpacks to more than %(mb)s MB. Save only the "
                               "rows of links, as CSV UTF-8.",
                               mb=MAX_UNPACKED_BYTES // (1024 * 1024)))
    try:
        # data_only=False: formula cells are seen as formulas (and refused), not run or trusted.
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception:  # openpyxl raises many kinds on a damaged or foreign zip
        raise BulkFileError(_s("This workbook cannot be opened. Save it again as .xlsx or as "
                               "CSV UTF-8.")) from None
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            return
        for row in sheet.iter_rows(max_col=MAX_COLUMNS):
            yield [_xlsx_value(cell) for cell in row]
    except BulkFileError:
        raise
    except Exception:
        raise BulkFileError(_s("This workbook cannot be read. Save it again as .xlsx or as "
                               "CSV UTF-8.")) from None
    finally:
        book.close()


def _xlsx_value(cell: Any) -> str:
    value = getattr(cell, "value", None)
    if getattr(cell, "data_type", None) == "f":
        return Formula(str(value))
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(Decimal(repr(value)), "f")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return str(value)


def _heading(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(text).strip().lower())


def _table(grid: Iterable[list[Any]]) -> Table:
    rows: list[tuple[int, list[str]]] = []
    columns: list[str] | None = None
    ignored: list[str] = []
    for number, cells in enumerate(grid, start=1):
        cells = list(cells)[:MAX_COLUMNS]
        if not any(str(c).strip() for c in cells):
            continue  # blank lines, and Excel's trailing ",,,,"
        if columns is None:
            columns, ignored = _columns(cells)
            continue
        if len(rows) >= MAX_ROWS:
            raise BulkFileError(_s("The file has more than %(max)s rows. Split it into smaller "
                                   "files.", max=f"{MAX_ROWS:,}"))
        rows.append((number, cells))
    if columns is None:
        raise BulkFileError(_s("The file is empty."))
    if not rows:
        raise BulkFileError(_s("The file has a heading row but no rows of bills."))
    return Table(columns=columns, ignored=ignored, rows=rows)


def _columns(cells: list[Any]) -> tuple[list[str], list[str]]:
    columns: list[str] = []
    ignored: list[str] = []
    for cell in cells:
        name = _BY_HEADING.get(_heading(cell), "")
        if name and name in columns:
            raise BulkFileError(_s("The column “%(column)s” appears twice.", column=name))
        if not name and str(cell).strip():
            ignored.append(_shown(str(cell))[:60])
        columns.append(name)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BulkFileError(_s("The first row must name the columns; missing: %(missing)s. "
                               "Download the template to see them.",
                               missing=", ".join(missing)))
    if "phone" not in columns and "email" not in columns:
        raise BulkFileError(_s("Add a phone or an email column: each link goes to a patient."))
    return columns, ignored


def _shown(text: str) -> str:
    """A cell as it may be stored and shown: control characters made visible as �."""
    return CONTROL.sub("\ufffd", text)[:MAX_CELL]


# --- checking the rows -------------------------------------------------------------------------

def check_table(session: Session, lab: Lab, table: Table, *, now: datetime | None = None
                ) -> list[CheckedRow]:
    """Every row checked on its own, then bill references against each other and the lab's."""
    now = now or utcnow()
    checked = [_check_row(lab, number, dict(zip(table.columns, cells, strict=False)), now)
               for number, cells in table.rows]
    seen: dict[str, int] = {}
    for row in checked:
        reference = row.values.get("bill_reference", "").strip().lower()
        if not reference:
            continue
        if reference in seen:
            row.errors.append(("bill_reference", _s("Same bill reference as row %(row)s.",
                                                    row=seen[reference])))
        else:
            seen[reference] = row.number
    _flag_existing(session, lab, checked, now)
    for row in checked:
        if row.errors:
            row.link = None
    return checked


def _check_row(lab: Lab, number: int, raw: dict[str, Any], now: datetime) -> CheckedRow:
    values = {name: _shown(str(value)).strip() for name, value in raw.items() if name}
    row = CheckedRow(number=number, values=values)
    errors = row.errors
    for name, value in raw.items():
        if not name:
            continue
        if isinstance(value, Formula):
            errors.append((name, _s("This cell holds a formula. Type or paste the value "
                                    "instead (formulas are not read).")))
        elif CONTROL.search(str(value)):
            errors.append((name, _s("Contains control characters.")))
        elif len(str(value)) > MAX_CELL:
            errors.append((name, _s("Too long.")))
    bad = {name for name, _ in errors}

    def text(name: str, max_len: int, required: str | None = None) -> str:
        if name in bad:
            return ""
        value = values.get(name, "")
        if name != "description" and ("\n" in value or "\r" in value):
            errors.append((name, _s("Must be on one line.")))
            return ""
        if not value and required:
            errors.append((name, required))
        elif len(value) > max_len:
            errors.append((name, _s("At most %(max)s characters.", max=max_len)))
            return ""
        return value

    name = text("name", 200, _s("Enter the patient's name."))
    phone_text = text("phone", 30)
    email_text = text("email", 254)
    phone = email = None
    if phone_text:
        phone = to_e164(phone_text, lab.country)
        if phone is None:
            errors.append(("phone", _s("Enter a valid mobile number.")))
    if email_text:
        try:
            email = validate_email(email_text, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            errors.append(("email", _s("Enter a valid email address.")))
    if not phone_text and not email_text and "phone" not in bad and "email" not in bad:
        errors.append(("phone" if "phone" in raw else "email",
                       _s("Enter a mobile number or an email to send the link to.")))
    currency = (text("currency", 3) or lab.currency).upper()
    if not is_known_currency(currency):
        errors.append(("currency", _s("Not a currency code; use one like INR or USD.")))
    amount = None
    amount_text = text("amount", 30, _s("Enter an amount."))
    if amount_text and "currency" not in {n for n, _ in errors}:
        try:
            amount = parse_amount(amount_text, currency)
        except MoneyError as exc:
            errors.append(("amount", str(exc)))
    bill = text("bill_reference", 100, _s("Enter the bill reference."))
    description = text("description", 500)
    expires_at = _expiry(lab, text("expiry", 40), now, errors)
    language = None
    language_text = text("language", 40)
    if language_text:
        language = i18n.normalize(language_text) or _LANGUAGE_NAMES.get(language_text.lower())
        if language is None:
            errors.append(("language", _s("One of: %(codes)s.", codes=", ".join(i18n.LANGUAGES))))
    send: list[str] | None = None
    send_text = text("send", 20).lower()
    if send_text:
        if send_text not in SEND_WORDS:
            errors.append(("send", _s("Write yes, no, sms, email or both.")))
        else:
            send = list(SEND_WORDS[send_text])
            if send_text in ("sms", "email") and not (phone if send_text == "sms" else email):
                errors.append(("send", _s("There is no %(contact)s to send to.",
                                          contact=_s("mobile number") if send_text == "sms"
                                          else _s("email"))))
    if not errors and amount is not None and expires_at is not None:
        row.link = {"name": name, "phone": phone, "email": email, "amount": amount,
                    "currency": currency, "bill_reference": bill, "description": description,
                    "expires_at": expires_at.isoformat(), "language": language, "send": send}
    return row


def _expiry(lab: Lab, text: str, now: datetime, errors: list[tuple[str, str]]
            ) -> datetime | None:
    """In the lab's time zone; a date alone is the end of that day; empty: the lab's default."""
    if not text:
        return now + timedelta(hours=lab.default_expiry_hours)
    zone = ZoneInfo(lab.timezone)
    local: datetime | None = None
    try:
        day = date.fromisoformat(text)
        local = datetime.combine(day, time(23, 59), tzinfo=zone)
    except ValueError:
        for pattern in EXPIRY_FORMATS:
            try:
                parsed = datetime.strptime(text, pattern)
            except ValueError:
                continue
            if pattern == "%d/%m/%Y":
                parsed = parsed.replace(hour=23, minute=59)
            local = parsed.replace(tzinfo=zone)
            break
    if local is None:
        errors.append(("expiry", _s("Write the expiry as 2026-12-31 or 2026-12-31 18:00.")))
        return None
    if local <= now:
        errors.append(("expiry", _s("The expiry must be in the future.")))
        return None
    if local - now > MAX_LIFETIME:
        errors.append(("expiry", _s("A link can stay open for at most 90 days.")))
        return None
    return local


def _flag_existing(session: Session, lab: Lab, rows: list[CheckedRow], now: datetime) -> None:
    """Bill references that already have a live or paid link in this lab."""
    wanted = {r.values["bill_reference"].strip().lower(): r for r in rows
              if r.values.get("bill_reference", "").strip()}
    existing = existing_references(session, lab.id, list(wanted), now)
    for reference, link_id in existing.items():
        row = wanted.get(reference)
        if row is not None:
            row.errors.append(("bill_reference",
                               _s("This bill already has a link (#%(id)s).", id=link_id)))


def existing_references(session: Session, lab_id: int, references: Sequence[str],
                        now: datetime) -> dict[str, int]:
    """Lower-cased bill reference -> id of the lab's open or paid link for it."""
    found: dict[str, int] = {}
    lower = func.lower(OnlinePayment.bill_reference)
    live = or_(OnlinePayment.status == LinkStatus.PAID,
               OnlinePayment.status.in_(tuple(OPEN_LINK_STATES))
               & (OnlinePayment.expires_at > now))
    for start in range(0, len(references), 500):
        chunk = list(references[start:start + 500])
        for reference, link_id in session.execute(
                select(lower, func.min(OnlinePayment.id))
                .where(OnlinePayment.lab_id == lab_id, lower.in_(chunk), live)
                .group_by(lower)):
            found[reference] = link_id
    return found


# --- keeping the checked file ------------------------------------------------------------------

def save_upload(session: Session, lab: Lab, user_id: int, filename: str,
                rows: list[CheckedRow], *, now: datetime | None = None) -> BulkUpload:
    """Stores the checked rows under a random id; drops everyone's expired uploads."""
    now = now or utcnow()
    upload = BulkUpload(
        public_id=secrets.token_urlsafe(32), lab_id=lab.id, user_id=user_id,
        filename=_shown(filename)[:255], row_count=len(rows),
        bad_count=sum(1 for r in rows if r.errors),
        rows=[{"n": r.number, "values": r.values, "errors": r.errors, "link": r.link}
              for r in rows],
        created_at=now, expires_at=now + CHECKED_FOR)
    session.add(upload)
    session.flush()
    session.execute(delete(BulkUpload).where(BulkUpload.expires_at < now))
    return upload


def get_upload(session: Session, lab_id: int, user_id: int, public_id: str, *,
               now: datetime | None = None) -> BulkUpload | None:
    """The uploader's own upload in this lab, while it lasts; anyone else's is not found."""
    if not public_id or len(public_id) > 64:
        return None
    return session.scalar(select(BulkUpload).where(
        BulkUpload.public_id == public_id, BulkUpload.lab_id == lab_id,
        BulkUpload.user_id == user_id, BulkUpload.expires_at > (now or utcnow())))


# --- creating the links ------------------------------------------------------------------------

def new_link(lab: Lab, data: dict[str, Any], default_send: Iterable[str]) -> NewLink:
    send = data["send"] if data.get("send") is not None else list(default_send)
    channels = tuple(c for c in SEND_ALL if c in send
                     and data["phone" if c == "sms" else "email"])
    return NewLink(patient_name=data["name"], phone=data["phone"], email=data["email"],
                   amount=data["amount"], currency=data["currency"],
                   bill_reference=data["bill_reference"], description=data["description"],
                   expires_at=datetime.fromisoformat(data["expires_at"]), notify=channels,
                   language=data["language"])


def create_many(session: Session, lab: Lab, items: Sequence[NewLink], *, user_id: int | None,
                ip: str | None = None) -> list[OnlinePayment]:
    """Every link as create_link makes it, in the caller's transaction (all or none), in a
    number of statements that does not grow with the rows'."""
    return create_links(session, lab, items, user_id=user_id, ip=ip)


def create_from_upload(session: Session, lab: Lab, upload: BulkUpload, *, drop_bad: bool,
                       default_send: Iterable[str], user_id: int,
                       ip: str | None = None, now: datetime | None = None) -> int:
    """Makes the good rows' links (the bad ones only when `drop_bad`); returns how many.

    Raises LinkError when there is nothing to do or bad rows are not to be dropped, BulkStale
    (after recording the new problems on the upload) when a row went bad since the check.
    The caller commits; a failure half way leaves nothing, as the caller rolls back.
    """
    now = now or utcnow()
    if upload.completed_at is not None:
        raise LinkError(_s("These links were created already."))
    _recheck(session, lab, upload, now)
    if upload.bad_count and not drop_bad:
        raise LinkError(_s("Some rows have problems: correct the file, or drop those rows."))
    good = [row for row in upload.rows if row["link"] is not None]
    if not good:
        raise LinkError(_s("No row can be created."))
    # The claim: a second press of Create (or another tab) finds the upload completed.
    claimed = session.execute(update(BulkUpload).where(
        BulkUpload.id == upload.id, BulkUpload.completed_at.is_(None)).values(
        completed_at=now, expires_at=now + RESULT_FOR)).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        raise LinkError(_s("These links were created already."))
    send = tuple(default_send)
    links = create_many(session, lab, [new_link(lab, row["link"], send) for row in good],
                        user_id=user_id, ip=ip)
    created = {row["n"]: link.id for row, link in zip(good, links, strict=True)}
    upload.results = [
        {"n": row["n"], "link_id": created[row["n"]]} if row["n"] in created else
        {"n": row["n"], "name": row["values"].get("name", ""),
         "bill_reference": row["values"].get("bill_reference", ""),
         "errors": "; ".join(f"{column}: {message}" for column, message in row["errors"])}
        for row in upload.rows]
    upload.rows = []  # the patients' details are in the links now; keep only the outcome
    audit(session, lab_id=lab.id, user_id=user_id, action="links.bulk_create",
          object_type="bulk_upload", object_id=upload.id, ip=ip, created=len(links),
          dropped=upload.row_count - len(links), filename=upload.filename)
    return len(links)


def _recheck(session: Session, lab: Lab, upload: BulkUpload, now: datetime) -> None:
    """What may have changed since the check: expiry passed, a link for the bill appeared."""
    rows = [CheckedRow(number=r["n"], values=r["values"], errors=[tuple(e) for e in r["errors"]],
                       link=r["link"]) for r in upload.rows]
    changed = False
    for row in rows:
        if row.link and datetime.fromisoformat(row.link["expires_at"]) <= now:
            row.errors.append(("expiry", _s("The expiry has passed since the check.")))
    good = [(r, r.link["bill_reference"].lower()) for r in rows if r.link and not r.errors]
    existing = existing_references(session, lab.id, [reference for _, reference in good], now)
    for row, reference in good:
        link_id = existing.get(reference)
        if link_id is not None:
            row.errors.append(("bill_reference",
                               _s("This bill already has a link (#%(id)s).", id=link_id)))
    for row in rows:
        if row.errors and row.link is not None:
            row.link = None
            changed = True
    if changed:
        upload.rows = [{"n": r.number, "values": r.values, "errors": r.errors, "link": r.link}
                       for r in rows]
        upload.bad_count = sum(1 for r in rows if r.errors)
        raise BulkStale()


# --- files handed to staff ---------------------------------------------------------------------

def template_csv() -> str:
    out = io.StringIO()
    out.write("\ufeff")  # Excel then reads the file as UTF-8
    csv.writer(out).writerows(TEMPLATE_ROWS)
    return out.getvalue()


def result_csv(session: Session, lab: Lab, upload: BulkUpload, base_url: str) -> str:
    """One line per row of the file: its link's id and address, or why it was not created."""
    results = upload.results or []
    ids = [r["link_id"] for r in results if "link_id" in r]
    links: dict[int, OnlinePayment] = {}
    for start in range(0, len(ids), 500):
        links.update((link.id, link) for link in session.scalars(
            select(OnlinePayment).options(selectinload(OnlinePayment.customer))
            .where(OnlinePayment.lab_id == lab.id,
                   OnlinePayment.id.in_(ids[start:start + 500]))))
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["row", "result", "link_id", "url", "name", "bill_reference", "amount",
                     "currency", "expires_at", "problems"])
    zone = ZoneInfo(lab.timezone)
    for result in results:
        link = links.get(result.get("link_id", 0))
        if link is not None:
            cells = [result["n"], "created", link.id, patient_url(base_url, link.token),
                     link.customer.name if link.customer else "", link.bill_reference,
                     major_string(link.amount, link.currency), link.currency,
                     link.expires_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"), ""]
        else:
            cells = [result["n"], "not created", "", "", result.get("name", ""),
                     result.get("bill_reference", ""), "", "", "", result.get("errors", "")]
        writer.writerow([spreadsheet_safe(str(cell)) for cell in cells])
    return out.getvalue()


def problems_csv(upload: BulkUpload) -> str:
    """Every problem of the checked file: row, column, message and the cell as it was."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["row", "column", "problem", "value"])
    for row in upload.rows:
        for column, message in row["errors"]:
            writer.writerow([spreadsheet_safe(str(cell)) for cell in (
                row["n"], column, message, row["values"].get(column, ""))])
    return out.getvalue()


def duplicate_references(references: Sequence[str | None]) -> dict[int, int]:
    """Index -> index of the first item with the same bill reference (case-insensitive)."""
    first: dict[str, int] = {}
    duplicates: dict[int, int] = {}
    for index, reference in enumerate(references):
        if not reference:
            continue
        key = reference.strip().lower()
        if key in first:
            duplicates[index] = first[key]
        else:
            first[key] = index
    return duplicates

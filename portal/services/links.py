"""Payment links: creation, lookup scoped to a lab, cancellation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..models import (
    OPEN_LINK_STATES,
    Customer,
    Lab,
    LinkStatus,
    OnlinePayment,
    PaymentGatewayTransaction,
    utcnow,
)
from ..tokens import new_token
from ..worker.queue import IN_CHUNK
from . import events
from .audit import audit, audit_rows
from .cancellation import queue_checkout_cancellation
from .notifications import queue_link_messages, schedule_reminders_for
from .outhooks import emit_many
from .search import escaped, looks_like_phone, phone_matches

PAGE_SIZE = 25
MAX_QUERY = 100
NEWER = 2 ** 62  # a record made in this batch is newer than every stored one
CANDIDATES = 10  # a contact's newest patients a new link may go under (families share phones)



@dataclass(frozen=True)
class NewLink:
    patient_name: str
    phone: str | None
    email: str | None
    amount: int
    currency: str
    bill_reference: str
    description: str
    expires_at: datetime
    allow_partial: bool = False
    external_id: str | None = None
    gateway: str | None = None
    notify: tuple[str, ...] = ()  # "email", "sms": send the link now
    language: str | None = None  # the patient's (i18n.LANGUAGES); None: the lab's default
    # Which patient record the link goes under (see `patient_for`):
    customer_id: int | None = None  # staff chose this patient of the lab ("same person")
    rename_customer: bool = False  # ...and asked to change that record's name to patient_name
    new_patient: bool = False  # staff chose "new patient": a record of its own, same phone
    ask_if_other_name: bool = False  # a contact on another name raises PatientChoiceNeeded
    metadata: dict[str, Any] | None = None  # the API's, shown back with the link


class LinkError(Exception):
    pass


class PatientChoiceNeeded(LinkError):
    """The phone or email belongs to patients of the lab with other names: staff choose."""

    def __init__(self, candidates: list[Customer]):
        super().__init__("This mobile number or email belongs to another patient.")
        self.candidates = candidates


def same_name(a: str, b: str) -> bool:
    """"Ravi  kumar" is "Ravi Kumar": case and spacing aside."""
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def patients_with_contact(session: Session, lab_id: int, phone: str | None,
                          email: str | None, limit: int = 10) -> list[Customer]:
    """The lab's patients with this phone or email, newest first (families share phones)."""
    keys = []
    if phone:
        keys.append(Customer.phone == phone)
    if email:
        keys.append(Customer.email == email)
    if not keys:
        return []
    return list(session.scalars(select(Customer).where(Customer.lab_id == lab_id, or_(*keys))
                                .order_by(Customer.id.desc()).limit(limit)))


def patient_for(session: Session, lab_id: int, data: NewLink) -> Customer:
    """The patient record a new link goes under; an existing record is never silently changed.

    In order: the record staff chose (renamed only when asked); a new record when staff said
    "new patient"; the lab's own patient id; a record with the same contact *and* the same
    name; otherwise a new record with this contact, unless `ask_if_other_name` and the contact
    is already on another name, which raises PatientChoiceNeeded for staff to choose.
    """
    return patients_for(session, lab_id, [data])[0]


# Built once: constructing a statement costs about as much as running it.
_NEWEST_BY_EXTERNAL_ID = (select(Customer).where(
    Customer.lab_id == bindparam("lab_id"), Customer.external_id == bindparam("external_id"))
    .order_by(Customer.id.desc()).limit(1))
_NEWEST_BY_CONTACT = (select(Customer).where(
    Customer.lab_id == bindparam("lab_id"),
    or_(Customer.phone == bindparam("phone"), Customer.email == bindparam("email")))
    .order_by(Customer.id.desc()).limit(CANDIDATES))


class _Patients:
    """The lab's patients a batch may go under, read in a few queries and kept indexed by
    contact, so that each item is matched as `patient_for` alone would: against the records
    before it and those the items before it made or completed."""

    def __init__(self, session: Session, lab_id: int, items: Sequence[NewLink]):
        self.lab_id = lab_id
        self.session = session
        self.by_phone: dict[str, list[Customer]] = {}
        self.by_email: dict[str, list[Customer]] = {}
        self.by_external: dict[str, list[Customer]] = {}
        self.made: dict[int, int] = {}  # id(new record) -> its rank after every stored one
        chosen = {d.customer_id for d in items if d.customer_id is not None}
        self.chosen = {c.id: c for c in self._read([(Customer.id, chosen)])}
        looked = [d for d in items if d.customer_id is None and not d.new_patient]
        if len(looked) == 1:
            found = self._read_for_one(looked[0])
        else:
            found = self._read([
                (Customer.phone, {d.phone for d in looked if d.phone}),
                (Customer.email, {d.email for d in looked if d.email}),
                (Customer.external_id, {d.external_id for d in looked if d.external_id})])
        for customer in found:
            self._index(customer)

    def _read_for_one(self, data: NewLink) -> list[Customer]:
        """Only what `one_for` can pick for a lone item: the newest record with its patient id
        and the newest CANDIDATES with its phone or email. Reading every record on a shared
        number (a family's, a clinic's desk phone) made each link slower than the last."""
        found: list[Customer] = []
        if data.external_id:
            found.extend(self.session.scalars(_NEWEST_BY_EXTERNAL_ID, {
                "lab_id": self.lab_id, "external_id": data.external_id}))
        if data.phone or data.email:  # a missing one is NULL, which equals nothing
            found.extend(self.session.scalars(_NEWEST_BY_CONTACT, {
                "lab_id": self.lab_id, "phone": data.phone, "email": data.email}))
        return found

    def _read(self, keys: list[tuple[Any, set[Any]]]) -> list[Customer]:
        """The lab's records with any of these values in these columns (IN lists chunked)."""
        found: list[Customer] = []
        lists = [(column, sorted(values)) for column, values in keys if values]
        longest = max((len(values) for _, values in lists), default=0)
        for start in range(0, longest, IN_CHUNK):
            wanted = [column.in_(values[start:start + IN_CHUNK])
                      for column, values in lists if values[start:start + IN_CHUNK]]
            found.extend(self.session.scalars(select(Customer).where(
                Customer.lab_id == self.lab_id, or_(*wanted))))
        return found

    def _index(self, customer: Customer) -> None:
        for index, key in ((self.by_phone, customer.phone), (self.by_email, customer.email),
                           (self.by_external, customer.external_id)):
            if key:
                listed = index.setdefault(key, [])
                if not any(c is customer for c in listed):
                    listed.append(customer)

    def _newest_first(self, customers: Iterable[Customer]) -> list[Customer]:
        unique = {id(c): c for c in customers}.values()
        return sorted(unique, key=lambda c: self.made.get(id(c), c.id), reverse=True)

    def _fill(self, customer: Customer, phone: str | None, email: str | None) -> None:
        customer.phone = customer.phone or phone  # an empty detail is filled, none replaced
        customer.email = customer.email or email
        self._index(customer)

    def one_for(self, data: NewLink) -> Customer:
        name, phone, email = data.patient_name, data.phone, data.email
        if data.customer_id is not None:
            customer = self.chosen.get(data.customer_id)
            if customer is None:
                raise LinkError("That patient is not one of this lab's.")
            if data.rename_customer and name:
                customer.name = name
            self._fill(customer, phone, email)
            return customer
        if not data.new_patient:
            if data.external_id:
                found = self._newest_first(self.by_external.get(data.external_id, []))
                if found:
                    return found[0]
            candidates = self._newest_first(
                [*self.by_phone.get(phone or "", []), *self.by_email.get(email or "", [])]
            )[:CANDIDATES]
            for candidate in candidates:
                if same_name(candidate.name, name):
                    self._fill(candidate, phone, email)
                    return candidate
            if candidates and data.ask_if_other_name:
                raise PatientChoiceNeeded(candidates)
        customer = Customer(lab_id=self.lab_id, name=name, phone=phone, email=email,
                            external_id=data.external_id)
        self.session.add(customer)
        self.made[id(customer)] = NEWER + len(self.made)
        self._index(customer)
        return customer


def patients_for(session: Session, lab_id: int, items: Sequence[NewLink]) -> list[Customer]:
    """`patient_for` of each item in turn, the lab's records read in a few queries."""
    patients = _Patients(session, lab_id, items)
    return [patients.one_for(data) for data in items]


def create_link(session: Session, lab: Lab, data: NewLink, *, user_id: int | None,
                ip: str | None = None) -> OnlinePayment:
    """Makes a link (and its patient record when new) and queues its messages; caller commits.

    Raises LinkError, or PatientChoiceNeeded when `data.ask_if_other_name` and staff must
    choose between an existing patient and a new one.
    """
    return create_links(session, lab, [data], user_id=user_id, ip=ip)[0]


def create_links(session: Session, lab: Lab, items: Sequence[NewLink], *, user_id: int | None,
                 ip: str | None = None) -> list[OnlinePayment]:
    """`create_link` for each item, in order, with a number of statements that does not grow
    with the items': patients read by contact together, every kind of row added together
    (batched INSERTs), the lab's webhook endpoints read once. The caller commits all or none.
    """
    now = utcnow()
    if any(data.expires_at <= now for data in items):
        raise LinkError("The expiry must be in the future.")
    customers = patients_for(session, lab.id, items)
    links = [OnlinePayment(
        lab_id=lab.id, token=new_token(), amount=data.amount, currency=data.currency.upper(),
        bill_reference=data.bill_reference, description=data.description, customer=customer,
        patient_name=data.patient_name, patient_phone=data.phone, patient_email=data.email,
        gateway=data.gateway or lab.default_gateway, expires_at=data.expires_at,
        allow_partial=data.allow_partial, created_by_id=user_id, status=LinkStatus.CREATED,
        language=data.language or lab.default_language, metadata_json=data.metadata or {},
    ) for data, customer in zip(items, customers, strict=True)]
    session.add_all(links)
    session.flush()
    for link in links:
        set_committed_value(link, "payments", [])  # new: none to read back
    audit_rows(session, [{
        "lab_id": lab.id, "user_id": user_id, "action": "link.create",
        "object_type": "online_payment", "object_id": link.id, "ip": ip,
        "detail": {"amount": link.amount, "currency": link.currency,
                   "bill_reference": link.bill_reference, "customer_id": customer.id,
                   "patient_renamed": data.customer_id is not None and data.rename_customer}}
        for link, data, customer in zip(links, items, customers, strict=True)])
    # the outbox and the lab's webhooks: same transaction
    queue_link_messages(session, [(link, data.notify) for link, data in zip(links, items,
                                                                            strict=True)])
    schedule_reminders_for(session, lab, links)
    emit_many(session, links, "link.created")
    for link in links:  # read afresh from here on: payments may be added by id, not by list
        session.expire(link, ["payments"])
    return links


def get_link(session: Session, lab_id: int, link_id: int) -> OnlinePayment | None:
    """A link of this lab only: another lab's id is simply not found."""
    return session.scalar(select(OnlinePayment).where(OnlinePayment.id == link_id,
                                                      OnlinePayment.lab_id == lab_id))


# Built once: constructing the statement cost as much as running it.
_BY_TOKEN = (select(OnlinePayment).where(OnlinePayment.token == bindparam("token"))
             .options(joinedload(OnlinePayment.lab), joinedload(OnlinePayment.payments)))


def get_link_by_token(session: Session, token: str) -> OnlinePayment | None:
    """The link with its lab and payments, in one query: everything a patient's page shows."""
    if not token or len(token) > 64:
        return None
    return session.scalars(_BY_TOKEN, {"token": token}).unique().first()


def link_matches(text: str, country: str | None) -> ColumnElement[bool]:
    """How a search finds links, by the text's shape, on the details kept on each link.

    A bill reference by its start, any case (the lower(bill_reference) index); a whole mobile
    number in E.164 (index on lab and phone). Text with no digit is also looked for anywhere
    in the patient's name, and a part of a number anywhere in the phone: those read the lab's
    own links only (its lab_id index), never the whole table.
    """
    lowered = escaped(text.lower())
    matches: list[ColumnElement[bool]] = [
        func.lower(OnlinePayment.bill_reference).like(lowered + "%", escape="\\")]
    if looks_like_phone(text):
        matches += phone_matches(OnlinePayment.patient_phone, text, country)
    elif not any(ch.isdigit() for ch in text):  # a digit: a bill reference, not a name
        matches.append(func.lower(OnlinePayment.patient_name).like(f"%{lowered}%",
                                                                   escape="\\"))
    return or_(*matches)


def list_links(session: Session, lab_id: int, *, status: LinkStatus | None = None,
               before_id: int | None = None, now: datetime | None = None,
               query: str | None = None, country: str | None = None,
               limit: int = PAGE_SIZE) -> tuple[list[OnlinePayment], int | None]:
    """Newest first, keyset-paginated on id; returns the page and the cursor for the next.

    `query` finds a patient's name, mobile number or a bill reference (`link_matches`).
    """
    now = now or utcnow()
    query_text = (query or "").strip()[:MAX_QUERY]
    statement = select(OnlinePayment).where(OnlinePayment.lab_id == lab_id)
    if query_text:
        statement = statement.where(link_matches(query_text, country))
    open_states = tuple(OPEN_LINK_STATES)
    if status == LinkStatus.EXPIRED:  # stored as expired, or open but past its expiry
        statement = statement.where(or_(OnlinePayment.status == LinkStatus.EXPIRED,
                                        (OnlinePayment.status.in_(open_states))
                                        & (OnlinePayment.expires_at <= now)))
    elif status in OPEN_LINK_STATES:
        statement = statement.where(OnlinePayment.status == status,
                                    OnlinePayment.expires_at > now)
    elif status is not None:
        statement = statement.where(OnlinePayment.status == status)
    if before_id:
        statement = statement.where(OnlinePayment.id < before_id)
    rows = list(session.scalars(statement.order_by(OnlinePayment.id.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def timeline(session: Session, link: OnlinePayment) -> list[PaymentGatewayTransaction]:
    return list(session.scalars(select(PaymentGatewayTransaction)
                                .where(PaymentGatewayTransaction.lab_id == link.lab_id,
                                       PaymentGatewayTransaction.online_payment_id == link.id)
                                .order_by(PaymentGatewayTransaction.id.desc())))


def cancel_link(session: Session, link: OnlinePayment, *, user_id: int | None,
                ip: str | None = None) -> None:
    """Cancels an open link; an expired or settled one cannot be cancelled."""
    link = events.lock_link(session, link.id)
    if link.effective_status() not in OPEN_LINK_STATES:
        raise LinkError(f"This link is {link.effective_status().replace('_', ' ')} "
                        "and can no longer be cancelled.")
    events.cancel_link(link, user_id=user_id)
    audit(session, lab_id=link.lab_id, user_id=user_id, action="link.cancel",
          object_type="online_payment", object_id=link.id, ip=ip)
    queue_checkout_cancellation(session, link)


"""create_links: a batch costs a bounded number of statements, and matches patients exactly as
making its links one at a time (create_link) would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from portal.models import (
    AuditLog,
    Customer,
    Job,
    Notification,
    OnlinePayment,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from portal.services.keys import encrypt
from portal.services.links import NewLink, create_link, create_links

MOST_STATEMENTS = 25  # whatever the number of rows (up to the IN and INSERT page sizes)


@pytest.fixture
def session(app):
    with Session(app.extensions["portal_db"].engine) as session:
        yield session


def busy_lab(build, app, slug: str):
    """Reminders, an endpoint wanting link.created, patients already on file."""
    lab = build.lab(slug, reminder_hours_before=[24, 2])
    with Session(app.extensions["portal_db"].engine) as session:
        session.add(WebhookEndpoint(
            lab_id=lab.id, url="https://lis.example/hooks", description="", enabled=True,
            event_types=["link.created"],
            secret_encrypted=encrypt(app.config["PORTAL_ENCRYPTION_KEYS"], {"secret": "s"})))
        session.add_all([Customer(lab_id=lab.id, name="Patient 1", phone="+919800000001"),
                         Customer(lab_id=lab.id, name="Asha Rao", phone="+919800000002"),
                         Customer(lab_id=lab.id, name="Patient 3", email="p3@example.com"),
                         Customer(lab_id=lab.id, name="Lab Own", external_id="MRN-7")])
        session.commit()
    return lab


def items(n: int) -> list[NewLink]:
    expires = utcnow() + timedelta(days=7)
    return [NewLink(patient_name=f"Patient {i}", phone=f"+9198{i:08d}",
                    email=f"p{i}@example.com", amount=1000 + i, currency="inr",
                    bill_reference=f"B-{i}", description="", expires_at=expires,
                    notify=("sms", "email")) for i in range(1, n + 1)]


def statements_for(session: Session, lab, batch: list[NewLink]) -> list[str]:
    seen: list[str] = []
    engine = session.get_bind()

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        create_links(session, session.merge(lab), batch, user_id=None)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return seen


def check_rows(session: Session, lab, n: int) -> None:
    def rows(model, *where):
        return session.scalar(select(func.count()).select_from(model).where(
            model.lab_id == lab.id, *where))

    assert rows(OnlinePayment) == n and rows(AuditLog) == n
    assert rows(Notification) == 2 * n  # an SMS and an email each
    assert rows(Job, Job.kind == "notification.send") == 2 * n
    assert rows(Job, Job.kind == "notification.reminder") == 2 * n  # 24 h and 2 h before
    assert rows(WebhookDelivery) == n and rows(Job, Job.kind == "webhook.deliver") == n
    # patients 1 and 3 were on file under the same name; patient 2's phone is Asha Rao's
    assert rows(Customer) == 4 + n - 2


def test_a_batch_reads_and_writes_in_the_same_few_statements_for_20_or_200_links(
        build, app, session):
    """On SQLite, SQLAlchemy sends an INSERT per row (in-process, no round trip; RETURNING
    order is not guaranteed there): the reads and updates, and the kinds of INSERT, are
    counted. tests/postgres/test_links_batch_pg.py counts every statement."""
    few = statements_for(session, busy_lab(build, app, "few"), items(20))
    lab = busy_lab(build, app, "many")
    many = statements_for(session, lab, items(200))

    def reads(seen):
        return [s for s in seen if not s.startswith("INSERT")]

    assert len(reads(many)) == len(reads(few)) <= MOST_STATEMENTS
    assert {s for s in many if s.startswith("INSERT")} == {
        s for s in few if s.startswith("INSERT")}
    check_rows(session, lab, 200)


def test_a_batch_matches_patients_as_one_link_at_a_time_would(build, app, session):
    expires = utcnow() + timedelta(days=7)

    def new(name, phone=None, email=None, **choice):
        return NewLink(patient_name=name, phone=phone, email=email, amount=500,
                       currency="INR", bill_reference=f"R-{name}", description="",
                       expires_at=expires, **choice)

    batch = [
        new("Patient 1", "+919800000001"),  # on file: same phone, same name
        new("patient  1", "+919800000001", "one@example.com"),  # the same, email filled
        new("Someone", email="one@example.com"),  # found by the email just filled? no: name
        new("Ravi Rao", "+919800000002"),  # Asha's phone, another name: a family member
        new("ravi rao", "+919800000002"),  # ...the record the row before made
        new("Ravi Rao", "+919800000002", new_patient=True),  # staff said: a new patient
        new("RAVI RAO", "+919800000002"),  # the newest record of that name and phone
        new("Patient 3", "+919800000003", "p3@example.com"),  # on file by email
        new("Patient 3", "+919800000003"),  # found now by the phone filled just before
        new("Other", external_id="MRN-7"),  # the lab's own patient id wins
        new("New One", external_id="MRN-8"),
        new("New One again", external_id="MRN-8"),  # the record the row before made
    ]

    def outcome(slug, make):
        lab = busy_lab(build, app, slug)
        with Session(app.extensions["portal_db"].engine) as s:
            made = make(s, s.merge(lab))
            s.commit()
            first = min(c.id for c in s.scalars(select(Customer).where(
                Customer.lab_id == lab.id)))
            return [(link.customer_id - first, link.customer.name, link.customer.phone,
                     link.customer.email, link.customer.external_id) for link in made]

    together = outcome("together", lambda s, lab: create_links(s, lab, batch, user_id=None))
    one_by_one = outcome("alone", lambda s, lab: [create_link(s, lab, data, user_id=None)
                                                  for data in batch])
    assert together == one_by_one
    assert together[0][0] == together[1][0] == 0 and together[1][3] == "one@example.com"
    assert together[3][0] == together[4][0] != together[5][0] == together[6][0]
    assert together[7][0] == together[8][0] == 2 and together[8][2] == "+919800000003"
    assert together[9][0] == 3 and together[9][1] == "Lab Own"
    assert together[10][0] == together[11][0]


def test_one_link_reads_only_the_newest_patients_on_its_number(build, app, session):
    """A desk phone shared by 30 patients: a link reads the 10 it may go under, not all 30,
    and still goes under the newest of them with its name."""
    lab = build.lab("desk")
    phone = "+919811111111"
    session.add_all([Customer(lab_id=lab.id, name=f"Walk-in {i}", phone=phone)
                     for i in range(30)])
    session.commit()
    expires = utcnow() + timedelta(days=7)

    def link_for(name):
        loaded = []

        def count(target, _context):
            loaded.append(target)

        with Session(app.extensions["portal_db"].engine) as s:
            event.listen(Customer, "load", count)
            try:
                link = create_link(s, s.merge(lab), NewLink(
                    patient_name=name, phone=phone, email=None, amount=500, currency="INR",
                    bill_reference=f"D-{name}", description="", expires_at=expires),
                    user_id=None)
            finally:
                event.remove(Customer, "load", count)
            s.commit()
            return link.customer.name, len(loaded)

    assert link_for("walk-in 25") == ("Walk-in 25", 10)  # among the newest ten: found
    name, loaded = link_for("Walk-in 0")  # the oldest: past the ten, a record of its own
    assert loaded <= 11
    assert session.scalar(select(func.count()).select_from(Customer).where(
        Customer.lab_id == lab.id, Customer.name == "Walk-in 0")) == 2

"""The staff dashboard at `/`: today's figures in the lab's time zone, and what needs attention."""

from datetime import UTC, datetime, timedelta

from portal.models import (
    Channel,
    LinkStatus,
    Notification,
    OutboxStatus,
    Payment,
    PaymentStatus,
    utcnow,
)
from portal.services.dashboard import day_bounds, today


def paid_link(build, db, lab, amount: int, when: datetime, currency: str = "INR", **fields):
    link = build.link(lab, amount=amount, currency=currency, status=LinkStatus.PAID,
                      amount_paid=amount, paid_at=when, **fields)
    db.add(Payment(lab_id=lab.id, online_payment_id=link.id, reference=f"pay_{link.id}",
                   amount=amount, currency=currency, gateway="sandbox",
                   status=PaymentStatus.SUCCEEDED, succeeded_at=when))
    db.commit()
    return link


def test_the_day_is_the_labs_own():
    # 20:00 UTC on 1 March is already 2 March in Kolkata (UTC+5:30), from 18:30 UTC.
    day, start, end = day_bounds("Asia/Kolkata", datetime(2026, 3, 1, 20, 0, tzinfo=UTC))
    assert str(day) == "2026-03-02"
    assert start.astimezone(UTC) == datetime(2026, 3, 1, 18, 30, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    # A day with a DST change in New York is 23 hours long.
    _, start, end = day_bounds("America/New_York", datetime(2026, 3, 8, 12, tzinfo=UTC))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_figures_per_currency(app, build, lab, db):
    now = utcnow()
    day, start, _ = day_bounds(lab.timezone, now)
    yesterday = start - timedelta(hours=1)
    build.link(lab, amount=10000)  # created today, open
    build.link(lab, amount=20000, expires_at=now + timedelta(days=2))
    old_open = build.link(lab, amount=5000)
    old_open.created_at = yesterday  # open still, created yesterday: awaiting, not created
    expired = build.link(lab, amount=7000)
    expired.expires_at = max(start, now - timedelta(minutes=1))  # ran out today, not swept yet
    swept = build.link(lab, amount=7000, status=LinkStatus.EXPIRED)
    swept.expires_at = max(start, now - timedelta(minutes=2))
    long_gone = build.link(lab, amount=7000, status=LinkStatus.EXPIRED)
    long_gone.expires_at = yesterday
    db.commit()
    paid_link(build, db, lab, 123450, now)
    paid_link(build, db, lab, 100000, yesterday)  # counts as created today, not paid today
    paid_link(build, db, lab, 2500, now, currency="USD")

    result = today(app.extensions["portal_db"].session_factory(), lab, now=now)

    assert result.day == day
    inr, usd = result.figures  # the lab's own currency first
    assert (inr.currency, inr.created, inr.paid, inr.awaiting, inr.expired, inr.collected) == \
        ("INR", 7, 1, 3, 2, 123450)
    assert (usd.currency, usd.created, usd.paid, usd.awaiting, usd.expired, usd.collected) == \
        ("USD", 1, 1, 0, 0, 2500)


def test_dashboard_page(staff_client, build, lab, db):
    paid_link(build, db, lab, 123450, utcnow())
    build.link(lab)
    response = staff_client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<h1>Today, " in page and "Created today" in page
    assert "₹1,234.50" in page and "Nothing needs attention." in page
    assert 'aria-current="page">Today</a>' in page


def test_needs_attention_lists_flagged_links_and_dead_messages(staff_client, build, lab, db):
    flagged = build.link(lab, bill_reference="B-LATE", status=LinkStatus.EXPIRED,
                         needs_attention=True, attention_reason="Paid after the link expired.")
    build.link(lab, bill_reference="B-FINE")
    db.add_all([
        Notification(lab_id=lab.id, online_payment_id=flagged.id, channel=Channel.SMS,
                     recipient="+919876543210", template="link", status=OutboxStatus.DEAD,
                     attempts=5, last_error="SMS provider answered HTTP 503"),
        Notification(lab_id=lab.id, online_payment_id=flagged.id, channel=Channel.EMAIL,
                     recipient="asha@example.com", template="link", status=OutboxStatus.DONE,
                     attempts=1),
    ])
    db.commit()
    page = staff_client.get("/").get_data(as_text=True)
    attention = page.split('id="attention-heading"')[1]
    assert "B-LATE" in attention and "Paid after the link expired." in attention
    assert f'href="/links/{flagged.id}"' in attention
    assert "Not delivered after 5 tries." in attention and "+919876543210" in attention
    assert "SMS provider answered HTTP 503" not in attention  # the provider's words: admins
    assert "asha@example.com" not in attention and "B-FINE" not in attention


def test_another_labs_figures_and_problems_are_not_shown(staff_client, build, lab, db):
    other = build.lab("other", name="Other Labs")
    paid_link(build, db, other, 999900, utcnow(), bill_reference="THEIRS",
              needs_attention=True, attention_reason="Paid twice")
    db.add(Notification(lab_id=other.id, channel=Channel.EMAIL, recipient="x@other.test",
                        template="link", status=OutboxStatus.DEAD, last_error="theirs"))
    db.commit()
    page = staff_client.get("/").get_data(as_text=True)
    assert "₹9,999.00" not in page and "THEIRS" not in page and "x@other.test" not in page
    assert "Nothing needs attention." in page

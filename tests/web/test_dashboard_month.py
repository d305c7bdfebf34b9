"""The dashboard's last 30 days, against seeded data in Asia/Kolkata (UTC+5:30): payments a
minute either side of the lab's midnight land on the lab's day, not UTC's; gateway shares and
the median time from sending to paying. tests/postgres runs the same scenario on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portal.models import Channel, LinkStatus, Notification, OutboxStatus, PaymentStatus
from portal.services.dashboard import day_starts, month

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # 17:30 on Friday 4 December in Kolkata


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def seed_month(build, db, lab):
    """Four links paid in the window (one in USD, one refunded since), one paid a minute before
    it, a failed attempt and another lab's payment that must not count."""
    def paid(amount, created, paid_at, gateway, *, currency="INR", status=PaymentStatus.SUCCEEDED,
             on=lab):
        link = build.link(on, amount=amount, currency=currency, status=LinkStatus.PAID,
                          amount_paid=amount, paid_at=paid_at, created_at=created)
        build.payment(link, gateway=gateway, status=status, succeeded_at=paid_at,
                      amount_refunded=amount if status == PaymentStatus.REFUNDED else 0)
        return link

    # 23:59 on 3 December in Kolkata; created 29 minutes before, never sent: shown at the desk.
    late = paid(10000, utc(2026, 12, 3, 18, 0), utc(2026, 12, 3, 18, 29), "razorpay")
    build.payment(late, gateway="razorpay", status=PaymentStatus.FAILED)
    # 00:01 on 4 December in Kolkata (still 3 December in UTC); sent an hour before paying.
    early = paid(20000, utc(2026, 12, 3, 10, 0), utc(2026, 12, 3, 18, 31), "sandbox")
    for sent in (utc(2026, 12, 3, 17, 31), utc(2026, 12, 3, 18, 0)):  # the first one counts
        db.add(Notification(lab_id=lab.id, online_payment_id=early.id, channel=Channel.SMS,
                            recipient="+919876543210", template="link",
                            status=OutboxStatus.DONE, sent_at=sent, created_at=sent))
    # 00:00 on 5 November in Kolkata: the first minute of the window, in US dollars.
    paid(500, utc(2026, 11, 4, 18, 0), utc(2026, 11, 4, 18, 30), "stripe", currency="USD")
    # A minute earlier: outside the 30 days.
    paid(7000, utc(2026, 11, 4, 18, 0), utc(2026, 11, 4, 18, 29), "razorpay")
    # Paid on 1 December, refunded since: money collected counts it (before refunds).
    paid(40000, utc(2026, 12, 1, 0, 0), utc(2026, 12, 1, 6, 0), "razorpay",
         status=PaymentStatus.REFUNDED)
    other = build.lab("other-lab")
    paid(99999, utc(2026, 12, 3, 0, 0), utc(2026, 12, 3, 18, 29), "razorpay", on=other)
    db.commit()


def check_month(session, lab):
    result = month(session, lab, now=NOW)

    assert len(result.days) == 30
    assert (result.days[0].day, result.days[-1].day) == (date(2026, 11, 5), date(2026, 12, 4))
    by_day = {d.day: (d.links_paid, d.collected) for d in result.days if d.links_paid
              or d.collected}
    assert by_day == {date(2026, 11, 5): (1, {"USD": 500}),
                      date(2026, 12, 1): (1, {"INR": 40000}),
                      date(2026, 12, 3): (1, {"INR": 10000}),
                      date(2026, 12, 4): (1, {"INR": 20000})}
    assert result.currencies == ["INR", "USD"]  # the lab's own first

    shares = [(g.gateway, g.payments, g.share, g.collected) for g in result.gateways]
    assert shares == [("razorpay", 2, 0.5, {"INR": 50000}),
                      ("sandbox", 1, 0.25, {"INR": 20000}),
                      ("stripe", 1, 0.25, {"USD": 500})]

    # Waits of 29 min (desk), 60 min (from the first message), 30 min and 6 h: the middle two.
    assert result.links_timed == 4
    assert round(result.median_seconds_to_pay) == 45 * 60
    return result


def test_last_30_days_in_the_labs_timezone(app, build, db, lab):
    lab.timezone = "Asia/Kolkata"
    db.commit()
    seed_month(build, db, lab)
    check_month(app.extensions["portal_db"].session_factory(), lab)


def test_an_odd_number_of_waits_has_one_middle(app, build, db, lab):
    seed_month(build, db, lab)
    link = build.link(lab, status=LinkStatus.PAID, paid_at=utc(2026, 12, 2, 10, 0),
                      created_at=utc(2026, 12, 2, 9, 0))
    build.payment(link, succeeded_at=link.paid_at)
    result = month(app.extensions["portal_db"].session_factory(), lab, now=NOW)
    assert result.links_timed == 5
    assert round(result.median_seconds_to_pay) == 60 * 60  # 29, 30, 60, 60, 360 minutes


def test_a_quiet_month(app, lab, db):
    result = month(app.extensions["portal_db"].session_factory(), lab, now=NOW)
    assert result.median_seconds_to_pay is None and result.links_timed == 0
    assert result.gateways == [] and result.currencies == []
    assert sum(d.links_paid for d in result.days) == 0


def test_days_follow_summer_time():
    starts = day_starts("America/New_York", utc(2026, 3, 20, 12, 0))
    lengths = {(b.astimezone(UTC) - a.astimezone(UTC)).total_seconds() / 3600
               for a, b in zip(starts, starts[1:], strict=False)}
    assert lengths == {23.0, 24.0}  # 8 March 2026 is 23 hours long there


def test_the_dashboard_shows_the_numbers_behind_the_charts(app, build, db, lab, staff_client,
                                                         monkeypatch):
    monkeypatch.setattr("portal.services.dashboard.utcnow", lambda: NOW)
    seed_month(build, db, lab)
    html = staff_client.get("/").get_data(as_text=True)
    assert 'role="img"' in html and "<desc id=" in html
    # The table row of 4 December (the 00:01 payment) and of 3 December (the 23:59 one).
    assert '<th scope="row">Fri, 4 Dec</th><td class="num">1</td><td class="num">₹200.00</td>' \
        '<td class="num">$0.00</td>' in html
    assert '<th scope="row">Thu, 3 Dec</th><td class="num">1</td><td class="num">₹100.00</td>' \
        in html
    assert "50%" in html and "45 minutes" in html

"""/transactions: filters and search on a seeded history, keyset pages, totals, CSV, isolation."""

from __future__ import annotations

import csv
import io
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal.models import (
    AuditLog,
    ExchangeKind,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
)
from portal.services.transactions import (
    Cursor,
    CursorError,
    TransactionFilter,
    list_transactions,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # 17:30 in Kolkata


def pay(db, link, *, at=T0, amount=None, currency=None, status=PaymentStatus.SUCCEEDED,
        gateway="sandbox", txn=None, refunded=0, reference=None) -> Payment:
    payment = Payment(lab_id=link.lab_id, online_payment_id=link.id,
                      reference=reference or f"pay_{secrets.token_hex(12)}",
                      amount=amount or link.amount, currency=currency or link.currency,
                      gateway=gateway, status=status, gateway_transaction_id=txn,
                      amount_refunded=refunded, created_at=at, updated_at=at)
    db.add(payment)
    db.commit()
    return payment


def references(html: str) -> list[str]:
    """Our payment references in the table, in page order."""
    return re.findall(r'<a href="/transactions/\d+"><code>(pay_[0-9a-z_]+)</code></a>', html)


def cursor_link(html: str, rel: str) -> str | None:
    match = re.search(rf'href="([^"]+)" rel="{rel}"', html)
    return match.group(1).replace("&amp;", "&") if match else None


@pytest.fixture
def history(build, lab, db):
    """A small history: two patients, several gateways, statuses, currencies and days."""
    asha = build.link(lab, patient_name="Asha Rao", phone="+919876543210",
                      email="asha@example.com", bill_reference="BILL-100", amount=100000)
    ravi = build.link(lab, patient_name="Ravi Kumar", phone="+919812345678",
                      email="ravi.k@example.org", bill_reference="OPD-7", amount=50050)
    usd = build.link(lab, patient_name="John Smith", phone=None, email="john@example.net",
                     bill_reference="INTL-1", amount=2500, currency="USD")
    return {
        "asha_ok": pay(db, asha, at=T0, txn="pi_asha_1"),
        "asha_failed": pay(db, asha, at=T0 - timedelta(days=1), status=PaymentStatus.FAILED),
        "ravi_refunded": pay(db, ravi, at=T0 - timedelta(days=2), gateway="razorpay",
                             status=PaymentStatus.PARTIALLY_REFUNDED, refunded=10000,
                             txn="pay_RzP123"),
        "ravi_pending": pay(db, ravi, at=T0 - timedelta(days=3), status=PaymentStatus.PENDING),
        "usd": pay(db, usd, at=T0 - timedelta(days=4), gateway="stripe", txn="ch_usd_9"),
    }


def listed(client, **args) -> list[str]:
    response = client.get("/transactions", query_string=args)
    assert response.status_code == 200, response.get_data(as_text=True)
    return references(response.get_data(as_text=True))


def refs(history, *names) -> list[str]:
    return [history[n].reference for n in names]


def test_lists_every_payment_newest_first(staff_client, history):
    response = staff_client.get("/transactions")
    page = response.get_data(as_text=True)
    assert references(page) == refs(history, "asha_ok", "asha_failed", "ravi_refunded",
                                     "ravi_pending", "usd")
    assert "Asha Rao" in page and "BILL-100" in page
    assert "pay_RzP123" not in page  # a gateway id: admins only
    assert "₹1,000.00" in page and "$25.00" in page
    assert '<a href="/transactions" aria-current="page">Transactions</a>' in page


@pytest.mark.parametrize("args,expected", [
    ({"status": "failed"}, ["asha_failed"]),
    ({"status": "partially_refunded"}, ["ravi_refunded"]),
    ({"gateway": "razorpay"}, ["ravi_refunded"]),
    ({"gateway": "stripe", "status": "succeeded"}, ["usd"]),
    ({"currency": "USD"}, ["usd"]),
    ({"currency": "INR", "status": "pending"}, ["ravi_pending"]),
    ({"status": "refunded"}, []),
])
def test_filters(staff_client, history, args, expected):
    assert listed(staff_client, **args) == refs(history, *expected)


def test_dates_are_the_labs_own_days(staff_client, build, lab, db):
    link = build.link(lab)
    # 20:00 UTC on 1 March is 01:30 on 2 March in Kolkata; 18:00 UTC is 23:30 on 1 March.
    late = pay(db, link, at=datetime(2026, 3, 1, 20, 0, tzinfo=UTC))
    early = pay(db, link, at=datetime(2026, 3, 1, 18, 0, tzinfo=UTC))
    assert listed(staff_client, date_from="2026-03-02") == [late.reference]
    assert listed(staff_client, date_to="2026-03-01") == [early.reference]
    assert listed(staff_client, date_from="2026-03-01", date_to="2026-03-01") == \
        [early.reference]
    assert listed(staff_client, date_from="2026-03-01", date_to="2026-03-02") == \
        [late.reference, early.reference]


def test_amounts_are_entered_in_major_units(staff_client, history):
    assert listed(staff_client, amount_min="1,000", currency="INR") == \
        refs(history, "asha_ok", "asha_failed")
    assert listed(staff_client, amount_min="500.50", amount_max="500.50", currency="INR") == \
        refs(history, "ravi_refunded", "ravi_pending")
    assert listed(staff_client, amount_max="25", currency="USD") == refs(history, "usd")


def test_an_amount_without_a_currency_means_the_labs(staff_client, history):
    page = staff_client.get("/transactions?amount_min=20").get_data(as_text=True)
    assert references(page) == refs(history, "asha_ok", "asha_failed", "ravi_refunded",
                                     "ravi_pending")  # 25 USD is left out
    assert '<option selected value="INR">INR</option>' in page


@pytest.mark.parametrize("args,message", [
    ({"amount_min": "10.5", "currency": "JPY"}, "JPY amounts have no decimals."),
    ({"amount_min": "ten"}, "Enter the amount as a number"),
    ({"amount_min": "100", "amount_max": "50"}, "The upper amount is below the lower one."),
    ({"date_from": "2026-03-05", "date_to": "2026-03-01"}, "The end date is before the start"),
    ({"date_from": "2026-02-30"}, "Not a valid date value."),
    ({"status": "bogus"}, "Not a valid choice."),
])
def test_bad_filters_rerender_with_a_message(staff_client, history, args, message):
    response = staff_client.get("/transactions", query_string=args)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page and 'aria-invalid="true"' in page
    assert references(page) == []
    assert staff_client.get("/transactions.csv", query_string=args).status_code == 422


@pytest.mark.parametrize("args", [{}, {"status": "failed", "gateway": "counter",
                                        "currency": "USD"}, {"currency": 'Q"<&'}])
def test_filter_selects_write_what_wtforms_writes(app, args):
    """The plain option writer: the same HTML as WTForms' own, escaping included."""
    from types import SimpleNamespace

    from flask import request
    from wtforms.widgets import Select

    from portal.transactions.forms import TransactionFilterForm

    with app.test_request_context("/transactions", query_string=args):
        form = TransactionFilterForm(request.args, lab=SimpleNamespace(currency='Q"<&'))
        form.validate()
        for field in (form.status, form.gateway, form.currency):
            assert str(field(**{"aria-invalid": "true"})) == str(
                Select()(field, **{"aria-invalid": "true"}))
        assert 'value="Q&#34;&lt;&amp;">Q&#34;&lt;&amp;</option>' in str(form.currency())


@pytest.mark.parametrize("q,expected", [
    ("asha", ["asha_ok", "asha_failed"]),
    ("ASHA R", ["asha_ok", "asha_failed"]),  # the start of the name, any case
    ("Rao", []),  # prefix search by design: not a '%x%' scan
    ("98123 45678", ["ravi_refunded", "ravi_pending"]),  # local format, normalised
    ("+919876543210", ["asha_ok", "asha_failed"]),
    ("RAVI.K@", ["ravi_refunded", "ravi_pending"]),
    ("john@example.net", ["usd"]),
    ("bill-1", ["asha_ok", "asha_failed"]),
    ("opd-7", ["ravi_refunded", "ravi_pending"]),
    ("pay_RzP123", ["ravi_refunded"]),  # the gateway's transaction id, exactly
    ("ch_usd_9", ["usd"]),
    ("%", []),  # LIKE wildcards are literal
    ("_", []),
])
def test_search(staff_client, history, q, expected):
    assert listed(staff_client, q=q) == refs(history, *expected)


def test_search_by_our_reference_and_with_filters(staff_client, history):
    assert listed(staff_client, q=history["ravi_pending"].reference) == \
        refs(history, "ravi_pending")
    assert listed(staff_client, q="ravi", status="pending") == refs(history, "ravi_pending")


def test_totals_per_currency_for_the_filtered_set(staff_client, history):
    page = staff_client.get("/transactions").get_data(as_text=True)
    totals = page.split('id="totals-heading"')[1].split("</section>")[0]
    rows = re.findall(r"<tr><th scope=\"row\">(\w+)</th>(.*?)</tr>", totals, re.S)
    figures = {code: re.findall(r'class="num">([^<]+)<', cells) for code, cells in rows}
    # INR: 4 payments; received 1,000.00 + 500.50 (the failed and pending ones are not money)
    assert figures["INR"] == ["4", "₹1,500.50", "₹100.00", "₹1,400.50"]
    assert figures["USD"] == ["1", "$25.00", "$0.00", "$25.00"]
    page = staff_client.get("/transactions?currency=USD").get_data(as_text=True)
    assert "Totals for these filters" in page and "₹" not in page.split("totals-heading")[1]


def walk(client, url="/transactions") -> list[list[str]]:
    pages = []
    while url:
        html = client.get(url).get_data(as_text=True)
        pages.append(references(html))
        url = cursor_link(html, "next")
    return pages


def test_keyset_pages_are_stable_with_equal_timestamps(staff_client, build, lab, db):
    link = build.link(lab)
    same = [pay(db, link, at=T0) for _ in range(60)]  # 60 payments in the same microsecond
    older = [pay(db, link, at=T0 - timedelta(seconds=n + 1)) for n in range(7)]
    newer = pay(db, link, at=T0 + timedelta(seconds=1))
    expected = [newer.reference] + [p.reference for p in sorted(same, key=lambda p: -p.id)] \
        + [p.reference for p in older]
    pages = walk(staff_client)
    assert [len(p) for p in pages] == [25, 25, 18]
    assert sum(pages, []) == expected  # every row once, in (created_at, id) descending order

    # Previous walks back to exactly the same pages, even after a new payment arrived.
    html = staff_client.get("/transactions").get_data(as_text=True)
    second_url = cursor_link(html, "next")
    second = staff_client.get(second_url).get_data(as_text=True)
    # The totals read the whole filtered set: on its first page only.
    assert 'id="totals-heading"' in html and 'id="totals-heading"' not in second
    assert "Totals for these filters are on the" in second
    third = staff_client.get(cursor_link(second, "next")).get_data(as_text=True)
    arrived = pay(db, link, at=T0 + timedelta(minutes=5))
    back = staff_client.get(cursor_link(third, "prev")).get_data(as_text=True)
    assert references(back) == pages[1]
    first = staff_client.get(cursor_link(back, "prev")).get_data(as_text=True)
    assert references(first) == pages[0]
    newest = staff_client.get(cursor_link(first, "prev")).get_data(as_text=True)
    assert references(newest) == [arrived.reference] + pages[0][:24]
    assert cursor_link(newest, "prev") is None and cursor_link(newest, "next")
    assert 'rel="prev"' not in html and "Newest" not in html


def test_the_pager_keeps_the_filters(staff_client, build, lab, db):
    link = build.link(lab)
    for n in range(30):
        pay(db, link, at=T0 - timedelta(minutes=n),
            status=PaymentStatus.FAILED if n % 2 else PaymentStatus.SUCCEEDED)
    pages = walk(staff_client, "/transactions?status=failed")
    assert [len(p) for p in pages] == [15]
    html = staff_client.get("/transactions?status=succeeded&q=asha").get_data(as_text=True)
    assert len(references(html)) == 15
    pages = walk(staff_client, "/transactions?gateway=sandbox")
    assert [len(p) for p in pages] == [25, 5]
    assert walk(staff_client, "/transactions?q=asha") == pages  # search pages the same way
    second = cursor_link(staff_client.get("/transactions?gateway=sandbox").get_data(
        as_text=True), "next")
    assert "gateway=sandbox" in second and "cursor=" in second


def test_cursor_is_opaque_and_checked(staff_client, history):
    cursor = Cursor(T0, 42)
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode(Cursor(T0.replace(microsecond=123457), 7, before=True).encode()) \
        == Cursor(T0.replace(microsecond=123457), 7, before=True)
    with pytest.raises(CursorError):
        Cursor.decode("bm90LWEtY3Vyc29y")
    response = staff_client.get("/transactions?cursor=%%%")
    assert response.status_code == 400 and "not valid" in response.get_data(as_text=True)


def test_service_orders_ties_by_id(app, build, lab, db):
    link = build.link(lab)
    ids = [pay(db, link, at=T0).id for _ in range(5)]
    page = list_transactions(db, lab, TransactionFilter(), limit=2)
    assert [r.id for r in page.rows] == sorted(ids, reverse=True)[:2]
    page = list_transactions(db, lab, TransactionFilter(), Cursor.decode(page.next_cursor),
                             limit=2)
    assert [r.id for r in page.rows] == sorted(ids, reverse=True)[2:4]


def test_a_page_costs_the_same_statements_however_many_rows(app, staff_client, build, lab,
                                                             db):
    """Rows come with their link and patient in the page's one query: no load per row."""
    from sqlalchemy import event

    engine = app.extensions["portal_db"].engine
    sent = []

    def count(conn, cursor, statement, *args):
        sent.append(statement)

    def statements(path):
        sent.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            html = staff_client.get(path).get_data(as_text=True)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(sent), html

    def patients(first, last):
        for i in range(first, last):
            link = build.link(lab, patient_name=f"Patient {i}", bill_reference=f"B-{i}",
                              phone=f"+91980000{i:04d}")
            pay(db, link, at=T0 - timedelta(minutes=i), refunded=1 if i % 3 == 0 else 0)

    paths = ("/transactions", "/transactions?status=succeeded")
    patients(0, 2)
    for path in paths:
        staff_client.get(path)  # the session's once-a-minute touch, out of the way
    few = [statements(path)[0] for path in paths]
    patients(2, 25)
    for path, before in zip(paths, few, strict=True):
        many, html = statements(path)
        assert many == before, path
        assert len(references(html)) == 25
        assert all(f"Patient {i}</td>" in html and f"B-{i}</td>" in html for i in range(25))
    # A later page: the session (its user and lab in the same query), then the page itself.
    patients(25, 30)
    _count, html = statements(cursor_link(staff_client.get("/transactions").get_data(
        as_text=True), "next"))
    assert [s.split()[0] for s in sent if not s.startswith("BEGIN")] == ["SELECT", "SELECT"]
    assert len(references(html)) == 5


def test_a_page_is_plain_rows_not_tracked_objects(app, build, lab, db, history):
    """The list only reads: its rows are never built into ORM objects for the session."""
    db.expunge_all()
    page = list_transactions(db, lab, TransactionFilter())
    assert len(page.rows) == 5 and len(db.identity_map) == 0
    first = page.rows[0]
    assert (first.reference, first.patient_name, first.bill_reference, first.amount,
            first.currency, first.status) == (history["asha_ok"].reference, "Asha Rao",
                                              "BILL-100", 100000, "INR",
                                              PaymentStatus.SUCCEEDED)


def read_csv(response) -> list[list[str]]:
    assert response.is_streamed
    text = response.get_data().decode("utf-8")
    assert text.startswith("\ufeff")  # the BOM: Excel reads the file as UTF-8
    return list(csv.reader(io.StringIO(text[1:])))


def test_csv_export(staff_client, history, db, staff):
    response = staff_client.get("/transactions.csv?currency=INR")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="transactions-acme-')
    rows = read_csv(response)
    assert rows[0] == ["Created (Asia/Kolkata)", "Payment reference", "Status", "Gateway",
                       "Gateway transaction id", "Method", "Card", "Amount", "Refunded",
                       "Currency", "Bill reference", "Patient", "Mobile", "Email", "Link id",
                       "Payment id"]
    assert [r[1] for r in rows[1:]] == refs(history, "asha_ok", "asha_failed", "ravi_refunded",
                                            "ravi_pending")
    refunded = history["ravi_refunded"]
    assert rows[3] == ["2026-02-27 17:30:00", refunded.reference, "partially_refunded",
                       "razorpay", "pay_RzP123", "", "", "500.50", "100.00", "INR", "OPD-7",
                       "Ravi Kumar", "'+919812345678", "ravi.k@example.org",
                       str(refunded.online_payment_id), str(refunded.id)]
    searched = read_csv(staff_client.get("/transactions.csv?q=ravi&status=pending"))
    assert [r[1] for r in searched[1:]] == refs(history, "ravi_pending")
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "transactions.export")
                      .order_by(AuditLog.id).limit(1))
    assert entry.user_id == staff.id and entry.detail == {"filters": {"currency": "INR"}}


def test_csv_amounts_use_each_currencys_exponent(staff_client, build, lab, db):
    jpy = build.link(lab, amount=1500, currency="JPY", bill_reference="JP-1")
    bhd = build.link(lab, amount=12345, currency="BHD", bill_reference="BH-1")
    pay(db, jpy, at=T0)
    pay(db, bhd, at=T0 - timedelta(hours=1), refunded=5)
    rows = read_csv(staff_client.get("/transactions.csv"))
    assert [(r[7], r[8], r[9]) for r in rows[1:]] == [("1500", "0", "JPY"),
                                                     ("12.345", "0.005", "BHD")]


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://evil\",\"x\")", "+1+2", "-1+2",
                                  "@SUM(A1)", "\tTab", "\rReturn"])
def test_csv_cells_cannot_become_formulas(staff_client, build, lab, db, name):
    link = build.link(lab, patient_name=name, bill_reference=name[:20], phone=None,
                      email="x@example.com")
    pay(db, link, at=T0)
    row = read_csv(staff_client.get("/transactions.csv"))[1]
    assert row[10] == "'" + name[:20] and row[11] == "'" + name
    assert row[7] == "1234.50"  # amounts stay plain numbers


def test_csv_streams_every_row_across_batches(staff_client, build, lab, db, monkeypatch):
    from portal.services import transactions

    monkeypatch.setattr(transactions, "EXPORT_BATCH", 7)
    link = build.link(lab)
    made = [pay(db, link, at=T0 - timedelta(seconds=n // 3)) for n in range(30)]
    rows = read_csv(staff_client.get("/transactions.csv"))
    expected = sorted(made, key=lambda p: (p.created_at, p.id), reverse=True)
    assert [r[1] for r in rows[1:]] == [p.reference for p in expected]


def test_csv_is_a_stream_fetched_a_batch_at_a_time(app, staff_client, build, lab, db,
                                                  monkeypatch):
    """The response is a generator: a batch of rows is read only when the client takes it."""
    from sqlalchemy import event

    from portal.services import transactions

    monkeypatch.setattr(transactions, "EXPORT_BATCH", 250)
    link = build.link(lab)
    for n in range(600):
        pay(db, link, at=T0 - timedelta(seconds=n))
    selects = []
    engine = app.extensions["portal_db"].engine

    def seen(conn, cursor, statement, *args):
        if "FROM payments" in statement and "LIMIT" in statement:
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = staff_client.get("/transactions.csv", buffered=False)
        assert response.is_streamed and not isinstance(response.response, (list, bytes))
        chunks = iter(response.response)
        first = next(chunks)
        assert len(selects) == 1 and first.count(b"\n") == 201  # the header and 200 rows
        rest = b"".join(chunks)
        response.close()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(selects) == 3
    assert (first + rest).count(b"\n") == 601


def test_detail_shows_the_payment_its_link_and_its_own_timeline(staff_client, history, db):
    payment = history["asha_ok"]
    other_attempt = history["asha_failed"]
    for kind, p, outcome in [(ExchangeKind.CHECKOUT_CREATED, payment, "checkout made"),
                             (ExchangeKind.WEBHOOK_RECEIVED, payment, "payment succeeded"),
                             (ExchangeKind.WEBHOOK_RECEIVED, other_attempt, "payment failed")]:
        db.add(PaymentGatewayTransaction(lab_id=p.lab_id, gateway=p.gateway, kind=kind,
                                         payment_id=p.id, online_payment_id=p.online_payment_id,
                                         event_type="payment.x", outcome=outcome))
    db.commit()
    response = staff_client.get(f"/transactions/{payment.id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert payment.reference in page and "BILL-100" in page
    assert f'href="/links/{payment.online_payment_id}"' in page and "Asha Rao" in page
    timeline = page.split('id="timeline-heading"')[1]
    # Front-desk staff read what happened in plain words: no event names or gateway ids.
    assert (timeline.index("The payment service told us the result")
            < timeline.index("Payment page opened for the patient"))
    for technical in ("pi_asha_1", "payment.x", "webhook", "Technical details"):
        assert technical not in page, technical
    assert "payment failed" not in timeline


def test_admins_get_the_technical_details_behind_a_disclosure(admin_client, history, db):
    payment = history["asha_ok"]
    db.add(PaymentGatewayTransaction(lab_id=payment.lab_id, gateway=payment.gateway,
                                     kind=ExchangeKind.WEBHOOK_RECEIVED, payment_id=payment.id,
                                     online_payment_id=payment.online_payment_id,
                                     event_type="payment.captured", outcome="payment succeeded"))
    db.commit()
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert "<summary>Technical details</summary>" in page
    details = page.split("<summary>Technical details</summary>")
    assert "pi_asha_1" in details[1] and "payment.captured" in page
    assert "webhook_received" in page and "payment succeeded" in page


def test_admins_see_transactions_too_and_visitors_sign_in(admin_client, client, history):
    page = admin_client.get("/transactions").get_data(as_text=True)
    assert '<br><code class="muted">pay_RzP123</code>' in page  # the gateway's id: admins
    assert f'<a href="/transactions/{history["usd"].id}"><code>' in page
    assert admin_client.get(f"/transactions/{history['usd'].id}").status_code == 200
    anonymous = client.get("/transactions")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert client.get("/transactions.csv").status_code == 302
    assert client.get(f"/transactions/{history['usd'].id}").status_code == 302


def test_another_labs_payments_are_not_found(staff_client, build, db, history):
    other = build.lab("other", name="Other Labs")
    theirs = pay(db, build.link(other, patient_name="Asha Other", bill_reference="BILL-1"),
                 at=T0 + timedelta(hours=1), txn="pi_theirs")
    assert staff_client.get(f"/transactions/{theirs.id}").status_code == 404
    assert theirs.reference not in staff_client.get("/transactions").get_data(as_text=True)
    assert listed(staff_client, q="asha") == refs(history, "asha_ok", "asha_failed")
    assert listed(staff_client, q="pi_theirs") == []
    assert listed(staff_client, q=theirs.reference) == []
    rows = read_csv(staff_client.get("/transactions.csv"))
    assert theirs.reference not in {r[1] for r in rows}
    page = staff_client.get("/transactions").get_data(as_text=True)
    assert "Other Labs" not in page and len(re.findall(r'scope="row">', page)) == 2


def totals_both_ways(db, lab, f, monkeypatch):
    """(from the kept payment_totals rows, from reading every payment)."""
    from portal.services import transactions

    kept = transactions.currency_totals(db, lab, f)
    with monkeypatch.context() as m:
        m.setattr(transactions, "_kept_totals", lambda *_: None)
        full = transactions.currency_totals(db, lab, f)
    return kept, full


def test_kept_totals_follow_every_insert_update_and_delete(app, db, lab, history, monkeypatch):
    from sqlalchemy import delete, update

    from portal.models import Payment
    from portal.services.transactions import TransactionFilter

    filters = [TransactionFilter(), TransactionFilter(status=PaymentStatus.SUCCEEDED),
               TransactionFilter(currency="USD"), TransactionFilter(gateway="stripe")]

    def check():
        db.commit()
        for f in filters:
            kept, full = totals_both_ways(db, lab, f, monkeypatch)
            assert kept == full, f
        return totals_both_ways(db, lab, filters[0], monkeypatch)[0]

    before = check()
    assert sum(t.count for t in before) == len(history)
    payment = db.get(Payment, history["asha_ok"].id)
    payment.amount_refunded = 1000
    payment.status = PaymentStatus.PARTIALLY_REFUNDED
    check()
    engine = app.extensions["portal_db"].engine  # plain SQL, as a script would write
    with engine.begin() as conn:
        conn.execute(update(Payment).where(Payment.lab_id == lab.id, Payment.currency == "USD")
                     .values(gateway="stripe", status=PaymentStatus.FAILED))
    check()
    with engine.begin() as conn:
        conn.execute(delete(Payment).where(Payment.id == history["asha_failed"].id))
    after = check()
    assert sum(t.count for t in after) == len(history) - 1

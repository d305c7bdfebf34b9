"""Part payments on the patient's side: every amount is checked on the server in minor units."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.models import LinkStatus, Payment
from tests.conftest import csrf_from
from tests.web.helpers import post_event


@pytest.fixture
def part_link(build, lab, db):
    lab.min_part_payment = 50000  # ₹500.00
    db.commit()
    return build.link(lab, amount=300000, allow_partial=True)  # ₹3,000.00


def pay(client, link, amount, **extra):
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    return client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page),
                                                   "amount": amount, **extra})


def payments(db, link) -> list[Payment]:
    return list(db.scalars(select(Payment).where(Payment.online_payment_id == link.id)
                           .order_by(Payment.id)))


def test_the_pay_page_offers_an_amount_between_the_minimum_and_what_is_owed(client, part_link):
    page = client.get(f"/pay/{part_link.token}").get_data(as_text=True)
    assert 'name="amount"' in page and 'value="3000.00"' in page
    assert ("You can pay part of the bill now: from <bdi>₹500.00</bdi> up to "
            "<bdi>₹3,000.00</bdi>.") in page
    assert ">Pay now</button>" in page


def test_a_link_without_part_payments_has_no_amount_and_ignores_one(client, build, lab, db):
    link = build.link(lab, amount=300000)
    assert 'name="amount"' not in client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert pay(client, link, "1").status_code == 303
    assert [p.amount for p in payments(db, link)] == [300000]


@pytest.mark.parametrize("typed,message", [
    ("499.99", "Pay at least ₹500.00."),
    ("0", "Pay at least ₹500.00."),
    ("0.00", "Pay at least ₹500.00."),
    ("3000.01", "Pay at most ₹3,000.00: that is what is still owed."),
    ("99999999999", "Pay at most ₹3,000.00: that is what is still owed."),
    ("9" * 5000, "Pay at most ₹3,000.00: that is what is still owed."),
    ("1" + "0" * 400 + ".5", "Pay at most ₹3,000.00: that is what is still owed."),
    ("", "Enter the amount you want to pay."),
    ("   ", "Enter the amount you want to pay."),
    ("abc", "Enter the amount as a number, for example 3000.00."),
    ("-600", "Enter the amount as a number, for example 3000.00."),
    ("600.001", "Enter the amount as a number, for example 3000.00."),
    ("1e3", "Enter the amount as a number, for example 3000.00."),
    ("NaN", "Enter the amount as a number, for example 3000.00."),
    ("Infinity", "Enter the amount as a number, for example 3000.00."),
    ("<script>", "Enter the amount as a number, for example 3000.00."),
])
def test_a_refused_amount_re_renders_with_the_reason(client, db, part_link, typed, message):
    answer = pay(client, part_link, typed)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert message in page
    assert 'aria-invalid="true"' in page and 'id="amount-error" role="alert"' in page
    assert "<script>" not in page.split("<body", 1)[1] or typed != "<script>"
    assert payments(db, part_link) == []


def test_nul_bytes_are_refused_at_the_edge(client, db, part_link):
    page = client.get(f"/pay/{part_link.token}").get_data(as_text=True)
    answer = client.post(f"/pay/{part_link.token}",
                         data={"csrf_token": csrf_from(page), "amount": "500\x00"})
    assert answer.status_code == 400
    assert payments(db, part_link) == []


def test_a_refused_amount_is_worded_in_the_patients_language(client, build, lab, db):
    lab.min_part_payment = 50000
    db.commit()
    link = build.link(lab, amount=300000, allow_partial=True, language="hi")
    answer = pay(client, link, "100")
    assert answer.status_code == 422
    assert "कम से कम" in answer.get_data(as_text=True)


def test_a_part_then_the_rest(client, db, part_link):
    answer = pay(client, part_link, "1,000.50")
    assert answer.status_code == 303 and "/sandbox/checkout/" in answer.headers["Location"]
    [first] = payments(db, part_link)
    assert first.amount == 100050
    # Pressing Pay again for the same amount reuses the checkout; another amount makes one.
    assert pay(client, part_link, "1000.50").headers["Location"] == answer.headers["Location"]
    assert post_event(client, first.reference, amount=100050).status_code == 200
    db.expire_all()
    link = payments(db, part_link)[0].online_payment
    assert (link.status, link.amount_paid, link.outstanding) == (
        LinkStatus.PARTIALLY_PAID, 100050, 199950)

    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "₹1,999.50" in page and "Already paid" in page and "Bill total" in page
    assert 'value="1999.50"' in page
    assert "Receipt for what you have paid so far" in page
    receipt = client.get(f"/pay/{link.token}/receipt").get_data(as_text=True)
    assert "₹1,000.50" in receipt and "Still to pay" in receipt and "₹1,999.50" in receipt

    # The minimum is the lab's, but never more than what is left.
    assert pay(client, link, "1999.51").status_code == 422
    rest = pay(client, link, "1999.50")
    assert rest.status_code == 303
    second = payments(db, link)[-1]
    assert second.amount == 199950
    assert post_event(client, second.reference, amount=199950).status_code == 200
    db.expire_all()
    link = payments(db, part_link)[0].online_payment
    assert (link.status, link.amount_paid, link.needs_attention) == (LinkStatus.PAID, 300000,
                                                                     False)
    receipt = client.get(f"/pay/{link.token}/receipt").get_data(as_text=True)
    assert "₹1,000.50" in receipt and "₹1,999.50" in receipt and "Still to pay" not in receipt


def test_the_smallest_payment_is_what_is_left_when_less_than_the_minimum(client, build, lab, db):
    lab.min_part_payment = 50000
    db.commit()
    link = build.link(lab, amount=300000, allow_partial=True, amount_paid=270000,
                      status=LinkStatus.PARTIALLY_PAID)
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert 'name="amount"' not in page  # ₹300.00 left, less than the minimum: all of it
    refused = pay(client, link, "100")
    assert refused.status_code == 422 and "Pay at least ₹300.00." in refused.get_data(as_text=True)
    assert pay(client, link, "300").status_code == 303


def test_digits_of_other_scripts_are_read_as_numbers(client, part_link, db):
    assert pay(client, part_link, "٥٠٠").status_code == 303  # Arabic-Indic 500
    assert payments(db, part_link)[0].amount == 50000


def test_without_a_lab_minimum_any_amount_from_one_paisa(client, build, lab, db):
    link = build.link(lab, amount=300000, allow_partial=True)
    assert pay(client, link, "0.01").status_code == 303
    assert payments(db, link)[0].amount == 1


def test_three_decimal_and_zero_decimal_currencies(client, build, lab, db):
    kwd = build.link(lab, amount=12345, currency="KWD", allow_partial=True)  # 12.345 KWD
    assert pay(client, kwd, "10.005").status_code == 303
    assert payments(db, kwd)[0].amount == 10005
    jpy = build.link(lab, amount=5000, currency="JPY", allow_partial=True)
    assert pay(client, jpy, "10.5").status_code == 422
    assert pay(client, jpy, "1200").status_code == 303
    assert payments(db, jpy)[0].amount == 1200


def test_a_second_checkout_for_more_than_is_left_is_refused_under_the_lock(client, db,
                                                                           part_link):
    """A page open since before a part was paid cannot charge what is no longer owed."""
    assert pay(client, part_link, "2500").status_code == 303
    post_event(client, payments(db, part_link)[0].reference, amount=250000)
    stale = pay(client, part_link, "3000")  # typed on a page opened before that payment
    assert stale.status_code == 422
    assert "Pay at most ₹500.00" in stale.get_data(as_text=True)


def test_the_lab_sets_its_smallest_part_payment_in_major_units(admin_client, db, lab):
    from tests.web.test_admin_lab import page, post, stored

    assert post(admin_client, min_part_payment="1,250.50").status_code == 303
    assert stored(db, lab).min_part_payment == 125050
    assert 'value="1250.50"' in page(admin_client)
    refused = post(admin_client, min_part_payment="12.345")
    assert refused.status_code != 303 and "at most 2 decimals" in refused.get_data(as_text=True)
    assert post(admin_client, min_part_payment="").status_code == 303
    db.expire_all()
    assert stored(db, lab).min_part_payment is None

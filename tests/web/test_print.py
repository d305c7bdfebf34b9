"""The printable bill slip: `/links/<id>/print`, for an A4 page or an 80 mm thermal roll."""

from portal.models import LinkStatus
from tests.web.helpers import static_name


def test_slip_carries_the_bill_and_its_qr_code(staff_client, build, lab):
    link = build.link(lab, amount=123450, bill_reference="B-PRINT", patient_name="Asha Rao")
    response = staff_client.get(f"/links/{link.id}/print")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    for text in ("Acme Diagnostics", "Asha Rao", "B-PRINT", "₹1,234.50", "Pay by",
                 f"/pay/{link.token}/qr.svg", f"http://127.0.0.1:5000/pay/{link.token}",
                 "data-print hidden>Print</button>", static_name("print.js")):
        assert text in page, text
    assert static_name("slip.css") in page and static_name("slip-a4.css") in page


def test_thermal_layout_and_print_css(staff_client, build, lab):
    link = build.link(lab)
    page = staff_client.get(f"/links/{link.id}/print?paper=80mm").get_data(as_text=True)
    assert static_name("slip-80mm.css") in page
    assert 'aria-current="page">80 mm receipt</a>' in page
    assert staff_client.get(f"/links/{link.id}/print?paper=letterhead").status_code == 404
    a4 = staff_client.get("/static/slip-a4.css").get_data(as_text=True)
    thermal = staff_client.get("/static/slip-80mm.css").get_data(as_text=True)
    common = staff_client.get("/static/slip.css").get_data(as_text=True)
    assert "@page{size:A4 portrait" in a4 and "@page{size:80mm" in thermal
    assert "@media print" in common and ".toolbar{display:none}" in common


def test_a_link_that_cannot_be_paid_has_no_slip_and_no_qr(staff_client, build, lab):
    for status in (LinkStatus.PAID, LinkStatus.CANCELLED, LinkStatus.EXPIRED):
        link = build.link(lab, status=status, amount_paid=123450 if status == "paid" else 0)
        response = staff_client.get(f"/links/{link.id}/print")
        assert response.status_code == 410, status
        assert "no slip to print" in response.get_data(as_text=True)
        assert staff_client.get(f"/pay/{link.token}/qr.svg").status_code == 410
        assert staff_client.get(f"/pay/{link.token}/qr.png").status_code == 410


def test_partly_paid_slip_shows_what_is_due(staff_client, build, lab):
    link = build.link(lab, amount=100000, allow_partial=True,
                      status=LinkStatus.PARTIALLY_PAID, amount_paid=40000)
    page = staff_client.get(f"/links/{link.id}/print").get_data(as_text=True)
    assert "₹1,000.00" in page and "₹600.00" in page and "Amount due" in page


def test_only_the_labs_own_links_and_only_signed_in(staff_client, app, build, lab):
    other = build.link(build.lab("other"), bill_reference="THEIRS")
    assert staff_client.get(f"/links/{other.id}/print").status_code == 404
    own = build.link(lab)
    anonymous = app.test_client()
    assert anonymous.get(f"/links/{own.id}/print").status_code == 302  # to the sign-in page


def test_link_page_offers_the_slip(staff_client, build, lab):
    link = build.link(lab)
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert f'href="/links/{link.id}/print">Print bill slip</a>' in page

"""Every query is scoped to the signed-in user's lab: another lab's ids are simply not found."""

import pytest

from tests.conftest import csrf_from


@pytest.fixture
def other_link(build):
    other = build.lab("other", name="Other Labs")
    return build.link(other, bill_reference="OTHER-1")


def test_other_labs_link_is_404(staff_client, other_link):
    assert staff_client.get(f"/links/{other_link.id}").status_code == 404


def test_other_labs_link_cannot_be_cancelled(staff_client, other_link, build, lab, db):
    own = build.link(lab)
    token = csrf_from(staff_client.get(f"/links/{own.id}").get_data(as_text=True))
    response = staff_client.post(f"/links/{other_link.id}/cancel", data={"csrf_token": token})
    assert response.status_code == 404
    db.refresh(other_link)
    assert other_link.status.value == "created"


def test_list_shows_only_own_lab(staff_client, other_link, build, lab):
    build.link(lab, bill_reference="MINE-1")
    page = staff_client.get("/links").get_data(as_text=True)
    assert "MINE-1" in page and "OTHER-1" not in page


def test_admin_pages_are_scoped_too(admin_client, build):
    other = build.lab("other2", sandbox_secret="whsec_other_lab_secret")
    page = admin_client.get("/admin/gateways/sandbox").get_data(as_text=True)
    assert "whsec_other_lab_secret" not in page
    assert other.name not in page

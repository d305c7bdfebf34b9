"""The staff domain: its template translations/staff.pot is current, and kept apart from the
patient catalogs (whose completeness test is about patient texts only)."""

from __future__ import annotations

from babel.messages.pofile import read_po

from portal import catalogs, i18n

STAFF = catalogs.extract("staff")
PATIENT = catalogs.extract("messages")


def ids(catalog) -> set:
    return {m.id for m in catalog if m.id}


def test_staff_pot_is_up_to_date_with_the_source():
    with catalogs.STAFF_POT.open("rb") as f:
        pot = ids(read_po(f))
    assert ids(STAFF) - pot == set(), "run `make messages`: new staff texts are not in staff.pot"
    assert pot - ids(STAFF) == set(), "run `make messages`: staff.pot has texts no longer used"


def test_staff_texts_come_from_staff_pages_only():
    where = {path for m in STAFF for path, _ in m.locations}
    patient = {path for m in PATIENT for path, _ in m.locations}
    assert "templates/base.html" in where and "templates/admin/users.html" in where
    templates = {p for p in where | patient if p.startswith("templates/")}
    assert where & patient & templates == set()  # a template speaks to staff or to patients
    assert not any(p.startswith(("templates/pay/", "templates/sandbox/")) for p in where)


def test_staff_pages_speak_english_until_a_staff_catalog_exists(app):
    with app.test_request_context("/links/new"):
        assert i18n.is_staff_page()
        assert i18n.gettext("Create link") == "Create link"
        assert i18n.staff_gettext("Bill %(reference)s", reference="B-1") == "Bill B-1"
    with app.test_request_context("/pay/abc?lang=hi"):
        assert not i18n.is_staff_page()
        assert i18n.gettext("Amount due") == "देय राशि"

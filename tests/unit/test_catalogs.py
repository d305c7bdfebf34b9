"""Every text a patient can meet is translated in every language, placeholders intact."""

from __future__ import annotations

import pytest
from babel.messages.pofile import read_po

from portal import catalogs, i18n

SOURCE = catalogs.extract()
TRANSLATED = [code for code in i18n.LANGUAGES if code != i18n.DEFAULT]


def test_the_template_is_up_to_date_with_the_source():
    with catalogs.POT.open("rb") as f:
        pot = {m.id for m in read_po(f) if m.id}
    source = {m.id for m in SOURCE if m.id}
    assert source - pot == set(), "run `make messages`: new texts are not in messages.pot"
    assert pot - source == set(), "run `make messages`: messages.pot has texts no longer used"


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_text_is_translated_with_its_placeholders(code):
    catalog = catalogs.read(code)
    problems = []
    for message in SOURCE:
        if not message.id:
            continue
        entry = catalog.get(message.id)
        if entry is None or not entry.string:
            problems.append(f"untranslated: {message.id!r}")
        elif entry.fuzzy:
            problems.append(f"fuzzy (not used): {message.id!r}")
        elif catalogs.placeholders(entry.string) != catalogs.placeholders(message.id):
            problems.append(f"placeholders differ: {message.id!r} -> {entry.string!r}")
        elif entry.string.count("\n\n") != message.id.count("\n\n"):
            problems.append(f"paragraphs differ: {message.id!r}")
    assert problems == [], f"{code}: " + "\n".join(problems)
    assert list(catalog.check()) == []  # Babel's own checks (python-format)


@pytest.mark.parametrize("code", TRANSLATED)
def test_each_catalog_says_how_it_was_made(code):
    catalog = catalogs.read(code)
    assert "How this catalog was made:" in catalog.header_comment
    assert str(catalog.locale).replace("_", "-") == code


def test_catalogs_compile_and_are_used():
    assert i18n.gettext_in("hi", "Amount due") == "देय राशि"
    assert i18n.gettext_in("zh-Hant", "Pay %(amount)s", amount="HK$1.00") == "支付 HK$1.00"
    assert i18n.gettext_in("en", "Amount due") == "Amount due"


def test_placeholders_are_found_in_both_styles():
    assert catalogs.placeholders("Pay %(amount)s by {expires_at}") == ["%(amount)s",
                                                                       "{expires_at}"]

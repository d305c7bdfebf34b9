"""The translation catalogs: extract the texts from the source, merge them into each language.

`python -m portal.catalogs` (or `make messages`) rewrites translations/messages.pot and adds
new texts, untranslated, to every translations/<code>/LC_MESSAGES/messages.po; the catalog
test then fails until each is translated.
"""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po
from jinja2.ext import babel_extract

from . import i18n

ROOT = Path(__file__).resolve().parent.parent
POT = i18n.TRANSLATIONS / "messages.pot"
STAFF_POT = i18n.TRANSLATIONS / "staff.pot"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None, "lazy_gettext": None,
            "gettext_in": (2,), "ngettext_in": (2, 3)}
# Staff code imports them as `_s` (now) and `_l` (lazy: form labels); patients' never so.
STAFF_KEYWORDS = {"staff_gettext": None, "staff_ngettext": (1, 2), "staff_lazy_gettext": None,
                  "_s": None, "_l": None}
TEMPLATE_KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}
# Templates a patient reads (patient domain, messages.pot); every other template is a staff page.
PATIENT_TEMPLATES = ("pay/**.html", "sandbox/**.html", "notifications/**.html",
                     "_patient_base.html", "links/print.html", "errors/refused.html",
                     "errors/unavailable.html")
JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"}
PLACEHOLDER = re.compile(r"%\([a-z_0-9]+\)[sd]|\{[a-z_0-9]+\}")


def extract(domain: str = "messages") -> Catalog:
    """Every marked text of one domain in the portal's Python code and templates, with where it
    is used: `messages` for patients, `staff` for staff pages (apart, so the patient catalogs'
    completeness is not about staff texts)."""
    catalog = Catalog(project="lab-payment-portal", charset="utf-8")
    if domain == "staff":
        templates = [(p, "ignore") for p in PATIENT_TEMPLATES] + [("**.html", babel_extract)]
        python_keywords = STAFF_KEYWORDS
    else:
        templates = [(p, babel_extract) for p in PATIENT_TEMPLATES] + [("**.html", "ignore")]
        python_keywords = KEYWORDS
    sources = [
        (ROOT / "portal", [("**.py", "python")], {}, python_keywords),
        (ROOT / "templates", templates, {p: JINJA_OPTIONS for p, _ in templates},
         TEMPLATE_KEYWORDS),
    ]
    for directory, method_map, options_map, keywords in sources:
        for filename, lineno, message, comments, context in extract_from_dir(
                str(directory), method_map, options_map, keywords=keywords,
                comment_tags=("Translators:",), strip_comment_tags=True):
            where = str((directory / filename).relative_to(ROOT))
            catalog.add(message, None, [(where, lineno)], auto_comments=comments,
                        context=context)
    return catalog


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text or ""))


def read(code: str) -> Catalog:
    with i18n.catalog_path(code).open("rb") as source:
        return read_po(source, locale=i18n.babel_locale_name(code))


def _entries(catalog: Catalog) -> list[tuple]:
    return sorted(((m.id, m.context, tuple(sorted({p for p, _ in m.locations})))
                   for m in catalog if m.id), key=repr)  # plural ids are tuples


def write_template(domain: str, path: Path) -> Catalog:
    template = extract(domain)
    if path.exists():  # unchanged texts keep their date: no churn in git
        with path.open("rb") as f:
            old = read_po(f)
        if _entries(old) == _entries(template):
            template.creation_date = old.creation_date
    i18n.TRANSLATIONS.mkdir(exist_ok=True)
    with path.open("wb") as out:
        write_po(out, template, width=100, sort_by_file=True, include_lineno=False)
    return template


def update() -> list[str]:
    """Writes both templates and merges the patient one into each language's catalog (staff
    pages have no translations yet); returns what changed."""
    write_template("staff", STAFF_POT)
    template = write_template("messages", POT)
    changed = [str(STAFF_POT.relative_to(ROOT)), str(POT.relative_to(ROOT))]
    for code in i18n.LANGUAGES:
        if code == i18n.DEFAULT:
            continue  # English is the source
        path = i18n.catalog_path(code)
        if path.exists():
            catalog = read(code)
            header = catalog.header_comment
            catalog.update(template, no_fuzzy_matching=True)
            catalog.header_comment = header
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(locale=i18n.babel_locale_name(code), project="lab-payment-portal",
                              charset="utf-8")
            catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as out:
            write_po(out, catalog, width=100, sort_by_file=True, ignore_obsolete=True,
                     include_lineno=False)
        changed.append(str(path.relative_to(ROOT)))
    return changed


if __name__ == "__main__":
    for name in update():
        print("updated", name)

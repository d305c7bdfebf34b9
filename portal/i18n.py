"""Patient languages: which one a page speaks, its gettext catalog, and its Babel locale.

Catalogs are the `.po` files in translations/<code>/LC_MESSAGES/, compiled in memory when first
used (no build step, no compiled files in git). Codes are fixed by DESIGN §9.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, lru_cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode

from babel import Locale, localedata
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import g, has_request_context, request
from markupsafe import Markup

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"
DEFAULT = "en"
COOKIE = "portal_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600

# Each language named in its own words, as the patient looks for it in the menu.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "hi": "हिन्दी",
    "ta": "தமிழ்",
    "te": "తెలుగు",
    "bn": "বাংলা",
    "mr": "मराठी",
    "ar": "العربية",
    "zh-Hant": "繁體中文",
    "fil": "Filipino",
    "es": "Español",
}
RTL = frozenset({"ar"})
# Staff see the language's English name next to its own (forms, lists).
ENGLISH_NAMES: dict[str, str] = {
    "en": "English", "hi": "Hindi", "ta": "Tamil", "te": "Telugu", "bn": "Bengali",
    "mr": "Marathi", "ar": "Arabic", "zh-Hant": "Chinese (Traditional)", "fil": "Filipino",
    "es": "Spanish",
}

def staff_choices() -> dict[str, str]:
    """For staff forms: 'Hindi · हिन्दी'."""
    return {code: f"{ENGLISH_NAMES[code]} · {name}" for code, name in LANGUAGES.items()}


# A development aid: every string bracketed and accented (enabled by the I18N_PSEUDO setting).
PSEUDO = "en-XA"

_BY_LOWER = {code.lower(): code for code in LANGUAGES}
_TAG = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}$")
CHINESE_TRADITIONAL_REGIONS = {"hk", "tw", "mo"}


def normalize(value: object) -> str | None:
    """A supported code from `hi`, `ZH-hant`, `zh_Hant`; None for anything else."""
    if not isinstance(value, str) or len(value) > 35:
        return None
    code = _BY_LOWER.get(value.strip().replace("_", "-").lower())
    if code is None and value == PSEUDO and _pseudo_enabled():
        return PSEUDO
    return code


def match_tag(tag: str) -> str | None:
    """The language we offer for one BCP 47 tag a browser sends (`zh-HK` is zh-Hant)."""
    if not _TAG.match(tag or ""):
        return None
    exact = normalize(tag)
    if exact:
        return exact
    parts = tag.replace("_", "-").lower().split("-")
    primary = parts[0]
    if primary == "zh":
        return "zh-Hant" if "hant" in parts or CHINESE_TRADITIONAL_REGIONS & set(parts) else None
    if primary == "tl":  # Tagalog: Filipino is its standard form
        return "fil"
    return _BY_LOWER.get(primary)


def from_accept_language(header_values) -> str | None:
    """The best language we offer from Accept-Language (werkzeug's parsed, q-sorted list)."""
    for tag, quality in header_values:
        if quality <= 0:
            continue
        found = match_tag(tag)
        if found:
            return found
    return None


def is_rtl(code: str) -> bool:
    return code in RTL


# --- catalogs ----------------------------------------------------------------------------------

def catalog_path(code: str) -> Path:
    return TRANSLATIONS / code / "LC_MESSAGES" / "messages.po"


@cache
def translations(code: str) -> NullTranslations:
    """The compiled catalog of a language; English (the source) and unknown codes: identity."""
    if code == PSEUDO:
        return PseudoTranslations()
    path = catalog_path(code)
    if code == DEFAULT or not path.exists():
        return NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=babel_locale_name(code))
    buffer = BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)  # a fuzzy entry is not a translation
    buffer.seek(0)
    return Translations(fp=buffer)


def gettext_in(code: str, message: str, **variables) -> str:
    text = translations(code).gettext(message)
    return text % variables if variables else text


def ngettext_in(code: str, singular: str, plural: str, n: int, **variables) -> str:
    text = translations(code).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


# --- Babel locales for numbers, money and dates ------------------------------------------------

def babel_locale_name(code: str) -> str:
    return {"zh-Hant": "zh_Hant", PSEUDO: "en"}.get(code, code)


@lru_cache(maxsize=512)
def format_locale(code: str, lab_locale: str | None) -> str:
    """The language with the lab's country: hi + en_IN -> hi_IN (lakh grouping), ar + en_AE ->
    ar_AE, zh-Hant + en_HK -> zh_Hant_HK; the bare language where CLDR has no such pair."""
    base = babel_locale_name(code)
    territory = None
    try:
        territory = Locale.parse(lab_locale or "").territory
    except (ValueError, TypeError):
        pass
    for candidate in ([f"{base}_{territory}"] if territory else []) + [base]:
        if localedata.exists(candidate):
            return candidate
    return "en"


# --- the current request -----------------------------------------------------------------------

def requested() -> str | None:
    """What the patient chose: `?lang=` on this request, else the remembered cookie."""
    return normalize(request.args.get("lang")) or normalize(request.cookies.get(COOKIE))


def choose(link_language: str | None = None, lab_default: str | None = None) -> str:
    """The patient's choice, else the link's language, else the browser's, else the lab's."""
    return (requested() or normalize(link_language)
            or from_accept_language(request.accept_languages)
            or normalize(lab_default) or DEFAULT)


def use(code: str) -> str:
    g.language = code
    return code


_speaking: ContextVar[str | None] = ContextVar("speaking", default=None)


@contextmanager
def speaking(code: str):
    """Renders in `code` outside a patient's request (messages sent by the worker)."""
    token = _speaking.set(code)
    try:
        yield code
    finally:
        _speaking.reset(token)


def current() -> str:
    if _speaking.get() is not None:
        return _speaking.get()
    if not has_request_context():
        return DEFAULT
    code = g.get("language")
    if code is None and is_patient_page():
        code = use(choose())
    return code or DEFAULT


PATIENT_PATHS = ("/pay/", "/sandbox/checkout/")


def is_patient_page() -> bool:
    """Patient pages (and their errors, even before a route matched) follow the patient."""
    return request.path.startswith(PATIENT_PATHS)


def gettext(message: str, **variables) -> str:
    """`_()` of the templates: the staff domain on staff pages, else the patient's language."""
    if is_staff_page():
        return staff_gettext(message, **variables)
    return gettext_in(current(), message, **variables)


def ngettext(singular: str, plural: str, n: int, **variables) -> str:
    if is_staff_page():
        return staff_ngettext(singular, plural, n, **variables)
    return ngettext_in(current(), singular, plural, n, **variables)


# --- the staff domain --------------------------------------------------------------------------
# Staff pages speak English for now, but their texts are marked (translations/staff.pot, kept
# apart from the patient catalogs) so that a staff language is only a catalog away.

def is_staff_page() -> bool:
    """A staff page's request: not a patient page, and no patient's language chosen for it
    (a slip or a message rendered `speaking` the link's language stays the patient's)."""
    return (has_request_context() and _speaking.get() is None and g.get("language") is None
            and not is_patient_page())


def staff_translations() -> NullTranslations:
    """English, the source (identity); the pseudo-locale with the I18N_STAFF_PSEUDO setting."""
    from flask import current_app

    if has_request_context() and current_app.config.get("I18N_STAFF_PSEUDO"):
        return _PSEUDO
    return _IDENTITY


def staff_gettext(message: str, **variables) -> str:
    text = staff_translations().gettext(message)
    return text % variables if variables else text


def staff_ngettext(singular: str, plural: str, n: int, **variables) -> str:
    text = staff_translations().ngettext(singular, plural, n)
    return text % {"num": n, **variables}


def staff_lazy_gettext(message: str, **variables):
    """Form labels and other module-level staff texts: translated when shown."""
    from babel.support import LazyProxy

    return LazyProxy(staff_gettext, message, enable_cache=False, **variables)


def lazy_gettext(message: str):
    """For module-level texts: translated when shown, in the language of that moment."""
    from babel.support import LazyProxy

    return LazyProxy(gettext, message, enable_cache=False)


def remember(response):
    """Keeps a valid `?lang=` choice in a cookie for the patient's next page."""
    chosen = normalize(request.args.get("lang"))
    if chosen and chosen != normalize(request.cookies.get(COOKIE)):
        response.set_cookie(COOKIE, chosen, max_age=COOKIE_MAX_AGE, path="/", httponly=True,
                            samesite="Lax", secure=request.is_secure)
    return response


# --- the pseudo-locale -------------------------------------------------------------------------

_ACCENTED = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "àƀçđéƒĝĥîĵķĺɱñöþǫŕšţûṽŵẋýžÀßÇĐÉƑĜĤÎĴĶĹṀÑÖÞǪŔŠŢÛṼŴẊÝŽ")
_PLACEHOLDER = re.compile(r"(%\([a-z_]+\)[sd]|%%|<[^>]*>|&[a-z]+;)")


def pseudo(text: str) -> str:
    """'Pay %(amount)s' -> '⟦Þàý %(amount)s⟧': placeholders and markup kept as they are."""
    parts = _PLACEHOLDER.split(text)
    return "⟦" + "".join(p if _PLACEHOLDER.fullmatch(p) else p.translate(_ACCENTED)
                         for p in parts) + "⟧"


class PseudoTranslations(NullTranslations):
    def gettext(self, message):
        return pseudo(message)

    def ngettext(self, singular, plural, n):
        return pseudo(singular if n == 1 else plural)


# Stateless: one of each serves every staff text (a page asks for dozens).
_IDENTITY = NullTranslations()
_PSEUDO = PseudoTranslations()


def _pseudo_enabled() -> bool:
    from flask import current_app

    return has_request_context() and bool(current_app.config.get("I18N_PSEUDO"))


def lang_url(code: str) -> str:
    """This page again in another language, keeping its other query parameters."""
    base = g.get("lang_url_base")
    if base is None:  # once per page: the menu asks for every language
        kept = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "lang"])
        base = g.lang_url_base = request.path + "?" + (kept + "&" if kept else "")
    return base + urlencode([("lang", code)])


def bdi(value: object, ltr: bool = False) -> Markup:
    """A value isolated from the sentence around it, so RTL text does not reorder it."""
    # B704: a constant template; Markup's % escapes `value`.
    return Markup('<bdi dir="ltr">%s</bdi>' if ltr else "<bdi>%s</bdi>") % (value,)  # nosec B704


def _template_ngettext(singular: str, plural: str, n: int) -> str:
    """Jinja formats the text itself (with `num` and the other variables): no formatting here."""
    if is_staff_page():
        return staff_translations().ngettext(singular, plural, n)
    return translations(current()).ngettext(singular, plural, n)


def init_app(app) -> None:
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(gettext=gettext, ngettext=_template_ngettext,
                                            newstyle=True)
    app.jinja_env.globals.update(lang_url=lang_url, bdi=bdi)

    app.context_processor(page_context)


def page_context() -> dict[str, object]:
    """What every page's template needs to speak its language (lang, dir, the menu)."""
    from .tokens import pay_page_of

    code = current()
    return {"page_language": code, "page_dir": "rtl" if is_rtl(code) else None,
            "languages": LANGUAGES,
            "pay_page_url": pay_page_of(request.path) if has_request_context() else None}

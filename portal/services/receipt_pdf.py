"""A receipt as a PDF (A4) in the patient's language, with fonts that carry every script we use.

fpdf2 embeds subsets of Debian's Noto fonts (fonts-noto-core, fonts-noto-cjk) and shapes text
with HarfBuzz, so Devanagari conjuncts, Tamil vowel signs and joined Arabic come out as they are
written. Each script's font is embedded only when the receipt has text in it.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import cast

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

from .. import i18n
from ..filters import zoned_time
from ..i18n import gettext_in
from ..money import format_money
from .receipts import Receipt, ReceiptEntry

FONT_DIRS = (Path("/usr/share/fonts/truetype/noto"), Path("/usr/share/fonts/opentype/noto"))
BASE_FONT = ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf")
# Unicode blocks -> the Noto font for that script (first match wins).
SCRIPT_FONTS: tuple[tuple[int, int, str], ...] = (
    (0x0590, 0x05FF, "NotoSansHebrew-Regular.ttf"),
    (0x0600, 0x06FF, "NotoSansArabic-Regular.ttf"),
    (0x0750, 0x077F, "NotoSansArabic-Regular.ttf"),
    (0x0900, 0x097F, "NotoSansDevanagari-Regular.ttf"),
    (0x0980, 0x09FF, "NotoSansBengali-Regular.ttf"),
    (0x0A00, 0x0A7F, "NotoSansGurmukhi-Regular.ttf"),
    (0x0A80, 0x0AFF, "NotoSansGujarati-Regular.ttf"),
    (0x0B00, 0x0B7F, "NotoSansOriya-Regular.ttf"),
    (0x0B80, 0x0BFF, "NotoSansTamil-Regular.ttf"),
    (0x0C00, 0x0C7F, "NotoSansTelugu-Regular.ttf"),
    (0x0C80, 0x0CFF, "NotoSansKannada-Regular.ttf"),
    (0x0D00, 0x0D7F, "NotoSansMalayalam-Regular.ttf"),
    (0x0D80, 0x0DFF, "NotoSansSinhala-Regular.ttf"),
    (0x0E00, 0x0E7F, "NotoSansThai-Regular.ttf"),
    (0x1100, 0x11FF, "NotoSansCJK-Regular.ttc"),
    (0x2E80, 0x9FFF, "NotoSansCJK-Regular.ttc"),
    (0xAC00, 0xD7AF, "NotoSansCJK-Regular.ttc"),
    (0xF900, 0xFAFF, "NotoSansCJK-Regular.ttc"),
    (0xFB50, 0xFDFF, "NotoSansArabic-Regular.ttf"),
    (0xFE70, 0xFEFF, "NotoSansArabic-Regular.ttf"),
    (0xFF00, 0xFFEF, "NotoSansCJK-Regular.ttc"),
)
CJK_FACE = "Noto Sans CJK HK"  # Traditional forms as written in Hong Kong (zh-Hant)
MARGIN = 18  # mm


class ReceiptFontsMissing(RuntimeError):
    """The base font is not installed: no honest PDF can be made (the printable page can)."""


def find_font(name: str) -> Path | None:
    for directory in FONT_DIRS:
        path = directory / name
        if path.is_file():
            return path
    return None


@cache
def collection_index(path: Path, face: str) -> int:
    """The index of `face` in a .ttc collection (0 when not found)."""
    from fontTools.ttLib import TTCollection  # type: ignore[import-untyped]

    collection = TTCollection(str(path), lazy=True)
    for index, font in enumerate(collection.fonts):
        if font["name"].getDebugName(1) == face:
            return index
    return 0


def fonts_for(texts: list[str]) -> list[str]:
    """The script font files the texts need, in a stable order, each once."""
    needed: list[str] = []
    for char in set("".join(texts)):
        code = ord(char)
        if code < 0x0590:
            continue
        for low, high, name in SCRIPT_FONTS:
            if low <= code <= high:
                if name not in needed:
                    needed.append(name)
                break
    return sorted(needed)


def entry_details(entry: ReceiptEntry, language: str) -> str:
    if entry.kind == "refund":
        return gettext_in(language, "Refund")
    if entry.card_last4:
        return gettext_in(language, "%(brand)s card ending %(last4)s",
                          brand=(entry.card_brand or "").capitalize(), last4=entry.card_last4)
    if entry.gateway == "counter":
        return gettext_in(language, "Paid at the lab")
    return gettext_in(language, "Paid online")


def render_pdf(receipt: Receipt, *, language: str, lab_locale: str, timezone: str) -> bytes:
    """The receipt as PDF bytes, written in `language` with the lab's formats and time zone."""
    locale = i18n.format_locale(language, lab_locale)
    rtl = i18n.is_rtl(language)

    def money(minor: int) -> str:
        return format_money(minor, receipt.currency, locale)

    def when(value: datetime) -> str:
        return zoned_time(value, timezone, locale, with_zone=False)

    lab = receipt.lab
    header = [lab.name, *lab.address_lines]
    if lab.phone:
        header.append(gettext_in(language, "Phone: %(phone)s", phone=lab.phone_display or ""))
    if lab.email:
        header.append(gettext_in(language, "Email: %(email)s", email=lab.email))
    facts: list[tuple[str, str]] = [
        (gettext_in(language, "Patient"), receipt.patient_name or "—"),
        (gettext_in(language, "Bill reference"), receipt.bill_reference),
        (gettext_in(language, "Bill amount"), money(receipt.bill_amount)),
    ]
    if receipt.description:
        facts.append((gettext_in(language, "For"), receipt.description))
    rows = [(when(e.at), entry_details(e, language), e.reference, money(e.signed_amount))
            for e in receipt.entries]
    totals = [(gettext_in(language, "Total paid"), money(receipt.total_paid))]
    if receipt.total_refunded:
        totals += [(gettext_in(language, "Refunded"), money(-receipt.total_refunded)),
                   (gettext_in(language, "Net paid"), money(receipt.net_paid))]
    if receipt.outstanding:
        totals.append((gettext_in(language, "Still to pay"), money(receipt.outstanding)))
    title = gettext_in(language, "Payment receipt")
    issued = gettext_in(language, "Issued %(time)s",
                        time=zoned_time(receipt.issued_at, timezone, locale))
    headings = (gettext_in(language, "Date"), gettext_in(language, "Details"),
                gettext_in(language, "Reference"), gettext_in(language, "Amount"))
    every_text = ([title, issued, *header, *headings]
                  + [x for pair in facts + totals for x in pair] + [x for r in rows for x in r])

    pdf = _document(every_text)
    pdf.set_title(f"{title} {receipt.bill_reference}")
    pdf.set_author(lab.name)
    pdf.set_lang(language)
    pdf.add_page()
    width = pdf.epw
    align = "R" if rtl else "L"

    pdf.set_font("noto", "B", 16)
    _write(pdf, width, 8, lab.name, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("noto", "", 10)
    for line in header[1:]:
        _write(pdf, width, 5, line, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    pdf.set_font("noto", "B", 14)
    _write(pdf, width, 8, title, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font("noto", "", 11)
    for label, value in facts:
        _pair(pdf, label, value, rtl=rtl, label_width=45)
    pdf.ln(4)

    columns = (38.0, 52.0, width - 38 - 52 - 36, 36.0)
    pdf.set_font("noto", "B", 10)
    _row(pdf, headings, columns, rtl=rtl, amount_last=True)
    pdf.set_draw_color(120, 120, 120)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.set_font("noto", "", 10)
    for row in rows:
        _row(pdf, row, columns, rtl=rtl, amount_last=True)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(2)
    pdf.set_font("noto", "B", 11)
    for label, value in totals:
        _pair(pdf, label, value, rtl=rtl, label_width=width - 36, value_align_end=True)
    pdf.ln(8)
    pdf.set_font("noto", "", 9)
    pdf.set_text_color(80, 80, 80)
    _write(pdf, width, 5, issued, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def _document(texts: list[str]) -> FPDF:
    regular, bold = (find_font(name) for name in BASE_FONT)
    if regular is None or bold is None:
        raise ReceiptFontsMissing("Noto Sans is not installed (Debian: fonts-noto-core)")
    pdf = FPDF(format="A4")
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=MARGIN)
    pdf.add_font("noto", "", str(regular))
    pdf.add_font("noto", "B", str(bold))
    fallbacks = []
    for name in fonts_for(texts):
        path = find_font(name)
        if path is None:
            continue  # that script's glyphs are left out: better than a wrong font's boxes
        family = "f-" + name.split("-")[0].lower()
        if path.suffix == ".ttc":
            pdf.add_font(family, "", str(path),
                         collection_font_number=collection_index(path, CJK_FACE))
        else:
            pdf.add_font(family, "", str(path))
        fallbacks.append(family)
    pdf.set_fallback_fonts(fallbacks, exact_match=False)
    # No fixed direction: fpdf2 runs the Unicode bidi algorithm on each paragraph, so a Latin
    # bill reference inside Arabic text keeps its order.
    pdf.set_text_shaping(use_shaping_engine=True)
    return pdf


def _pair(pdf: FPDF, label: str, value: str, *, rtl: bool, label_width: float,
          value_align_end: bool = False) -> None:
    style = pdf.font_style
    value_width = pdf.epw - label_width
    cells = [(label, label_width, "B"), (value, value_width, style)]
    if rtl:
        cells.reverse()
    y = pdf.get_y()
    x = pdf.l_margin
    bottom = y
    for text, w, font_style in cells:
        pdf.set_xy(x, y)
        pdf.set_font("noto", font_style, pdf.font_size_pt)
        start, end = ("R", "L") if rtl else ("L", "R")
        align = end if (text is value and value_align_end) else start
        height = _write(pdf, w, 6, text, align=align, new_x=XPos.RIGHT, new_y=YPos.TOP)
        bottom = max(bottom, y + height)
        x += w
    pdf.set_font("noto", style, pdf.font_size_pt)
    pdf.set_xy(pdf.l_margin, max(bottom, y + 6))


def _row(pdf: FPDF, cells: tuple[str, ...], widths: tuple[float, ...], *, rtl: bool,
         amount_last: bool) -> None:
    pairs = list(zip(cells, widths, strict=True))
    aligns = ["R" if rtl else "L"] * len(pairs)
    if amount_last:
        aligns[-1] = "L" if rtl else "R"
    if rtl:
        pairs.reverse()
        aligns.reverse()
    y = pdf.get_y()
    if y + 12 > pdf.h - pdf.b_margin:
        pdf.add_page()
        y = pdf.get_y()
    x = pdf.l_margin
    bottom = y
    for (text, w), align in zip(pairs, aligns, strict=True):
        pdf.set_xy(x, y)
        height = _write(pdf, w, 6, text, align=align, new_x=XPos.RIGHT, new_y=YPos.TOP)
        bottom = max(bottom, y + height)
        x += w
    pdf.set_xy(pdf.l_margin, max(bottom, y + 6) + 1)


def _write(pdf: FPDF, w: float, h: float, text: str, *, align: str, new_x: XPos,
           new_y: YPos) -> float:
    """multi_cell, after selecting the font again: text drawn in a fallback font leaves the
    PDF without a current font (fpdf2 2.8 wraps it in q/Q), and the next text shows garbage."""
    family, style, size = pdf.font_family, pdf.font_style, pdf.font_size_pt
    pdf.set_font(family, style, size + 1)
    pdf.set_font(family, style, size)
    height = pdf.multi_cell(w, h, text, align=align, new_x=new_x, new_y=new_y,
                            output=MethodReturnValue.HEIGHT)
    return float(cast(float, height))

"""A lab's own settings (/admin/lab): checks on each value, and the audited save."""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import asdict, dataclass, fields
from zoneinfo import available_timezones

from sqlalchemy.orm import Session

from ..models import Lab
from ..phones import to_e164
from .audit import audit
from .notifications import MAX_REMINDER_HOURS, MAX_REMINDERS

MAX_EXPIRY_HOURS = 24 * 90  # a link stays open at most 90 days (the new-link form's limit)
MAX_REFUND_REASONS = 20
MAX_REASON_LENGTH = 200  # Refund.reason
MIN_BUTTON_CONTRAST = 4.5  # WCAG 2.2 AA for the pay button's white text
HEX_COLOUR = re.compile(r"^#[0-9a-f]{6}$")
MAX_LOGO_BYTES = 200 * 1024
MAX_LOGO_SIDE = 10_000  # pixels
LOGO_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class SettingsError(ValueError):
    """A value the lab cannot use; the message is shown next to its field."""


@dataclass(frozen=True)
class LabSettings:
    name: str
    currency: str
    timezone: str
    locale: str
    default_language: str
    default_expiry_hours: int
    reminder_hours_before: tuple[int, ...]
    refund_approval_threshold: int | None
    refund_reasons: tuple[str, ...]
    brand_color: str | None
    logo_sha256: str | None  # the logo is audited by its hash, never its bytes
    min_part_payment: int | None = None  # minor units; None: any amount
    address: str = ""
    phone: str | None = None
    email: str | None = None

    @classmethod
    def of(cls, lab: Lab) -> LabSettings:
        return cls(name=lab.name, currency=lab.currency, timezone=lab.timezone,
                   locale=lab.locale, default_language=lab.default_language,
                   default_expiry_hours=lab.default_expiry_hours,
                   reminder_hours_before=tuple(lab.reminder_hours_before or ()),
                   refund_approval_threshold=lab.refund_approval_threshold,
                   refund_reasons=tuple(lab.refund_reasons or ()),
                   brand_color=lab.brand_color, logo_sha256=lab.logo_sha256,
                   min_part_payment=lab.min_part_payment,
                   address=lab.address or "", phone=lab.phone, email=lab.email)


@dataclass(frozen=True)
class Logo:
    """An uploaded logo that passed check_logo: PNG, JPEG or WebP, by its bytes."""
    image: bytes
    content_type: str
    sha256: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return LOGO_EXTENSIONS[self.content_type]


def timezone_names() -> list[str]:
    """Region/City names (and UTC), not the legacy aliases such as 'EST5EDT' or 'Japan'."""
    return sorted(name for name in available_timezones()
                  if "/" in name and not name.startswith(("Etc/", "SystemV/"))) + ["UTC"]


def locale_choices() -> dict[str, str]:
    """Locales for formatting numbers, money and dates: each of our languages in the countries
    our gateways serve, as CLDR knows them."""
    from babel import Locale, localedata

    territories = ("IN", "AE", "SA", "BH", "KW", "OM", "QA", "HK", "PH", "US", "SG", "GB",
                   "LK", "BD", "EG", "ES", "MX")
    names: set[str] = set()
    for language in ("en", "hi", "ta", "te", "bn", "mr", "ar", "zh_Hant", "fil", "es"):
        names.update(f"{language}_{t}" for t in territories
                     if localedata.exists(f"{language}_{t}"))
    named = {n: Locale.parse(n).get_display_name("en") or n for n in names}
    return dict(sorted(named.items(), key=lambda pair: pair[1]))


def check_locale(name: str | None) -> str:
    from babel import Locale, UnknownLocaleError

    try:
        locale = Locale.parse((name or "").strip().replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        raise SettingsError("Choose a locale from the list, for example en_IN.") from None
    if not locale.territory:
        raise SettingsError("Choose a locale with a country, for example en_IN or ar_AE.")
    return str(locale)


def parse_reminder_hours(text: str | None) -> list[int]:
    """'24, 2' -> [24, 2]: the same rules and words as /admin/messages."""
    words = [w for w in re.split(r"[,\s]+", text or "") if w]
    try:
        hours = [int(w) for w in words]
    except ValueError:
        raise SettingsError("Enter whole hours, separated by commas.") from None
    if any(h < 1 or h > MAX_REMINDER_HOURS for h in hours):
        raise SettingsError(f"Each reminder must be 1 to {MAX_REMINDER_HOURS} hours "
                            "before expiry.")
    if len(set(hours)) > MAX_REMINDERS:
        raise SettingsError(f"At most {MAX_REMINDERS} reminders.")
    return sorted(set(hours), reverse=True)


def parse_refund_reasons(text: str | None) -> list[str]:
    """One reason a line; blank lines and repeats (ignoring case) dropped, order kept."""
    reasons: list[str] = []
    seen: set[str] = set()
    for line in (text or "").splitlines():
        reason = " ".join(line.split())
        if not reason or reason.casefold() in seen:
            continue
        if len(reason) > MAX_REASON_LENGTH:
            raise SettingsError(f"Each reason can be at most {MAX_REASON_LENGTH} characters.")
        seen.add(reason.casefold())
        reasons.append(reason)
    if len(reasons) > MAX_REFUND_REASONS:
        raise SettingsError(f"At most {MAX_REFUND_REASONS} reasons.")
    return reasons


MAX_ADDRESS_LINES = 6
MAX_ADDRESS_LINE = 100
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def check_address(text: str | None) -> str:
    """The postal address as lines (spaces tidied, blank lines dropped); '' when none."""
    lines = [" ".join(line.split()) for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > MAX_ADDRESS_LINES:
        raise SettingsError(f"Use at most {MAX_ADDRESS_LINES} lines for the address.")
    if any(len(line) > MAX_ADDRESS_LINE for line in lines):
        raise SettingsError(f"Each address line can be at most {MAX_ADDRESS_LINE} characters.")
    return "\n".join(lines)


def check_phone(text: str | None, country: str | None) -> str | None:
    """The lab's phone number in E.164 (read in the lab's country); None when blank."""
    text = (text or "").strip()
    if not text:
        return None
    number = to_e164(text, country)
    if number is None:
        raise SettingsError("Enter a phone number patients can call, for example "
                            "+91 80 4567 8900.")
    return number


def check_email(text: str | None) -> str | None:
    address = (text or "").strip().lower()
    if not address:
        return None
    if len(address) > 254 or not EMAIL.match(address):
        raise SettingsError("Enter an email address, for example billing@lab.example.")
    return address


def relative_luminance(colour: str) -> float:
    """WCAG 2.2's relative luminance of '#rrggbb'."""
    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i:i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_with_white(colour: str) -> float:
    return 1.05 / (relative_luminance(colour) + 0.05)


def check_brand_color(text: str | None) -> str | None:
    """'#0B5CAD' -> '#0b5cad'; blank -> None (the portal's own blue)."""
    colour = (text or "").strip().lower()
    if not colour:
        return None
    if not colour.startswith("#"):
        colour = "#" + colour
    if not HEX_COLOUR.match(colour):
        raise SettingsError("Enter the colour as # and six hex digits, for example #0b5cad.")
    ratio = contrast_with_white(colour)
    if ratio < MIN_BUTTON_CONTRAST:
        raise SettingsError(
            f"White text on {colour} has a contrast of {ratio:.1f}:1; the pay button needs "
            f"at least {MIN_BUTTON_CONTRAST}:1 to be readable. Choose a darker colour.")
    return colour


def check_logo(data: bytes) -> Logo:
    """The uploaded file as a Logo; its type is read from its first bytes, never its name."""
    if not data:
        raise SettingsError("The chosen file is empty. Choose a PNG, JPEG or WebP image.")
    if len(data) > MAX_LOGO_BYTES:
        raise SettingsError(f"The logo can be at most {MAX_LOGO_BYTES // 1024} KB; this file "
                            f"is {-(-len(data) // 1024)} KB. Choose a smaller image.")
    content_type = sniff_image_type(data)
    if content_type is None:
        if re.search(rb"<svg|<\?xml", data[:1024], re.IGNORECASE):
            raise SettingsError("SVG images are not accepted (they can carry script). "
                                "Choose a PNG, JPEG or WebP image.")
        raise SettingsError("The file is not a PNG, JPEG or WebP image. Choose one of those.")
    size = image_size(data, content_type)
    if size is None:
        raise SettingsError("The image could not be read: it may be damaged. "
                            "Save it again as PNG, JPEG or WebP.")
    return Logo(image=data, content_type=content_type,
                sha256=hashlib.sha256(data).hexdigest(), width=size[0], height=size[1])


def sniff_image_type(data: bytes) -> str | None:
    """'image/png', 'image/jpeg' or 'image/webp' from the file's magic bytes; else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes, content_type: str | None) -> tuple[int, int] | None:
    """(width, height) in pixels from the image's header; None if it cannot be read."""
    try:
        size = _header_size(data, content_type)
    except (struct.error, IndexError):
        return None
    if size and all(1 <= side <= MAX_LOGO_SIDE for side in size):
        return size
    return None


def _header_size(data: bytes, content_type: str | None) -> tuple[int, int] | None:
    if content_type == "image/png":
        if data[12:16] != b"IHDR":
            return None
        return struct.unpack(">II", data[16:24])
    if content_type == "image/jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD9)):  # no length
                i += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        return None
    if content_type == "image/webp":
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return (int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1)
    return None


def brand_css(colour: str) -> str:
    """The pay page in the lab's colour; served as a stylesheet (the CSP allows no inline style).

    The colour has at least 4.5:1 against white, so it also works as text on white; hover
    darkens it, which only raises the contrast.
    """
    hover = "#" + "".join(f"{int(int(colour[i:i + 2], 16) * 0.8):02x}" for i in (1, 3, 5))
    return (f".pay__head{{border-top:.35rem solid {colour};padding-top:.25rem}}\n"
            f".pay__button{{background:{colour}}}\n"
            f".pay__button:hover{{background:{hover}}}\n"
            f".pay__button--secondary{{background:#fff;color:{colour};border-color:{colour}}}\n"
            f".pay__link{{color:{colour}}}\n"
            f".consent input{{accent-color:{colour}}}\n")


def update_lab(session: Session, lab: Lab, new: LabSettings, *, user_id: int | None,
               ip: str | None = None, logo: Logo | None = None) -> list[str]:
    """Applies the changed settings and audits them (old and new values); the caller commits.

    A new logo_sha256 needs `logo`, the image with that hash; None removes the logo.
    """
    old = LabSettings.of(lab)
    changed = [f.name for f in fields(LabSettings)
               if getattr(old, f.name) != getattr(new, f.name)]
    if not changed:
        return []
    before, after = asdict(old), asdict(new)
    for name in changed:
        value = after[name]
        if name == "logo_sha256":
            _set_logo(lab, logo if value is not None else None, value)
            continue
        setattr(lab, name, list(value) if isinstance(value, tuple) else value)
    audit(session, lab_id=lab.id, user_id=user_id, action="lab.update", object_type="lab",
          object_id=lab.id, ip=ip, fields_changed=changed, currency=lab.currency,
          changes={name: {"from": _plain(before[name]), "to": _plain(after[name])}
                   for name in changed})
    return changed


def _set_logo(lab: Lab, logo: Logo | None, sha256: str | None) -> None:
    if sha256 is not None and (logo is None or logo.sha256 != sha256):
        raise ValueError("a new logo_sha256 needs the image with that hash")
    lab.logo_image = logo.image if logo else None
    lab.logo_content_type = logo.content_type if logo else None
    lab.logo_sha256 = sha256
    lab.logo_url = None  # the old third-party address is never used again


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value

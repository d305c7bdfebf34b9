"""The Pay form's CSRF token, without a session: a patient's GET sets no cookie.

The token is the link's own, signed with the app's secret key and a timestamp: a page can
only post to the link it was rendered for, within a day. A browser's cross-site POST is
refused on its Sec-Fetch-Site (or a foreign Origin) before the token is even read.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from flask import current_app, request
from flask_wtf.csrf import CSRFError
from itsdangerous import BadData, TimestampSigner

MAX_AGE_SECONDS = 24 * 3600
FIELD = "csrf_token"


def _signer() -> TimestampSigner:
    signer = current_app.extensions.get("portal_pay_form_signer")
    if signer is None:
        signer = TimestampSigner(current_app.config["SECRET_KEY"], salt="pay-form")
        current_app.extensions["portal_pay_form_signer"] = signer
    return signer


def _link_digest(link_token: str) -> bytes:
    return hashlib.sha256(link_token.encode()).hexdigest()[:32].encode()


def form_token(link_token: str) -> str:
    return _signer().sign(_link_digest(link_token)).decode()


def _same_origin() -> bool:
    """What the browser says of where the POST came from. Our pages send no referrer, so a
    browser's Origin on our own form is "null": that, and no header at all, leave the
    decision to the token."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return True
    ours = {f"{request.scheme}://{request.host}"}
    base = urlsplit(current_app.config["PORTAL_BASE_URL"])
    ours.add(f"{base.scheme}://{base.netloc}")
    return origin in ours


def check(link_token: str) -> None:
    """Raises CSRFError (the 'form expired' page) unless the POST is the link's own form."""
    if not _same_origin():
        raise CSRFError("The form was sent from another site.")
    sent = request.form.get(FIELD, "")
    try:
        value = _signer().unsign(sent, max_age=MAX_AGE_SECONDS)
    except BadData:
        raise CSRFError("The form has expired or is not valid.") from None
    if value != _link_digest(link_token):
        raise CSRFError("The form belongs to another link.")

"""QR codes of patient URLs, as SVG for screens and PNG for printers and messages."""

from __future__ import annotations

import io

import qrcode
import qrcode.image.pure
import qrcode.image.svg


def _qr(data: str) -> qrcode.QRCode:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4,
                         box_size=10)
    code.add_data(data)
    code.make(fit=True)
    return code


def svg(data: str) -> bytes:
    buffer = io.BytesIO()
    _qr(data).make_image(image_factory=qrcode.image.svg.SvgPathImage).save(buffer)
    return buffer.getvalue()


def png(data: str) -> bytes:
    buffer = io.BytesIO()
    _qr(data).make_image(image_factory=qrcode.image.pure.PyPNGImage).save(buffer)
    return buffer.getvalue()

"""Static files under content-hashed names, and compressed responses (brotli or gzip).

At start-up every file under static/ gets a name with its content's hash ('pay.css' ->
'pay.1a2b3c4d5e6f.css'); url_for('static', ...) hands out that name, served with a year of
immutable caching. The plain name still works, cached for five minutes only.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import brotli
from flask import Flask, Response, request, send_from_directory

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT_MAX_AGE = 300
HASHED_NAME = re.compile(r"^(?P<stem>.+)\.(?P<digest>[0-9a-f]{12})(?P<ext>\.[A-Za-z0-9]+)$")

COMPRESSIBLE = frozenset({"text/html", "text/css", "text/plain", "text/csv",
                          "text/javascript", "application/javascript", "application/json",
                          "application/problem+json", "image/svg+xml", "application/xml"})
MIN_SIZE = 512  # below this the headers outweigh the saving
MAX_BUFFERED = 4 * 1024 * 1024


def build_manifest(folder: Path) -> dict[str, str]:
    """{'pay.css': 'pay.1a2b3c4d5e6f.css', ...} for every file under `folder`."""
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        stem, dot, ext = name.rpartition(".")
        manifest[name] = f"{stem}.{digest}.{ext}" if dot and "/" not in ext else \
            f"{name}.{digest}"
    return manifest


def init_app(app: Flask) -> None:
    folder = Path(app.static_folder or "static")
    manifest = build_manifest(folder)
    originals = {hashed: name for name, hashed in manifest.items()}
    app.extensions["portal_static_manifest"] = manifest

    @app.url_defaults
    def hashed_static(endpoint, values):
        if endpoint == "static" and values.get("filename") in manifest:
            values["filename"] = manifest[values["filename"]]

    def static(filename: str):
        original = originals.get(filename)
        if original is not None:
            response = send_from_directory(folder, original, max_age=31536000)
            response.headers["Cache-Control"] = IMMUTABLE
            return response
        return send_from_directory(folder, filename, max_age=SHORT_MAX_AGE)

    app.view_functions["static"] = static
    app.after_request(compress)


def _chosen_encoding() -> str | None:
    accepted = request.accept_encodings
    if accepted.quality("br") > 0:
        return "br"
    if accepted.quality("gzip") > 0:
        return "gzip"
    return None


def compress(response: Response) -> Response:
    """Brotli or gzip for text the client accepts compressed; Vary on Accept-Encoding."""
    if response.mimetype not in COMPRESSIBLE or response.status_code < 200 \
            or response.status_code in (204, 206, 304) or request.method == "HEAD":
        return response
    response.vary.add("Accept-Encoding")
    if (response.is_streamed and not response.direct_passthrough) \
            or "Content-Encoding" in response.headers:
        return response
    if response.content_length is not None and not MIN_SIZE <= response.content_length \
            <= MAX_BUFFERED:
        return response
    encoding = _chosen_encoding()
    if encoding is None:
        return response
    response.direct_passthrough = False  # a static file: read it (small, and cached above)
    body = response.get_data()
    if len(body) < MIN_SIZE:
        return response
    packed = brotli.compress(body, quality=4) if encoding == "br" else \
        gzip.compress(body, compresslevel=5, mtime=0)
    response.set_data(packed)
    response.headers["Content-Encoding"] = encoding
    etag, weak = response.get_etag()
    if etag:
        response.set_etag(f"{etag}-{encoding}", weak)
    return response

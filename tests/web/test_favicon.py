"""The favicon: an SVG and a 32 px .ico linked from every base template, and /favicon.ico
answered (browsers ask for it whatever the page links)."""

from __future__ import annotations

import re

ICON_LINK = re.compile(r'<link rel="icon" href="([^"]+)"')


def test_favicon_ico_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/vnd.microsoft.icon"
    assert response.data[:4] == b"\x00\x00\x01\x00"  # an ICO header: reserved 0, type 1 (icon)
    assert response.data[22:26] == b"\x89PNG"  # its one image, a PNG
    assert response.cache_control.max_age and response.cache_control.max_age >= 86400


def linked_icons(client, path: str) -> list[str]:
    html = client.get(path).get_data(as_text=True)
    return ICON_LINK.findall(html)


def test_every_kind_of_page_links_both_icons(app, build, lab, staff_client):
    link = build.link(lab)
    pages = ["/", f"/links/{link.id}", f"/links/{link.id}/print", f"/pay/{link.token}",
             "/pay/not-a-token"]
    for path in pages:
        icons = linked_icons(staff_client, path)
        assert len(icons) == 2, path
        for href in icons:
            response = staff_client.get(href)
            assert response.status_code == 200, href
            assert response.mimetype in {"image/svg+xml", "image/vnd.microsoft.icon",
                                         "image/x-icon"}, (href, response.mimetype)
    svg = staff_client.get(linked_icons(staff_client, "/")[0]).get_data(as_text=True)
    assert svg.startswith("<svg") and 'viewBox="0 0 32 32"' in svg


def test_signed_out_pages_link_the_icon(client):
    assert len(linked_icons(client, "/login")) == 2

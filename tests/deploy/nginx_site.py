"""deploy/nginx/portal.conf made runnable in a temporary folder: placeholders filled, local
ports, a self-signed certificate (made with `cryptography`), logs and temp files in the folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "portal.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                  else None)


def _replace(text: str, old: str, new: str, count: int) -> str:
    """`old` replaced in the directives (not the comments); it must be there `count` times."""
    lines = text.splitlines(keepends=True)
    found = 0
    for n, line in enumerate(lines):
        if not line.lstrip().startswith("#"):
            found += line.count(old)
            lines[n] = line.replace(old, new)
    assert found == count, f"deploy/nginx/portal.conf: expected {old!r} {count}x, found {found}"
    return "".join(lines)


def render_site(folder: Path, *, nodes: tuple[str, str], https_port: int, http_port: int,
                cert: Path, key: Path, server_name: str = "127.0.0.1 localhost",
                app_root: Path = ROOT) -> Path:
    """The site with its placeholders filled and local listen addresses; returns its path."""
    text = SITE.read_text()
    for old, new, count in (
            ("__SERVER_NAME__", server_name, 2),
            ("__TLS_CERTIFICATE__", str(cert), 1),
            ("__TLS_CERTIFICATE_KEY__", str(key), 1),
            ("__APP_ROOT__", str(app_root), 2),
            ("__WEB_NODE_1__", nodes[0], 1),
            ("__WEB_NODE_2__", nodes[1], 1),
            ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
            ("    listen [::]:80;\n", "", 1),
            ("    listen [::]:443 ssl http2;\n", "", 1),
            ("/var/log/nginx/portal.access.log", str(folder / "access.log"), 2)):
        text = _replace(text, old, new, count)
    directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if "__" in line], "a placeholder is left unfilled"
    path = folder / "portal.conf"
    path.write_text(text)
    return path


def main_config(folder: Path, site: Path) -> Path:
    """A whole nginx.conf around the site, everything under `folder`."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / f"{name}_temp").mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the checkout and temp
    config = folder / "nginx.conf"
    config.write_text(f"""{user}worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {folder}/client_body_temp;
    proxy_temp_path {folder}/proxy_temp;
    fastcgi_temp_path {folder}/fastcgi_temp;
    uwsgi_temp_path {folder}/uwsgi_temp;
    scgi_temp_path {folder}/scgi_temp;
    include {site};
}}
""")
    return config


def nginx_command(folder: Path, config: Path, *args: str) -> list[str]:
    assert NGINX, "nginx is not installed (make nginx)"
    return [NGINX, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log"), *args]

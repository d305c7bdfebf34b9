"""The `portal` command (DESIGN §7)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from .models import Lab, Role, User

DEMO_PASSWORD = "demo-pass-123"  # nosec B105  # the documented demo password (DESIGN §7)


def _session():
    return current_app.extensions["portal_db"].session()


def _fail(message: str) -> None:
    raise click.ClickException(message)


def register_commands(app: Flask) -> None:
    for command in (db, demo, lab, user, gateway, api_key, serve, worker, keys):
        app.cli.add_command(command)


@click.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Create or migrate the schema to the newest revision.")
@with_appcontext
def db_upgrade() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before alembic's import chatter
    from .migrate import upgrade

    upgrade(current_app.extensions["portal_db"].engine)
    click.echo("Database is up to date.")


@db.command("revision", help="Autogenerate a migration from the models (for developers).")
@click.option("-m", "--message", required=True)
@with_appcontext
def db_revision(message: str) -> None:
    from .migrate import revision

    revision(current_app.extensions["portal_db"].engine, message)


def create_lab(session, slug: str, name: str, currency: str, **extra) -> Lab:
    from .money import is_known_currency

    if not is_known_currency(currency):
        _fail(f"{currency!r} is not an ISO 4217 currency code.")
    if session.scalar(select(Lab).where(Lab.slug == slug)):
        _fail(f"A lab with slug {slug!r} exists already.")
    lab_ = Lab(slug=slug, name=name, currency=currency.upper(), **extra)
    session.add(lab_)
    session.flush()
    return lab_


def create_user(session, email: str, lab_: Lab, role: Role, password: str) -> User:
    from .services.auth import hash_password

    email = email.strip().lower()
    if "@" not in email:
        _fail(f"{email!r} is not an email address.")
    if session.scalar(select(User).where(User.email == email)):
        _fail(f"A user with email {email} exists already.")
    try:
        password_hash = hash_password(password)
    except ValueError as exc:
        _fail(str(exc))
    user_ = User(lab_id=lab_.id, email=email, role=role, password_hash=password_hash)
    session.add(user_)
    session.flush()
    return user_


@click.command(help="Seed the demo lab, its users and its sandbox gateway (idempotent).")
@with_appcontext
def demo() -> None:
    from .services.keys import save_credentials

    session = _session()
    password = os.environ.get("PORTAL_DEMO_PASSWORD", DEMO_PASSWORD)
    lab_ = session.scalar(select(Lab).where(Lab.slug == "demo"))
    if lab_ is None:
        lab_ = create_lab(session, "demo", "Demo Diagnostics", "INR",
                          address="14 Residency Road\nBengaluru 560025",
                          phone="+918041234567", email="billing@demo.test")
    for email, role in (("admin@demo.test", Role.ADMIN), ("staff@demo.test", Role.STAFF)):
        if session.scalar(select(User).where(User.email == email)) is None:
            create_user(session, email, lab_, role, password)
    keys_ = current_app.config["PORTAL_ENCRYPTION_KEYS"]
    from .services.keys import stored_keys

    if stored_keys(session, lab_.id, "sandbox") is None:
        save_credentials(session, keys_, lab_, "sandbox",
                         {"webhook_secret": "whsec_" + secrets.token_urlsafe(24)})
    session.commit()
    click.echo("Demo lab 'demo' (Demo Diagnostics, INR, sandbox gateway) is ready: "
               "admin@demo.test and staff@demo.test.")


@click.group(help="Labs (tenants).")
def lab() -> None:
    pass


@lab.command("create", help="Add a lab.")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--currency", required=True)
@click.option("--timezone", default="Asia/Kolkata", show_default=True)
@click.option("--country", default="IN", show_default=True, help="Default phone region.")
@with_appcontext
def lab_create(slug: str, name: str, currency: str, timezone: str, country: str) -> None:
    from zoneinfo import available_timezones

    if timezone not in available_timezones():
        _fail(f"Unknown time zone {timezone!r}.")
    session = _session()
    created = create_lab(session, slug, name, currency, timezone=timezone,
                         country=country.upper())
    session.commit()
    click.echo(f"Lab {created.slug} created.")


@click.group(help="Staff accounts.")
def user() -> None:
    pass


@user.command("create", help="Add a user; the password comes from PORTAL_USER_PASSWORD or a "
                             "prompt.")
@click.argument("email")
@click.option("--lab", "lab_slug", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default="staff",
              show_default=True)
@with_appcontext
def user_create(email: str, lab_slug: str, role: str) -> None:
    session = _session()
    lab_ = session.scalar(select(Lab).where(Lab.slug == lab_slug)) or _fail(
        f"No lab with slug {lab_slug!r}.")
    password = os.environ.get("PORTAL_USER_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    created = create_user(session, email, lab_, Role(role), password)
    session.commit()
    click.echo(f"User {created.email} ({created.role}) created in lab {lab_.slug}.")


@click.group(help="Gateway credentials.")
def gateway() -> None:
    pass


@gateway.command("set", help="Read a JSON object of credential fields (and optional \"mode\") "
                             "from standard input; store it encrypted; make it the lab's "
                             "gateway.")
@click.argument("slug")
@click.argument("gateway_name", metavar="GATEWAY")
@with_appcontext
def gateway_set(slug: str, gateway_name: str) -> None:
    from .models import GatewayMode
    from .services.audit import audit
    from .services.keys import CredentialsError, save_credentials

    session = _session()
    lab_ = session.scalar(select(Lab).where(Lab.slug == slug)) or _fail(f"No lab {slug!r}.")
    try:
        values = json.loads(sys.stdin.read())
    except ValueError:
        _fail("Standard input is not a JSON object.")
    if not isinstance(values, dict):
        _fail("Standard input is not a JSON object.")
    mode = values.pop("mode", "test")
    if mode not in ("test", "live"):
        _fail('"mode" must be "test" or "live".')
    try:
        save_credentials(session, current_app.config["PORTAL_ENCRYPTION_KEYS"], lab_,
                         gateway_name, values, mode=GatewayMode(mode))
    except CredentialsError as exc:
        _fail(str(exc))
    audit(session, lab_id=lab_.id, user_id=None, action="gateway_keys.update",
          object_type="gateway", object_id=gateway_name, via="cli",
          fields_changed=sorted(values))
    session.commit()
    click.echo(f"{gateway_name} credentials stored for {slug} ({mode}); it is now the lab's "
               "gateway.")


@click.group("api-key", help="API keys of a lab's other systems.")
def api_key() -> None:
    pass


@api_key.command("create", help="Create an API key for the lab and print it once.")
@click.argument("slug")
@click.argument("name")
@with_appcontext
def api_key_create(slug: str, name: str) -> None:
    from .services.api_keys import create_api_key

    if not name.strip() or len(name.strip()) > 100:
        _fail("NAME must be 1 to 100 characters.")
    session = _session()
    lab_ = session.scalar(select(Lab).where(Lab.slug == slug)) or _fail(f"No lab {slug!r}.")
    new = create_api_key(session, lab_.id, name, actor_id=None, ip=None, via="cli")
    session.commit()
    click.echo(f"API key {new.api_key.prefix} ({new.api_key.name}) for {slug}; "
               "copy it now, it is not shown again:", err=True)
    click.echo(new.key)


@click.group(help="Encryption keys.")
def keys() -> None:
    pass


@keys.command("rotate", help="Re-encrypt stored gateway keys and webhook endpoint secrets "
              "under the newest encryption key.")
@with_appcontext
def keys_rotate() -> None:
    from .services.keys import rotate_all
    from .services.outhooks import rotate_encryption

    session = _session()
    count = rotate_all(session, current_app.config["PORTAL_ENCRYPTION_KEYS"])
    endpoints = rotate_encryption(session, current_app.config["PORTAL_ENCRYPTION_KEYS"])
    session.commit()
    click.echo(f"Re-encrypted {count} gateway key set(s) under the newest key.")
    click.echo(f"Re-encrypted the secrets of {endpoints} webhook endpoint(s).")


@click.command(help="Run the background worker: webhook delivery, status checks, sweeps.")
@with_appcontext
def worker() -> None:
    from pathlib import Path

    from . import logmask, logs
    from .exposition import use_multiprocess_dir
    from .worker.runner import run_worker

    # Counted into the metrics folder `portal serve` on this machine reads (PROMETHEUS_...).
    use_multiprocess_dir(Path(current_app.instance_path) / "metrics", clean=False)
    logs.configure()
    logmask.install(current_app.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_worker(current_app._get_current_object(), stop)


def default_workers() -> int:
    """Two processes per core: the work is mostly Python (one core per process at a time),
    and a second process covers a first one waiting on the database."""
    return max(2, min(2 * (os.cpu_count() or 1), 16))


SHM = "/dev/shm"  # nosec B108  # gunicorn's heartbeat files, as its docs advise
DEFAULT_THREADS = 2  # a few threads overlap I/O; more only fight over the GIL


@click.command(help="Run the production server (gunicorn).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=default_workers, show_default="2 per core", type=int)
@click.option("--threads", default=DEFAULT_THREADS, show_default=True, type=int)
@click.option("--with-worker", is_flag=True,
              help="Also run the background worker inside the server (single-box/SQLite).")
def serve(host: str, port: int, workers: int, threads: int, with_worker: bool) -> None:
    from pathlib import Path

    from . import ROOT
    from .exposition import use_multiprocess_dir

    instance = Path(os.environ.get("PORTAL_INSTANCE_PATH", str(ROOT / "instance")))
    use_multiprocess_dir(instance / "metrics")  # before the workers fork (prometheus-client)
    gunicorn_server(host, port, workers, threads, with_worker).run()


def gunicorn_server(host: str, port: int, workers: int, threads: int, with_worker: bool):
    from gunicorn.app.base import BaseApplication

    from . import create_app, logmask

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1 if with_worker else workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("keepalive", 5)  # behind a proxy that keeps connections open
            if os.path.isdir(SHM):  # the heartbeat file: in memory, not on disk
                self.cfg.set("worker_tmp_dir", SHM)
            self.cfg.set("accesslog", None)  # one access line, the app's (portal/observe.py)
            self.cfg.set("logger_class", logmask.gunicorn_logger_class())
            self.cfg.set("child_exit", _worker_exited)
            if with_worker:
                self.cfg.set("post_worker_init", _start_embedded_worker)

        def load(self):
            return create_app()

    return Server()


def _worker_exited(_arbiter, gunicorn_worker) -> None:
    from .exposition import process_exited

    process_exited(gunicorn_worker.pid)


def _start_embedded_worker(gunicorn_worker) -> None:
    from .worker.runner import start_worker_thread

    start_worker_thread(gunicorn_worker.wsgi)


def main() -> None:
    from . import create_app, logs

    logs.configure()  # before the app's modules log anything at import, in the chosen format

    cli = FlaskGroup(create_app=create_app, add_version_option=False, load_dotenv=False,
                     help="The lab payment-link portal.")
    cli.main(prog_name="portal")

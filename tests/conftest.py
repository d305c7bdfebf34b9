"""Shared fixtures: an app on a migrated SQLite file per test, builders, and sign-in helpers."""

from __future__ import annotations

import re
import secrets
import shutil
import threading
from contextlib import contextmanager
from datetime import timedelta

import jinja2
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from portal import create_app
from portal.extensions import make_engine
from portal.migrate import upgrade
from portal.models import (
    Lab,
    OnlinePayment,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    Role,
    User,
    utcnow,
)
from portal.services.auth import hash_password
from portal.services.keys import save_credentials
from portal.services.links import NewLink, create_link

PASSWORD = "correct horse battery"
ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """One SQLite file migrated by Alembic; each test gets a copy (fast and isolated)."""
    path = tmp_path_factory.mktemp("template") / "portal.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


class SharedTemplateCode(jinja2.BytecodeCache):
    """Compiled templates kept for every app of the test process (each test makes an app, and
    each app would compile every template it renders again). Jinja checks each template's
    source checksum before reusing its code."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    @staticmethod
    def _key(bucket: jinja2.bccache.Bucket) -> str:
        # A `finalize` (set by some tests) is compiled into the code: keep such code apart.
        finalize = bucket.environment.finalize
        return f"{bucket.key}:{getattr(finalize, '__qualname__', None)}"

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if (code := self._code.get(self._key(bucket))) is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[self._key(bucket)] = bucket.bytecode_to_string()


TEMPLATE_CODE = SharedTemplateCode()


def _share_url_builders() -> None:
    """Werkzeug compiles two Python functions per URL rule for every app: most of the time a
    test's create_app takes. They depend only on the rule's parsed parts (and its defaults,
    which we leave alone), so the apps of one test process share them. This leans on
    Werkzeug internals: if they change, the suite only gets slower."""
    from werkzeug.routing.rules import Rule

    compile_builder = getattr(Rule, "_compile_builder", None)
    if compile_builder is None or getattr(compile_builder, "shared", False):
        return
    builders: dict = {}

    def shared_builder(rule: Rule, append_unknown: bool = True):
        trace = getattr(rule, "_trace", None)
        if rule.defaults or trace is None:
            return compile_builder(rule, append_unknown)
        key = (rule.rule, tuple(trace), append_unknown)
        if key not in builders:
            builders[key] = compile_builder(rule, append_unknown)
        return builders[key]

    shared_builder.shared = True
    Rule._compile_builder = shared_builder


_share_url_builders()


def make_app(tmp_path, monkeypatch, database_url: str, **overrides):
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PORTAL_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", ENCRYPTION_KEY)
    monkeypatch.setenv("PORTAL_DATABASE_URL", database_url)
    monkeypatch.delenv("PORTAL_BASE_URL", raising=False)
    for name in ("PORTAL_REDIS_URL", "PORTAL_METRICS_TOKEN", "PORTAL_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)  # a developer's shell must not change tests
    app = create_app({"TESTING": True, **overrides})
    app.jinja_env.bytecode_cache = TEMPLATE_CODE
    return app


@pytest.fixture
def app(tmp_path, monkeypatch, migrated_sqlite):
    path = tmp_path / "portal.db"
    shutil.copy(migrated_sqlite, path)
    app = make_app(tmp_path, monkeypatch, f"sqlite:///{path}")
    yield app
    app.extensions["portal_db"].engine.dispose()


class FreshReadSession(Session):
    """The test's own view of the database, between the app's requests.

    Every read refreshes what it loads and ends its transaction at once: a transaction held
    open across a request would block the app (SQLite's write lock) or show a stale snapshot.
    """

    # Every ORM read (execute, scalar(s), get, refresh, lazy loads) passes through here.
    def _execute_internal(self, statement, params=None, *, execution_options=None, **kwargs):
        if self.new or self.dirty or self.deleted or getattr(statement, "is_dml", False):
            return super()._execute_internal(statement, params,
                                             execution_options=execution_options, **kwargs)
        options = {**(execution_options or {}), "populate_existing": True}
        result = super()._execute_internal(statement, params, execution_options=options,
                                           **kwargs)
        frozen = result.freeze() if getattr(result, "returns_rows", False) else None
        self.commit()
        return frozen() if frozen is not None else result


@pytest.fixture
def db(app):
    """A session of the app's database, outside any request."""
    url = app.config["PORTAL_DATABASE_URL"]
    engine = make_engine(url) if url.startswith("sqlite") else app.extensions["portal_db"].engine
    session = FreshReadSession(engine, expire_on_commit=False)
    yield session
    session.close()
    if engine is not app.extensions["portal_db"].engine:
        engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class Builder:
    """Makes domain objects with sensible defaults: `build.link(lab, amount=500)`."""

    def __init__(self, app, session):
        self.app = app
        self.session = session

    def lab(self, slug: str | None = None, *, sandbox_secret: str | None = "whsec_test_sandbox",
            gateway: str | None = None, credentials: dict | None = None, **fields) -> Lab:
        """A lab with the sandbox's credentials; with `gateway`, that gateway's `credentials`
        too, as the lab's default gateway."""
        slug = slug or f"lab-{secrets.token_hex(3)}"
        lab = Lab(slug=slug, name=fields.pop("name", f"{slug.title()} Diagnostics"),
                  currency=fields.pop("currency", "INR"), **fields)
        self.session.add(lab)
        self.session.flush()
        if sandbox_secret:
            save_credentials(self.session, self.app.config["PORTAL_ENCRYPTION_KEYS"], lab,
                             "sandbox", {"webhook_secret": sandbox_secret})
        self.session.commit()
        return self.connect(lab, gateway, credentials) if gateway else lab

    def connect(self, lab: Lab, gateway: str, credentials: dict, **lab_fields) -> Lab:
        """`lab` (with `lab_fields` changed) takes `gateway` with these credentials as its
        default gateway."""
        for name, value in lab_fields.items():
            setattr(lab, name, value)
        save_credentials(self.session, self.app.config["PORTAL_ENCRYPTION_KEYS"], lab, gateway,
                         credentials, make_default=True)
        self.session.commit()
        return lab

    def user(self, lab: Lab, email: str | None = None, role: Role = Role.STAFF,
             password: str = PASSWORD, active: bool = True) -> User:
        user = User(lab_id=lab.id, email=email or f"{secrets.token_hex(4)}@{lab.slug}.test",
                    role=role, password_hash=hash_password(password), active=active)
        self.session.add(user)
        self.session.commit()
        return user

    def link(self, lab: Lab, **fields) -> OnlinePayment:
        data = NewLink(
            patient_name=fields.pop("patient_name", "Asha Rao"),
            phone=fields.pop("phone", "+919876543210"),
            email=fields.pop("email", "asha@example.com"),
            amount=fields.pop("amount", 123450),
            currency=fields.pop("currency", lab.currency),
            bill_reference=fields.pop("bill_reference", f"B-{secrets.token_hex(3)}"),
            description=fields.pop("description", ""),
            expires_at=fields.pop("expires_at", utcnow() + timedelta(hours=72)),
            allow_partial=fields.pop("allow_partial", False),
        )
        link = create_link(self.session, lab, data, user_id=None)
        for key, value in fields.items():
            setattr(link, key, value)
        self.session.commit()
        return link

    def payment(self, link: OnlinePayment, *, status: PaymentStatus = PaymentStatus.SUCCEEDED,
                gateway: str = "sandbox", **fields) -> Payment:
        """A payment row of `link`, for its whole amount unless told; the link is not moved."""
        fields.setdefault("reference", f"pay_{secrets.token_hex(12)}")
        fields.setdefault("amount", link.amount)
        fields.setdefault("currency", link.currency)
        payment = Payment(lab_id=link.lab_id, online_payment_id=link.id, gateway=gateway,
                          status=status, **fields)
        if status == PaymentStatus.SUCCEEDED and "succeeded_at" not in fields:
            payment.succeeded_at = utcnow()
        self.session.add(payment)
        self.session.commit()
        return payment

    def refund(self, payment: Payment, amount: int, *,
               status: RefundStatus = RefundStatus.PENDING, **fields) -> Refund:
        """A refund row of `payment`; the payment's refunded total is not moved."""
        fields.setdefault("reference", f"rfd_{secrets.token_hex(12)}")
        refund = Refund(lab_id=payment.lab_id, payment_id=payment.id, amount=amount,
                        status=status, **fields)
        self.session.add(refund)
        self.session.commit()
        return refund


@pytest.fixture
def build(app, db):
    return Builder(app, db)


def gateway_lab(gateway: str, credentials: dict, **lab_fields):
    """A fixture: the `lab`, with `gateway` and these credentials as its default gateway.

    In a test module: `pt_lab = gateway_lab("paytabs", CREDENTIALS)`.
    """
    @pytest.fixture
    def connected_lab(build, lab) -> Lab:
        return build.connect(lab, gateway, credentials, **lab_fields)
    return connected_lab


@pytest.fixture
def lab(build):
    return build.lab("acme", name="Acme Diagnostics")


@pytest.fixture
def staff(build, lab):
    return build.user(lab, "staff@acme.test")


@pytest.fixture
def admin(build, lab):
    return build.user(lab, "admin@acme.test", role=Role.ADMIN)


CSRF_INPUT = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def sign_in(client, email: str, password: str = PASSWORD, **kwargs):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "email": email,
                                       "password": password}, **kwargs)


@pytest.fixture
def staff_client(client, staff):
    response = sign_in(client, staff.email)
    assert response.status_code == 302
    return client


@pytest.fixture
def admin_client(app, admin):
    client = app.test_client()
    assert sign_in(client, admin.email).status_code == 302
    return client


def pg_server_url() -> str:
    import os

    return os.environ.get("PORTAL_TEST_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> bool:
    try:
        engine = create_engine(pg_server_url(), connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def serving(app, *, set_base_url: bool = True):
    """The app over real HTTP on a free port of 127.0.0.1; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    if set_base_url:  # read at request time for patient, return and webhook URLs
        app.config["PORTAL_BASE_URL"] = url
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

"""The domain, as typed SQLAlchemy 2 models, with the transition tables that guard states."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    event,
    func,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    query_expression,
    relationship,
)

# Histogram size of the lower(...) search columns on PostgreSQL (default 100). At 100, one
# ANALYZE in ten put a bill-reference prefix on a whole bin (1% of the rows, not the 11 there
# were), and the planner then hashed every payment of the lab instead of looking up 11.
SEARCH_STATISTICS = 1000

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",  # short enough for PostgreSQL's 63
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_unless_exists(session: Session, model: type[Base], *unique: str) -> Any:
    """`INSERT ... ON CONFLICT (unique) DO NOTHING` in the session's SQL dialect: one round
    trip where a look-then-insert took two, and no race between them."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return insert(model).on_conflict_do_nothing(index_elements=list(unique))


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (SQLite keeps no zone), always handed back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=24,
                values_callable=lambda e: [m.value for m in e], validate_strings=True)


class Role(enum.StrEnum):
    ADMIN = "admin"
    STAFF = "staff"


class LinkStatus(enum.StrEnum):
    CREATED = "created"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class RefundStatus(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class GatewayMode(enum.StrEnum):
    TEST = "test"
    LIVE = "live"


class ExchangeKind(enum.StrEnum):
    CHECKOUT_CREATED = "checkout_created"
    WEBHOOK_RECEIVED = "webhook_received"
    RETURN_VERIFIED = "return_verified"
    STATUS_FETCHED = "status_fetched"
    REFUND_REQUESTED = "refund_requested"
    CHECKOUT_CANCELLED = "checkout_cancelled"
    CHARGE_REQUESTED = "charge_requested"  # a saved method charged off-session, and the answer


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


OPEN_LINK_STATES = frozenset({LinkStatus.CREATED, LinkStatus.PARTIALLY_PAID})
SETTLED_PAYMENT_STATES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED,
                                    PaymentStatus.REFUNDED})

# Terminal states appear only as keys with no way out, so they can never go back.
LINK_TRANSITIONS: dict[LinkStatus, frozenset[LinkStatus]] = {
    LinkStatus.CREATED: frozenset({LinkStatus.PARTIALLY_PAID, LinkStatus.PAID,
                                   LinkStatus.EXPIRED, LinkStatus.CANCELLED}),
    LinkStatus.PARTIALLY_PAID: frozenset({LinkStatus.PAID, LinkStatus.EXPIRED,
                                          LinkStatus.CANCELLED}),
    LinkStatus.PAID: frozenset(),
    LinkStatus.EXPIRED: frozenset(),
    LinkStatus.CANCELLED: frozenset(),
}

# failed -> succeeded: a patient declined once may retry on the same hosted page and pay;
# the gateway's word about money wins over our earlier record of the decline.
PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}),
    PaymentStatus.FAILED: frozenset({PaymentStatus.SUCCEEDED}),
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.PARTIALLY_REFUNDED,
                                        PaymentStatus.REFUNDED}),
    PaymentStatus.PARTIALLY_REFUNDED: frozenset({PaymentStatus.PARTIALLY_REFUNDED,
                                                 PaymentStatus.REFUNDED}),
    PaymentStatus.REFUNDED: frozenset(),
}

REFUND_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.AWAITING_APPROVAL: frozenset({RefundStatus.PENDING, RefundStatus.REJECTED}),
    RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    RefundStatus.SUCCEEDED: frozenset(),
    RefundStatus.FAILED: frozenset(),
    RefundStatus.REJECTED: frozenset(),
}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Lab(TimestampMixin, Base):
    __tablename__ = "labs"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="INR")
    country: Mapped[str] = mapped_column(String(2), default="IN")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Kolkata")
    locale: Mapped[str] = mapped_column(String(16), default="en_IN")
    default_language: Mapped[str] = mapped_column(String(16), default="en")  # i18n.LANGUAGES
    default_expiry_hours: Mapped[int] = mapped_column(default=72)
    default_gateway: Mapped[str] = mapped_column(String(32), default="sandbox")
    brand_color: Mapped[str | None] = mapped_column(String(7))
    logo_url: Mapped[str | None] = mapped_column(String(500))  # unused since 0004: never loaded
    # The logo itself, served from our origin (/brand/logo/...): deferred, pages need the hash.
    logo_image: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    logo_content_type: Mapped[str | None] = mapped_column(String(32))
    logo_sha256: Mapped[str | None] = mapped_column(String(64))
    reminder_hours_before: Mapped[list[int]] = mapped_column(JSON, default=list)
    refund_approval_threshold: Mapped[int | None] = mapped_column(BigInteger)
    # The smallest part payment a patient may make on the pay page (minor units); None: any.
    min_part_payment: Mapped[int | None] = mapped_column(BigInteger)
    refund_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    message_templates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # How patients reach the lab: on receipts and on the pages of links that cannot be paid.
    address: Mapped[str] = mapped_column(Text, default="", server_default="")
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))
    # Whether default_gateway has enabled keys, where a query asks for it (the API's key
    # lookup: services.api_keys); None when not asked.
    default_gateway_ready: Mapped[bool | None] = query_expression()

    __table_args__ = (CheckConstraint("default_expiry_hours > 0", name="expiry_positive"),)


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role, "user_role"), default=Role.STAFF)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None]

    lab: Mapped[Lab] = relationship()

    # Flask-Login's protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class StaffSession(Base):
    """One signed-in browser of a user. The cookie holds a random id; only its hash is kept."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    device: Mapped[str] = mapped_column(String(100), default="")  # e.g. "Chrome on Windows"
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed sign-ins per key (`email:...` or `ip:...`) in the current window."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]


class Customer(TimestampMixin, Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(254))
    external_id: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_customers_lab_phone", "lab_id", "phone"),
        Index("ix_customers_lab_email", "lab_id", "email"),
        Index("ix_customers_lab_external", "lab_id", "external_id"),
        # Case-insensitive prefix search (transactions): pattern ops serve LIKE 'x%' in any
        # collation.
        Index("ix_customers_lab_name_lower", "lab_id",
              func.lower(column("name")).label("name_lower"),
              postgresql_ops={"name_lower": "text_pattern_ops"},
              info={"statistics": SEARCH_STATISTICS}),
        Index("ix_customers_lab_email_lower", "lab_id",
              func.lower(column("email")).label("email_lower"),
              postgresql_ops={"email_lower": "text_pattern_ops"},
              info={"statistics": SEARCH_STATISTICS}),
    )


class OnlinePayment(TimestampMixin, Base):
    """A payment link for one bill."""

    __tablename__ = "online_payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    token: Mapped[str] = mapped_column(String(64), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    bill_reference: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    # The patient as entered for this bill: a later link on the same number never renames it.
    patient_name: Mapped[str | None] = mapped_column(String(200))
    patient_phone: Mapped[str | None] = mapped_column(String(20))
    patient_email: Mapped[str | None] = mapped_column(String(254))
    gateway: Mapped[str] = mapped_column(String(32))
    status: Mapped[LinkStatus] = mapped_column(str_enum(LinkStatus, "link_status"),
                                               default=LinkStatus.CREATED)
    expires_at: Mapped[datetime]
    allow_partial: Mapped[bool] = mapped_column(Boolean, default=False)
    # The patient's language (i18n.LANGUAGES); None on links made before 0008: the browser's.
    language: Mapped[str | None] = mapped_column(String(16))
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    paid_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False)
    attention_reason: Mapped[str | None] = mapped_column(String(300))

    lab: Mapped[Lab] = relationship()
    customer: Mapped[Customer | None] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    payments: Mapped[list[Payment]] = relationship(back_populates="online_payment",
                                                   order_by="Payment.id")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("amount_paid >= 0", name="amount_paid_not_negative"),
        Index("ix_online_payments_lab_status_id", "lab_id", "status", "id"),
        Index("ix_online_payments_lab_id_desc", "lab_id", "id"),
        Index("ix_online_payments_status_expires", "status", "expires_at"),
        Index("ix_online_payments_customer", "customer_id", "id"),
        Index("ix_online_payments_lab_patient_phone", "lab_id", "patient_phone"),
        Index("ix_online_payments_lab_bill_lower", "lab_id",
              func.lower(column("bill_reference")).label("bill_lower"),
              postgresql_ops={"bill_lower": "text_pattern_ops"},
              info={"statistics": SEARCH_STATISTICS}),
    )

    @property
    def settled_payments(self) -> list[Payment]:
        return [p for p in self.payments if p.status in SETTLED_PAYMENT_STATES]

    @property
    def outstanding(self) -> int:
        return max(self.amount - self.amount_paid, 0)

    def effective_status(self, now: datetime | None = None) -> LinkStatus:
        """Expiry is decided at read time too, not only by the worker's sweep."""
        now = now or utcnow()
        if self.status in OPEN_LINK_STATES and self.expires_at <= now:
            return LinkStatus.EXPIRED
        return self.status


class Payment(TimestampMixin, Base):
    """One attempt to pay a link through a gateway."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    online_payment_id: Mapped[int] = mapped_column(ForeignKey("online_payments.id"), index=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway: Mapped[str] = mapped_column(String(32))
    status: Mapped[PaymentStatus] = mapped_column(str_enum(PaymentStatus, "payment_status"),
                                                  default=PaymentStatus.PENDING)
    checkout_id: Mapped[str | None] = mapped_column(String(255))
    checkout_url: Mapped[str | None] = mapped_column(Text)
    gateway_transaction_id: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str | None] = mapped_column(String(50))
    card_brand: Mapped[str | None] = mapped_column(String(30))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    succeeded_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None]
    save_method_consent: Mapped[bool] = mapped_column(Boolean, default=False)

    online_payment: Mapped[OnlinePayment] = relationship(back_populates="payments")
    refunds: Mapped[list[Refund]] = relationship(back_populates="payment", order_by="Refund.id")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("amount_refunded >= 0 AND amount_refunded <= amount",
                        name="refund_within_amount"),
        Index("ix_payments_lab_created", "lab_id", "created_at", "id"),
        Index("ix_payments_gateway_txn", "gateway", "gateway_transaction_id"),
        Index("ix_payments_status_next_check", "status", "next_check_at"),
        # Keyset pages of /transactions per filter: (filter, created_at, id) walked backwards.
        Index("ix_payments_lab_status_created", "lab_id", "status", "created_at", "id"),
        Index("ix_payments_lab_gateway_created", "lab_id", "gateway", "created_at", "id"),
        Index("ix_payments_lab_currency_created", "lab_id", "currency", "created_at", "id"),
        Index("ix_payments_lab_gateway_txn", "lab_id", "gateway_transaction_id"),
    )


class Refund(TimestampMixin, Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[RefundStatus] = mapped_column(str_enum(RefundStatus, "refund_status"),
                                                 default=RefundStatus.PENDING)
    gateway_refund_id: Mapped[str | None] = mapped_column(String(255))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    payment: Mapped[Payment] = relationship(back_populates="refunds")

    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)


class PaymentTotal(Base):
    """Payments counted and summed per lab, currency, status and gateway, kept by triggers
    on `payments` (portal/totals_ddl.py): the transactions page's totals without reading
    every payment. Each key is spread over `totals_ddl.SLOTS` rows (payment id modulo), so
    concurrent payments of one lab do not queue on one row's lock; readers sum them."""

    __tablename__ = "payment_totals"

    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=0)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)


def _create_totals_triggers(_metadata, connection, tables=(), **_kw) -> None:
    """create_all (tests, tools) gets the triggers the migration makes."""
    from .totals_ddl import create

    if {"payments", "payment_totals"} <= {t.name for t in tables}:
        for statement in create(connection.dialect.name):
            connection.exec_driver_sql(statement)


event.listen(Base.metadata, "after_create", _create_totals_triggers)


def statistics_targets(table: Table) -> list[str]:
    """PostgreSQL's ALTER INDEX statements for the expression columns of `table`'s indexes
    that ask for a larger histogram (info={"statistics": n}); migration 0018 made them."""
    statements = []
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        target = index.info.get("statistics")
        for position, expression in enumerate(index.expressions, start=1):
            if target and not isinstance(expression, str | Column):
                statements.append(f"ALTER INDEX {index.name} ALTER COLUMN {position} "
                                  f"SET STATISTICS {int(target)}")
    return statements


def _set_statistics_targets(_metadata, connection, tables=(), **_kw) -> None:
    if connection.dialect.name == "postgresql":
        for table in tables:
            for statement in statistics_targets(table):
                connection.exec_driver_sql(statement)


event.listen(Base.metadata, "after_create", _set_statistics_targets)


class PaymentGatewayTransaction(Base):
    """Every exchange with a gateway, scrubbed of secrets: the audit trail and webhook inbox."""

    __tablename__ = "payment_gateway_transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    gateway: Mapped[str] = mapped_column(String(32))
    kind: Mapped[ExchangeKind] = mapped_column(str_enum(ExchangeKind, "exchange_kind"))
    online_payment_id: Mapped[int | None] = mapped_column(ForeignKey("online_payments.id"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    event_id: Mapped[str | None] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(100))
    signature_valid: Mapped[bool | None] = mapped_column(Boolean)
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    outcome: Mapped[str] = mapped_column(String(500), default="")
    error: Mapped[str | None] = mapped_column(String(1000))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("gateway", "event_id", name="uq_pgt_gateway_event"),
        Index("ix_pgt_link_created", "online_payment_id", "id"),
        Index("ix_pgt_lab_created", "lab_id", "id"),
        Index("ix_pgt_payment", "payment_id", "id"),
    )


class PaymentGatewayKeys(TimestampMixin, Base):
    """A lab's credentials for one gateway, encrypted as one JSON object."""

    __tablename__ = "payment_gateway_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    gateway: Mapped[str] = mapped_column(String(32))
    mode: Mapped[GatewayMode] = mapped_column(str_enum(GatewayMode, "gateway_mode"),
                                              default=GatewayMode.TEST)
    credentials_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    __table_args__ = (UniqueConstraint("lab_id", "gateway", name="uq_gateway_keys_lab_gateway"),)

    def __repr__(self) -> str:
        return f"<PaymentGatewayKeys lab={self.lab_id} gateway={self.gateway} mode={self.mode}>"


class CustomerPaymentProfile(TimestampMixin, Base):
    """A saved payment method at a gateway, by reference only: never card data."""

    __tablename__ = "customer_payment_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(32))
    gateway_customer_id: Mapped[str | None] = mapped_column(String(255))
    token: Mapped[str] = mapped_column(String(255))
    brand: Mapped[str | None] = mapped_column(String(30))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    lab: Mapped[Lab] = relationship()


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    in_flight: Mapped[bool] = mapped_column(Boolean, default=True)
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("lab_id", "key", name="uq_idempotency_lab_key"),)


class Notification(Base):
    """Outbox row: written in the transaction that caused it, sent later by the worker."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    online_payment_id: Mapped[int | None] = mapped_column(ForeignKey("online_payments.id"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "notification_channel"))
    recipient: Mapped[str] = mapped_column(String(254))
    template: Mapped[str] = mapped_column(String(50))
    status: Mapped[OutboxStatus] = mapped_column(str_enum(OutboxStatus, "notification_status"),
                                                 default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # "reminder:<link>:<hours>:<channel>", "receipt:<link>:<channel>": never sent twice.
    dedupe_key: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (
        Index("ix_notifications_status_next", "status", "next_attempt_at"),
        Index("ix_notifications_link", "online_payment_id", "id"),
        Index("ix_notifications_dedupe_key", "dedupe_key", unique=True),
    )


class Job(Base):
    """A unit of background work (webhook delivery, polls, sweeps), claimed with a lease."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("labs.id"))
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[OutboxStatus] = mapped_column(str_enum(OutboxStatus, "job_status"),
                                                 default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=8)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    dedupe: Mapped[str | None] = mapped_column(String(200))  # see queue.enqueue

    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),
                      Index("ix_jobs_kind_dedupe", "kind", "dedupe"))


class WorkerHeartbeat(Base):
    """A `portal worker` process says it is alive (every ~15 s); /readyz reads the newest."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_worker_heartbeats_seen_at", "seen_at"),)


class AuditLog(Base):
    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(50))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_audit_lab_created", "lab_id", "id"),)


class BulkUpload(Base):
    """A checked bulk-links file kept between its check and its creation, for its uploader only.

    The parsed rows live here, never in the page: amounts come from what was checked. Rows are
    cleared once the links exist; the row is deleted after `expires_at`.
    """

    __tablename__ = "bulk_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(43), unique=True)  # 256 random bits
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(String(255), default="")
    row_count: Mapped[int] = mapped_column(default=0)
    bad_count: Mapped[int] = mapped_column(default=0)
    rows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    results: Mapped[list[Any] | None] = mapped_column(JSON)  # set once the links exist
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_bulk_uploads_expires_at", "expires_at"),)


class SandboxCharge(Base):
    """The sandbox gateway's own record of an outcome: what its status API answers from."""

    __tablename__ = "sandbox_charges"

    reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    event_id: Mapped[str] = mapped_column(String(64))
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    refunds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InvalidTransition(Exception):
    pass


def _move(table: dict, obj: Any, new: enum.StrEnum) -> bool:
    """Moves `obj.status` along `table`; False when already there, raises when not allowed."""
    current = obj.status
    if current == new and new not in table[current]:
        return False
    if new not in table[current]:
        raise InvalidTransition(f"{type(obj).__name__} {current} -> {new} is not allowed")
    obj.status = new
    return True


def move_link(link: OnlinePayment, new: LinkStatus) -> bool:
    return _move(LINK_TRANSITIONS, link, new)


def move_payment(payment: Payment, new: PaymentStatus) -> bool:
    return _move(PAYMENT_TRANSITIONS, payment, new)


def move_refund(refund: Refund, new: RefundStatus) -> bool:
    return _move(REFUND_TRANSITIONS, refund, new)


# --- outgoing webhooks: the lab's own endpoints, and the outbox of events for them -------------

class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEndpoint(TimestampMixin, Base):
    """A URL of the lab's own systems that gets signed events; its secret is encrypted."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # After a rotation the old secret still signs (a second v1) until this moment.
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_until: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted_at: Mapped[datetime | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    __table_args__ = (Index("ix_webhook_endpoints_lab", "lab_id", "id"),)

    def __repr__(self) -> str:
        return f"<WebhookEndpoint {self.id} lab={self.lab_id} enabled={self.enabled}>"


class WebhookEvent(Base):
    """One event for the lab's systems: its id and body stay the same on every delivery."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    type: Mapped[str] = mapped_column(String(40))
    online_payment_id: Mapped[int | None] = mapped_column(ForeignKey("online_payments.id"))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row the worker sends, retries and gives up on."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id"))
    # Copied from the event: deliveries of one link to one endpoint go out in id order.
    online_payment_id: Mapped[int | None] = mapped_column(ForeignKey("online_payments.id"))
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus, "delivery_status"),
                                                   default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    retry_until: Mapped[datetime]
    last_status_code: Mapped[int | None]
    last_response: Mapped[str | None] = mapped_column(String(500))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    event: Mapped[WebhookEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()

    __table_args__ = (
        Index("ix_webhook_deliveries_chain", "endpoint_id", "online_payment_id", "status", "id"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )


class WebhookAttempt(Base):
    """One try of a delivery, and what the lab's system answered."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    response_excerpt: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

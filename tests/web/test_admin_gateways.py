from sqlalchemy import select

from portal.models import AuditLog, Lab, PaymentGatewayKeys
from portal.services.keys import load_credentials
from tests.conftest import csrf_from


def test_staff_cannot_open_admin_pages(staff_client):
    assert staff_client.get("/admin/gateways").status_code == 403
    assert staff_client.get("/admin/gateways/sandbox").status_code == 403
    assert staff_client.post("/admin/gateways/sandbox", data={}).status_code in (400, 403)
    assert "Gateways" not in staff_client.get("/links").get_data(as_text=True)


def test_admin_sees_gateways_and_webhook_url(admin_client):
    page = admin_client.get("/admin/gateways").get_data(as_text=True)
    assert "Sandbox (offline test gateway)" in page and "In use" in page
    detail = admin_client.get("/admin/gateways/sandbox").get_data(as_text=True)
    assert "http://127.0.0.1:5000/payments/webhook/sandbox" in detail
    assert "payment.succeeded" in detail
    assert "whsec_test_sandbox" not in detail  # secrets are never shown back
    assert "Stored — leave blank to keep" in detail


def test_admin_changes_the_secret_and_it_is_stored_encrypted(admin_client, app, db, lab):
    token = csrf_from(admin_client.get("/admin/gateways/sandbox").get_data(as_text=True))
    response = admin_client.post("/admin/gateways/sandbox", data={
        "csrf_token": token, "webhook_secret": "whsec_brand_new_value", "mode": "live",
        "make_default": "y"})
    assert response.status_code == 303
    row = db.scalar(select(PaymentGatewayKeys).where(PaymentGatewayKeys.lab_id == lab.id))
    assert b"whsec_brand_new_value" not in row.credentials_encrypted
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    assert load_credentials(db, keys, lab.id, "sandbox") == {
        "webhook_secret": "whsec_brand_new_value"}
    assert row.mode.value == "live"
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "gateway_keys.update"))
    assert entry.detail["fields_changed"] == ["webhook_secret"]
    assert "whsec_brand_new_value" not in str(entry.detail)


def test_blank_secret_keeps_the_stored_one(admin_client, app, db, lab):
    token = csrf_from(admin_client.get("/admin/gateways/sandbox").get_data(as_text=True))
    admin_client.post("/admin/gateways/sandbox", data={
        "csrf_token": token, "webhook_secret": "", "mode": "test", "make_default": "y"})
    assert load_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab.id, "sandbox") == {
        "webhook_secret": "whsec_test_sandbox"}


def test_first_setup_needs_the_secret(admin_client, build, db):
    lab = db.scalar(select(Lab).where(Lab.slug == "acme"))
    db.delete(db.scalar(select(PaymentGatewayKeys)))
    db.commit()
    token = csrf_from(admin_client.get("/admin/gateways/sandbox").get_data(as_text=True))
    response = admin_client.post("/admin/gateways/sandbox", data={
        "csrf_token": token, "webhook_secret": "", "mode": "test"})
    assert response.status_code == 422
    assert "webhook_secret is required for sandbox" in response.get_data(as_text=True)
    assert db.scalar(select(PaymentGatewayKeys).where(
        PaymentGatewayKeys.lab_id == lab.id)) is None


def test_unknown_gateway_is_404(admin_client):
    assert admin_client.get("/admin/gateways/paypal").status_code == 404

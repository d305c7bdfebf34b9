"""Labs whose keys are marked "test" reach the gateway's test host, unless overridden."""

import pytest

from gateways import GATEWAYS
from portal.models import GatewayMode
from portal.services.keys import configured_gateway, save_credentials

CREDENTIALS = {
    "square": {"access_token": "EAAAtoken", "location_id": "L1",
               "webhook_signature_key": "sig"},
    "pesopay": {"merchant_id": "1", "secure_hash_secret": "s", "api_login_id": "u",
                "api_password": "p"},
    "phonepe_v1": {"merchant_id": "M1", "salt_key": "salt", "salt_index": "1"},
}


@pytest.mark.parametrize("name", sorted(CREDENTIALS))
def test_test_mode_reaches_the_test_host(app, db, lab, name):
    cls = GATEWAYS[name]
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    save_credentials(db, keys, lab, name, CREDENTIALS[name], mode=GatewayMode.TEST)
    db.commit()
    assert configured_gateway(db, app.config, lab.id, name).api_base == cls.sandbox_api_base
    save_credentials(db, keys, lab, name, CREDENTIALS[name], mode=GatewayMode.LIVE)
    db.commit()
    assert configured_gateway(db, app.config, lab.id, name).api_base == cls.default_api_base
    app.config[f"PORTAL_{name.upper()}_API_BASE"] = "http://127.0.0.1:9"
    assert configured_gateway(db, app.config, lab.id, name).api_base == "http://127.0.0.1:9"

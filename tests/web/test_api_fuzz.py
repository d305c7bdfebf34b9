"""schemathesis against the live app, from its own OpenAPI document: no 5xx, no response that
breaks the documented schema, status codes and content types as documented."""

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.models import utcnow
from portal.services.links import NewLink, create_link
from tests.api_helpers import make_api_key
from tests.conftest import serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES_PER_OPERATION = 80


def fuzz(operation, existing_link_id: int, mode: GenerationMode) -> int:
    """Runs generated cases of one operation through every check; returns how many ran."""
    count = 0

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        nonlocal count
        if "id" in (case.path_parameters or {}) and count % 4 == 0:
            case.path_parameters["id"] = existing_link_id  # also reach a real link
        count += 1
        case.call_and_validate(checks=CHECKS)

    run()
    return count


def test_schemathesis_finds_no_failures(app, db, lab, capsys):
    from datetime import timedelta

    app.config["PORTAL_API_RATE_LIMIT"] = 100_000
    key = make_api_key(db, lab)
    link = create_link(db, lab, NewLink(
        patient_name="Asha Rao", phone="+919876543210", email=None, amount=1000,
        currency="INR", bill_reference="B-1", description="",
        expires_at=utcnow() + timedelta(days=1)), user_id=None)
    db.commit()
    stats: dict[str, int] = {}
    with serving(app) as live:
        schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
        schema.config.update(base_url=live, headers={"Authorization": f"Bearer {key}"})
        for result in schema.get_all_operations():
            operation = result.ok()
            # the webhook body is any payload: there is no invalid one to generate; the
            # endpoint list takes no input at all
            no_negative = "/payments/webhook/" in operation.label \
                or operation.label == "GET /webhook-endpoints"
            modes = [GenerationMode.POSITIVE] + ([] if no_negative else [GenerationMode.NEGATIVE])
            for mode in modes:
                stats[f"{operation.label} ({mode.value})"] = fuzz(operation, link.id, mode)
    with capsys.disabled():
        print(f"\nschemathesis: {len(stats)} operations, {sum(stats.values())} cases: {stats}")
    # 4 payment operations (batch included) and 2 of /webhook-endpoints both ways; the gateway
    # webhook and the endpoint list (no input: one case is all there is) one way.
    no_input = "GET /webhook-endpoints (positive)"
    assert len(stats) == 14 and stats[no_input] >= 1
    assert all(count >= 20 for label, count in stats.items() if label != no_input)

"""The OpenAPI 3.1 document of the JSON API, kept true by tests against the running app."""

from __future__ import annotations

from copy import deepcopy

ISO_TIME = {"type": "string", "format": "date-time"}
LANGUAGE_CODES = ["en", "hi", "ta", "te", "bn", "mr", "ar", "zh-Hant", "fil", "es"]  # DESIGN §9
ERROR_CODES = ["unauthorized", "rate_limited", "payload_too_large", "invalid_json",
               "validation_failed", "not_found", "idempotency_key_reused",
               "idempotency_key_in_flight", "invalid_idempotency_key", "refund_not_allowed",
               "gateway_not_configured", "invalid_parameter", "unavailable", "internal_error",
               "method_not_allowed", "bad_request", "unsupported_media_type",
               "request_entity_too_large", "too_many_requests", "forbidden", "conflict",
               "unknown_gateway", "unknown_reference", "bad_signature", "malformed_payload",
               "not_configured", "unknown_status", "gateway_error", "timeout", "unreachable",
               "invalid_url", "https_required", "unresolvable_host", "forbidden_address",
               "unknown_event_type", "no_event_types", "too_many_endpoints",
               "duplicate_bill_reference"]
# Outgoing webhooks (portal/services/outhooks.py): what the lab's own systems receive.
EVENT_TYPES = ["link.created", "link.paid", "link.partially_paid", "link.expired",
               "link.cancelled", "payment.failed", "refund.succeeded", "refund.failed"]
EVENT_SUMMARIES = {
    "link.created": "A payment link was created (by staff, the API or in bulk).",
    "link.paid": "The link is paid in full.",
    "link.partially_paid": "A payment succeeded and part of the amount is still due.",
    "link.expired": "The link expired unpaid (or partly paid).",
    "link.cancelled": "Staff cancelled the link.",
    "payment.failed": "An attempt to pay failed; the patient may try again.",
    "refund.succeeded": "A refund went through; see data.payments[].refunds[].",
    "refund.failed": "A refund failed at the gateway; see data.payments[].refunds[].",
}
SIGNATURE_DOC = (
    "Portal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" keyed with "
    "the endpoint's secret>. While a rotated secret is still valid (24 hours) a second v1 is "
    "sent: accept the request when any v1 matches. Reject a t older than 5 minutes (replays). "
    "Answer 2xx within 10 seconds; anything else (3xx included: redirects are not followed) is "
    "retried with exponential backoff for three days. Events of one link reach one endpoint in "
    "order; the id is the same on every retry and redelivery: use it to ignore duplicates.")

LINK_EXAMPLE = {
    "id": 42, "url": "https://pay.example-lab.com/pay/Xq3...", "qr_url":
    "https://pay.example-lab.com/pay/Xq3.../qr.svg", "status": "created", "amount": 123450,
    "currency": "INR", "amount_paid": 0, "bill_reference": "B-2026-0042",
    "allow_partial": False, "gateway": "razorpay", "metadata": {"lis_order": "77881"},
    "expires_at": "2026-11-29T10:00:00Z", "created_at": "2026-11-26T10:00:00Z"}
ENDPOINT_EXAMPLE = {"id": 3, "url": "https://lis.example-lab.com/hooks/payments",
                    "description": "LIS", "events": ["link.paid", "refund.succeeded"],
                    "enabled": True, "created_at": "2026-11-26T10:00:00Z"}
SHOWN_ONCE = "whsec_..."  # the shape of an endpoint secret, in the example
CREATED_EXAMPLE = {**ENDPOINT_EXAMPLE, "secret": SHOWN_ONCE}
REFUND_EXAMPLE = {"id": 7, "payment_id": 91, "amount": 50000, "currency": "INR",
                  "status": "pending", "reason": "Test cancelled",
                  "created_at": "2026-11-27T09:30:00Z"}
PAYMENT_EXAMPLE = {
    "id": 91, "reference": "pay_5f0c2a9b1d3e4f5a6b7c8d9e", "amount": 123450, "currency": "INR",
    "status": "succeeded", "gateway": "razorpay", "method": "upi",
    "gateway_transaction_id": "pay_IH3d0ara9bSsjQ", "amount_refunded": 0,
    "created_at": "2026-11-26T10:05:00Z", "succeeded_at": "2026-11-26T10:06:10Z",
    "refunds": []}


def _error(code: str, message: str, fields: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _response(description: str, schema_ref: str, example: dict) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema_ref}"}, "example": example}}}


def _errors(*statuses: int) -> dict:
    examples = {
        400: _error("invalid_json", "The body is not valid JSON."),
        401: _error("unauthorized", "A valid API key is required: Authorization: Bearer <key>."),
        404: _error("not_found", "No payment link with this id."),
        409: _error("idempotency_key_in_flight",
                    "A request with this Idempotency-Key is still being processed."),
        413: _error("payload_too_large", "The body is larger than 65536 bytes."),
        422: _error("validation_failed", "Some fields are missing or invalid.",
                    {"amount": "Must be more than zero."}),
        429: _error("rate_limited", "Too many requests for this API key."),
        503: _error("unavailable", "The service is briefly unavailable; retry later."),
    }
    return {str(s): _response(f"Error {s}", "Error", examples[s]) for s in statuses}


IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Replays the first answer for 24 hours for the same key and body; the same "
                   "key with another body answers 422, and 409 while the first is running.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}

def _event_schema_name(event_type: str) -> str:
    return "Event_" + event_type.replace(".", "_")


SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "enum": ERROR_CODES},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {
                    "type": "array", "description": "POST /payments/batch: the problems of "
                    "each refused item, by its index in the request",
                    "items": {
                        "type": "object", "required": ["index", "code", "message"],
                        "additionalProperties": False,
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "code": {"type": "string", "enum": ["validation_failed",
                                                                "invalid_json",
                                                                "duplicate_bill_reference"]},
                            "message": {"type": "string"},
                            "fields": {"type": "object",
                                       "additionalProperties": {"type": "string"}}}}}}}}},
    "BatchRequest": {
        "type": "object", "required": ["items"], "additionalProperties": False,
        "properties": {"items": {
            "type": "array", "minItems": 1, "maxItems": 1000,
            "items": {"$ref": "#/components/schemas/InitiateRequest"}}}},
    "BatchResponse": {
        "type": "object", "required": ["items"], "additionalProperties": False,
        "properties": {"items": {"type": "array",
                                 "items": {"$ref": "#/components/schemas/Link"}}}},
    "Customer": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "phone": {"type": "string", "maxLength": 30,
                      "description": "E.164, or national in the lab's country"},
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "external_id": {"type": "string", "maxLength": 100}}},
    "InitiateRequest": {
        "type": "object", "required": ["amount", "currency", "bill_reference", "customer"],
        "additionalProperties": False,
        "properties": {
            "amount": {"type": "integer", "minimum": 1, "maximum": 10**12,
                       "description": "Minor units of the currency (paise for INR)."},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "bill_reference": {"type": "string", "minLength": 1, "maxLength": 100},
            "customer": {"allOf": [{"$ref": "#/components/schemas/Customer"}], "description": (
                "The patient. The link keeps these details as given. It goes under the lab's "
                "patient with this external_id; else under one with the same phone or email "
                "and the same name (case and spacing aside); else under a new patient record, "
                "even when the phone is already another's (families share phones). An "
                "existing record is never renamed or given another phone or email; only its "
                "empty details are filled.")},
            "expires_at": ISO_TIME,
            "expires_in": {"type": "integer", "minimum": 300, "maximum": 90 * 86400,
                           "description": "Seconds from now; or give expires_at."},
            "gateway": {"type": "string", "enum": ["stripe", "razorpay", "phonepe",
                                                   "phonepe_v1", "paytabs", "square",
                                                   "pesopay", "sandbox"]},
            "notify": {"type": "array", "uniqueItems": True,
                       "items": {"type": "string", "enum": ["email", "sms", "whatsapp"]},
                       "description": "Send the link now. `whatsapp` needs the lab's approved "
                                      "WhatsApp templates (admin Messages page)."},
            "allow_partial": {"type": "boolean"},
            "language": {"type": "string", "enum": LANGUAGE_CODES,
                         "description": "The patient's language for the page and messages; "
                                        "default: the lab's."},
            "description": {"type": "string", "maxLength": 500},
            "metadata": {"type": "object", "maxProperties": 20,
                         "propertyNames": {"minLength": 1, "maxLength": 40},
                         "additionalProperties": {"type": "string", "maxLength": 500}}}},
    "Link": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "url", "qr_url", "status", "amount", "currency", "amount_paid",
                     "bill_reference", "allow_partial", "gateway", "metadata", "expires_at",
                     "created_at"],
        "properties": {
            "id": {"type": "integer"}, "url": {"type": "string"},
            "qr_url": {"type": "string"},
            "status": {"type": "string", "enum": ["created", "partially_paid", "paid",
                                                  "expired", "cancelled"]},
            "amount": {"type": "integer"}, "currency": {"type": "string"},
            "amount_paid": {"type": "integer"}, "bill_reference": {"type": "string"},
            "allow_partial": {"type": "boolean"}, "gateway": {"type": "string"},
            "language": {"type": ["string", "null"], "enum": [*LANGUAGE_CODES, None]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "expires_at": ISO_TIME, "created_at": ISO_TIME,
            "payments": {"type": "array", "items": {"$ref": "#/components/schemas/Payment"}}}},
    "Payment": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "reference", "amount", "currency", "status", "gateway",
                     "amount_refunded", "created_at", "refunds"],
        "properties": {
            "id": {"type": "integer"}, "reference": {"type": "string"},
            "amount": {"type": "integer"}, "currency": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "succeeded", "failed",
                                                  "partially_refunded", "refunded"]},
            "gateway": {"type": "string"}, "method": {"type": ["string", "null"]},
            "gateway_transaction_id": {"type": ["string", "null"]},
            "amount_refunded": {"type": "integer"},
            "created_at": ISO_TIME, "succeeded_at": {"type": ["string", "null"],
                                                     "format": "date-time"},
            "refunds": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}}}},
    "RefundRequest": {
        "type": "object", "required": ["payment_id", "amount"], "additionalProperties": False,
        "properties": {
            "payment_id": {"type": "integer", "minimum": 1},
            "amount": {"type": "integer", "minimum": 1, "maximum": 10**12},
            "reason": {"type": "string", "maxLength": 200}}},
    "Refund": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "payment_id", "amount", "currency", "status", "reason",
                     "created_at"],
        "properties": {
            "id": {"type": "integer"}, "payment_id": {"type": "integer"},
            "amount": {"type": "integer"}, "currency": {"type": "string"},
            "status": {"type": "string", "enum": ["awaiting_approval", "pending",
                                                  "succeeded", "failed", "rejected"]},
            "reason": {"type": "string"}, "created_at": ISO_TIME}},
    "WebhookAck": {"type": "object"},
    "WebhookEndpointRequest": {
        "type": "object", "required": ["url"], "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 2000,
                    "description": "https:// (http:// only in test mode or development); "
                                   "never a private, loopback or link-local address."},
            "events": {"type": "array", "minItems": 1, "uniqueItems": True,
                       "items": {"type": "string", "enum": EVENT_TYPES},
                       "description": "Default: every event type."},
            "description": {"type": "string", "maxLength": 200}}},
    "WebhookEndpoint": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "url", "description", "events", "enabled", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "url": {"type": "string"},
            "description": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string", "enum": EVENT_TYPES}},
            "enabled": {"type": "boolean"}, "created_at": ISO_TIME}},
    "WebhookEndpointList": {
        "type": "object", "required": ["data"], "additionalProperties": False,
        "properties": {"data": {"type": "array",
                                "items": {"$ref": "#/components/schemas/WebhookEndpoint"}}}},
    **{_event_schema_name(t): {
        "type": "object", "additionalProperties": False,
        "required": ["id", "type", "created", "data"],
        "description": EVENT_SUMMARIES[t],
        "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$",
                   "description": "Stable: the same on every retry and redelivery."},
            "type": {"const": t},
            "created": {"type": "integer", "description": "When it happened: unix seconds."},
            "data": {"$ref": "#/components/schemas/Link",
                     "description": "The link as GET /payments/status/{id} shows it, at the "
                                    "moment of the event (payments included)."}}}
       for t in EVENT_TYPES},
}


SCHEMAS["WebhookEndpointCreated"] = {
    **SCHEMAS["WebhookEndpoint"],
    "required": [*SCHEMAS["WebhookEndpoint"]["required"], "secret"],
    "properties": {**SCHEMAS["WebhookEndpoint"]["properties"],
                   "secret": {"type": "string", "description": "Shown only in this answer."}}}


def document(base_url: str) -> dict:
    status_example = {**LINK_EXAMPLE, "status": "paid", "amount_paid": 123450,
                      "payments": [PAYMENT_EXAMPLE]}
    return deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Lab payment links API", "version": "1.0.0",
                 "description": "Create payment links, follow them and refund payments. "
                                "Amounts are integers in the currency's minor unit."},
        "servers": [{"url": base_url}],
        "security": [{"apiKey": []}],
        "paths": {
            "/payments/initiate": {"post": {
                "operationId": "initiatePayment", "summary": "Create a payment link",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/InitiateRequest"},
                    "example": {"amount": 123450, "currency": "INR",
                                "bill_reference": "B-2026-0042",
                                "customer": {"name": "Asha Rao", "phone": "+919876543210",
                                             "email": "asha@example.com"},
                                "expires_in": 259200, "notify": ["sms"],
                                "metadata": {"lis_order": "77881"}}}}},
                "responses": {"201": _response("The link", "Link", LINK_EXAMPLE),
                              **_errors(400, 401, 409, 413, 422, 429, 503)}}},
            "/payments/batch": {"post": {
                "operationId": "initiatePaymentBatch",
                "summary": "Create many payment links at once, all or none",
                "description": "Each item is an initiate body. Every item is checked first; "
                               "if any is invalid (or two share a bill_reference, compared "
                               "without case) nothing is created and the answer lists each "
                               "refused item by its index. Otherwise all links are created in "
                               "one transaction and returned in the order given. At most "
                               "1,000 items and 1 MB.",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/BatchRequest"},
                    "example": {"items": [
                        {"amount": 123450, "currency": "INR", "bill_reference": "B-2026-0042",
                         "customer": {"name": "Asha Rao", "phone": "+919876543210"},
                         "notify": ["sms"]},
                        {"amount": 80000, "currency": "INR", "bill_reference": "B-2026-0043",
                         "customer": {"name": "Ravi Kumar", "email": "ravi@example.com"},
                         "expires_in": 259200}]}}}},
                "responses": {
                    "201": _response("The links, in the order of the items", "BatchResponse",
                                     {"items": [LINK_EXAMPLE]}),
                    **_errors(400, 401, 409, 413, 429, 503),
                    "422": _response(
                        "Nothing created: the items' problems by index (or a batch-level "
                        "problem in fields)", "Error",
                        {"error": {"code": "validation_failed",
                                   "message": "Some items are invalid; nothing was created.",
                                   "items": [{"index": 1, "code": "validation_failed",
                                              "message": "Some fields are missing or invalid.",
                                              "fields": {"amount": "Must be more than zero."}},
                                             {"index": 3, "code": "duplicate_bill_reference",
                                              "message": "The same bill_reference as item 0.",
                                              "fields": {"bill_reference":
                                                         "Also in item 0."}}]}})}}},
            "/payments/status/{id}": {"get": {
                "operationId": "paymentStatus", "summary": "A link, its payments and refunds",
                "parameters": [
                    {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 1}},  # larger ids: 404
                    {"name": "refresh", "in": "query", "required": False,
                     "description": "Ask the gateway about pending payments first.",
                     "schema": {"type": "string", "enum": ["true", "false"]}}],
                "responses": {"200": _response("The link", "Link", status_example),
                              **_errors(400, 401, 404, 429, 503)}}},
            "/payments/refund": {"post": {
                "operationId": "refundPayment", "summary": "Refund a payment, fully or partly",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RefundRequest"},
                    "example": {"payment_id": 91, "amount": 50000,
                                "reason": "Test cancelled"}}}},
                "responses": {"201": _response("The refund", "Refund", REFUND_EXAMPLE),
                              **_errors(400, 401, 404, 409, 413, 422, 429, 503)}}},
            "/payments/webhook/{gateway}": {"post": {
                "operationId": "gatewayWebhook",
                "summary": "Gateway notifications (signed by the gateway, not an API key)",
                "security": [],
                "parameters": [{"name": "gateway", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {}},
                    "application/x-www-form-urlencoded": {"schema": {}}}},
                "responses": {
                    "200": {"description": "Received (or ignored); PesoPay gets text OK",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/WebhookAck"}},
                                "text/plain": {"schema": {"type": "string"}}}},
                    "400": _response("Refused: bad signature or payload; nothing changed",
                                     "Error", _error("bad_signature",
                                                     "Signature verification failed.")),
                    "404": _response("No such address (a control character in the path)",
                                     "Error", _error("not_found", "No such page.")),
                    "413": _response("Too large", "Error",
                                     _error("request_entity_too_large", "Too large.")),
                    "503": _response("Could not be confirmed or stored now (Retry-After); send "
                                     "again", "Error",
                                     _error("gateway_error", "Gateway unavailable."))}}},
            "/webhook-endpoints": {
                "get": {
                    "operationId": "listWebhookEndpoints",
                    "summary": "The lab's webhook endpoints (secrets are never shown again)",
                    "responses": {"200": _response("The endpoints", "WebhookEndpointList",
                                                   {"data": [ENDPOINT_EXAMPLE]}),
                                  **_errors(401, 429, 503)}},
                "post": {
                    "operationId": "createWebhookEndpoint",
                    "summary": "Register an endpoint; the answer carries its secret, once",
                    "description": "Not idempotent: the secret is never stored in clear, so "
                                   "no answer can be replayed. After a lost answer, list the "
                                   "endpoints and delete the duplicate.",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/WebhookEndpointRequest"},
                        "example": {"url": "https://lis.example-lab.com/hooks/payments",
                                    "events": ["link.paid", "refund.succeeded"]}}}},
                    "responses": {
                        "201": _response("The endpoint and its secret", "WebhookEndpointCreated",
                                         CREATED_EXAMPLE),
                        **_errors(400, 401, 413, 422, 429, 503)}}},
            "/webhook-endpoints/{id}": {"delete": {
                "operationId": "deleteWebhookEndpoint",
                "summary": "Stop sending to an endpoint and remove it",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"204": {"description": "Deleted"},
                              **_errors(401, 404, 429, 503)}}},
        },
        "webhooks": {t: {"post": {
            "operationId": "event_" + t.replace(".", "_"),
            "summary": EVENT_SUMMARIES[t], "description": SIGNATURE_DOC,
            "security": [],
            "parameters": [{"name": "Portal-Signature", "in": "header", "required": True,
                            "schema": {"type": "string"},
                            "example": "t=1764151570,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7"
                                       "7a0e56ff536d0ce8e108d8bd"}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{_event_schema_name(t)}"},
                "example": {"id": "evt_3f9c0d1e2a4b5c6d7e8f9a0b1c2d3e4f", "type": t,
                            "created": 1764151570, "data": status_example}}}},
            "responses": {"2XX": {"description": "Received; anything else is retried"}}}}
            for t in EVENT_TYPES},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "An API key from /admin/api-keys"}},
            "schemas": SCHEMAS},
    })

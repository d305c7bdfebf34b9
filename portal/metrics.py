"""The Prometheus metrics the portal counts as it works; `/metrics` exposes them (portal/ops).

Every metric has labels, so no value exists before the first `.labels()`: under `portal serve`
the values are then made in each gunicorn worker after the multiprocess folder is set
(prometheus-client's multiprocess mode), never inherited from the arbiter. Counting is a
lock and an addition (an mmap write in multiprocess mode): cheap enough for every request.
State that lives in the database (queue depth, oldest job) is read at scrape time instead.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "portal_http_request_duration_seconds", "Time to answer a request, by route (URL rule).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
WEBHOOKS = Counter(
    "portal_webhooks_total", "Gateway webhooks received, by gateway and outcome.",
    ["gateway", "outcome"])
PAYMENTS = Counter(
    "portal_payments_total", "Payments reaching a state, by gateway and outcome.",
    ["gateway", "outcome"])
NOTIFICATIONS = Counter(
    "portal_notifications_total", "Patient messages by channel and the state they reached.",
    ["channel", "state"])
GATEWAY_CALL_SECONDS = Histogram(
    "portal_gateway_call_duration_seconds", "Time a call to a gateway took, by gateway and kind.",
    ["gateway", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
GATEWAY_CALL_ERRORS = Counter(
    "portal_gateway_call_errors_total", "Calls to a gateway that failed, by gateway, kind and "
    "error code.", ["gateway", "kind", "code"])
JOBS = Counter(
    "portal_jobs_total", "Background jobs run, by kind and outcome.", ["kind", "outcome"])
RATE_LIMITED = Counter(
    "portal_ratelimit_refusals_total", "Requests refused by a rate limit, by rule.", ["rule"])
RATE_LIMIT_FALLBACKS = Counter(
    "portal_ratelimit_fallbacks_total", "Rate-limit checks that fell back to this process's "
    "own counters because the shared store (Redis) failed.", ["backend"])

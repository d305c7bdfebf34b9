"""The real processes: `portal serve` with two gunicorn workers (metrics merged across them, JSON
log lines, the request id carried into a `portal worker`'s job line) and SIGTERM mid-job."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateways import sandbox
from portal.models import Job, OutboxStatus, PaymentStatus
from portal.worker.queue import enqueue
from tests.polling import wait_until
from tests.web.helpers import SECRET

TOKEN = "metrics-token-for-process-tests-7"
PORTAL = [sys.executable, "-c", "from portal.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(app, **extra) -> dict[str, str]:
    return {**os.environ, "PORTAL_DATABASE_URL": app.config["PORTAL_DATABASE_URL"],
            "PYTHONUNBUFFERED": "1", **extra}


def json_lines(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def metric(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def pids_with_files(folder: Path) -> set[str]:
    return {m.group(1) for f in folder.glob("histogram_*.db")
            if (m := re.search(r"_(\d+)\.db$", f.name))}


def test_serve_with_two_workers_merges_metrics_and_logs_json_into_the_workers_job(
        app, db, build, tmp_path):
    lab = build.lab("acme")
    link = build.link(lab)
    payment = build.payment(link, status=PaymentStatus.PENDING)
    db.close()
    port, instance = free_port(), tmp_path / "serve-instance"
    env = environment(app, PORTAL_METRICS_TOKEN=TOKEN, PORTAL_LOG_FORMAT="json",
                      PORTAL_INSTANCE_PATH=str(instance))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as out:
        server = subprocess.Popen([*PORTAL, "serve", "--port", str(port), "--workers", "2",
                                   "--threads", "2"], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return requests.get(f"{base}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(up, 60, "portal serve", serve_log)
        health_calls = 1
        folder = instance / "metrics"
        # Separate connections until both gunicorn workers have answered (and counted).
        while len(pids_with_files(folder)) < 2 and health_calls < 400:
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
            health_calls += 1
        assert len(pids_with_files(folder)) == 2, "one worker answered every request"

        event = sandbox.build_event("evt_serve_1", True, payment.reference, link.amount,
                                    link.currency)
        hook = requests.post(f"{base}/payments/webhook/sandbox", data=event, timeout=10,
                             headers={"Sandbox-Signature": sandbox.sign(SECRET, event,
                                                                        int(time.time())),
                                      "Content-Type": "application/json",
                                      "X-Request-ID": "serve-rid-0001"})
        assert hook.status_code == 200 and hook.headers["X-Request-ID"] == "serve-rid-0001"

        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        scraped = requests.get(f"{base}/metrics", timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200
        text = scraped.text
        # Every /healthz answer counted once, whichever of the two processes gave it.
        assert metric(text, "portal_http_request_duration_seconds_count", method="GET",
                      route="/healthz", status="200") == health_calls
        assert metric(text, "portal_webhooks_total", gateway="sandbox",
                      outcome="applied") == 1
        assert metric(text, "portal_payments_total", gateway="sandbox",
                      outcome="succeeded") == 1
        assert metric(text, "portal_job_queue_depth") >= 1  # the receipt, for the worker
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    lines = json_lines(serve_log)  # gunicorn's own lines too: every line is one JSON object
    assert any("Listening at" in line["message"] for line in lines)
    access = [line for line in lines if line["logger"] == "portal.access"]
    assert len(access) == health_calls + 3  # exactly one line per request, never two
    hook_line = next(line for line in access if line["request_id"] == "serve-rid-0001")
    assert (hook_line["method"], hook_line["path"], hook_line["status"]) == \
        ("POST", "/payments/webhook/sandbox", 200)
    assert {"time", "level", "logger", "message", "duration_ms"} <= set(hook_line)
    assert all(re.fullmatch(r"[0-9a-f]{32}", line["request_id"]) for line in access
               if line is not hook_line)

    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen([*PORTAL, "worker"], stdout=out, stderr=out,
                                  env={**env, "PROMETHEUS_MULTIPROC_DIR": str(folder)})
    try:
        def job_line():
            return [line for line in json_lines(worker_log)
                    if "(notification.send) done" in line["message"]]

        done = wait_until(job_line, 60, "the receipt's job", worker_log)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert all(line["request_id"] == "serve-rid-0001" for line in done)
    assert any(line["message"].startswith("worker ") and "stopped" in line["message"]
               for line in json_lines(worker_log))


class SlowReceiver(BaseHTTPRequestHandler):
    """A lab's webhook endpoint that holds each POST until the test releases it."""

    received = threading.Event()
    release = threading.Event()
    count = 0

    def do_POST(self):  # noqa: N802
        type(self).count += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.set()
        type(self).release.wait(20)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_sigterm_mid_job_finishes_the_job_and_releases_the_other_claims(app, db, build,
                                                                         tmp_path):
    SlowReceiver.received.clear()
    SlowReceiver.release.clear()
    SlowReceiver.count = 0
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), SlowReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    lab = build.lab("acme")
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    jobs = [enqueue(db, "sandbox.deliver_webhook",
                    {"notify_url": url, "body": json.dumps({"n": n}), "event_id": f"evt_{n}"},
                    lab_id=lab.id) for n in range(3)]
    db.commit()
    ids = [job.id for job in jobs]
    db.close()

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([*PORTAL, "worker"], stdout=out, stderr=out,
                                  env=environment(app))
    try:
        assert SlowReceiver.received.wait(60), log.read_text()
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert worker.poll() is None, "the worker must finish the job it is running"
        SlowReceiver.release.set()
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        receiver.shutdown()
        receiver.server_close()

    rows = {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(ids)))}
    assert SlowReceiver.count == 1
    assert (rows[ids[0]].status, rows[ids[0]].attempts) == (OutboxStatus.DONE, 1)
    for job_id in ids[1:]:  # claimed with the first, never started: back in the queue now
        assert (rows[job_id].status, rows[job_id].attempts, rows[job_id].lease_until) == \
            (OutboxStatus.QUEUED, 0, None)
    released = re.search(r"(\d+) claimed job\(s\) released to the queue", log.read_text())
    assert released and int(released.group(1)) >= 2  # (periodic tasks may share the batch)

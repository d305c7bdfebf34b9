"""`/metrics`'s body: the counted metrics (of every process, under gunicorn) plus the database's
state read at scrape time, in Prometheus text format.

Multiprocess mode: `portal serve` sets PROMETHEUS_MULTIPROC_DIR (its own, or
`<instance>/metrics`) before the workers fork; each process writes its values to files there and
a scrape merges them. `portal worker` writes to the same folder (same setting or instance
folder, same machine), so its jobs, notifications and gateway calls show in that node's scrape.
Two nodes on one machine need a folder each, or each would report the other's counts too.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .services.health import queue_state

log = logging.getLogger(__name__)
ENV = "PROMETHEUS_MULTIPROC_DIR"
PID_IN_NAME = re.compile(r"_(\d+)\.db$")


class DatabaseState(Collector):
    """Gauges read from the database on each scrape: a few indexed counts."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def collect(self):
        up = GaugeMetricFamily("portal_database_up", "1 when the scrape could read the database.")
        try:
            state = queue_state(self.session)
        except SQLAlchemyError as exc:
            log.warning("metrics: database state not read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("portal_job_queue_depth", "Jobs due and waiting for a worker.",
                                value=state.due)
        yield GaugeMetricFamily("portal_job_queue_oldest_seconds",
                                "Age of the oldest job due and waiting (0 when none).",
                                value=state.oldest_due_seconds)
        yield GaugeMetricFamily("portal_jobs_running", "Jobs claimed by a worker now.",
                                value=state.running)
        yield GaugeMetricFamily("portal_jobs_dead", "Jobs that ran out of attempts.",
                                value=state.dead)
        backlog = GaugeMetricFamily("portal_notifications_backlog",
                                    "Patient messages not yet sent, by channel and state.",
                                    labels=["channel", "state"])
        for (channel, status), count in sorted(state.notifications.items()):
            backlog.add_metric([channel, status], count)
        yield backlog
        if state.heartbeat_age_seconds is not None:
            yield GaugeMetricFamily("portal_worker_heartbeat_age_seconds",
                                    "Seconds since the newest worker heartbeat.",
                                    value=state.heartbeat_age_seconds)


def render(session: Session) -> tuple[bytes, str]:
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(DatabaseState(session))
    return generate_latest(counted) + generate_latest(scraped), CONTENT_TYPE_LATEST


def use_multiprocess_dir(default: Path, *, clean: bool = True) -> Path:
    """Before gunicorn forks: PROMETHEUS_MULTIPROC_DIR (or `default`) exists, holds no files
    of processes that are gone (with `clean`), and is what prometheus-client writes to from now
    on. Only `portal serve` cleans, as it starts: a counter file removed while the server runs
    would make its sum fall."""
    folder = Path(os.environ.get(ENV) or default)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in folder.glob("*.db") if clean else ():
        match = PID_IN_NAME.search(stale.name)
        if match and not _alive(int(match.group(1))):
            stale.unlink(missing_ok=True)
    os.environ[ENV] = str(folder)
    # prometheus-client picked its value class when first imported (in this process, by the
    # app that `portal` built to find its commands): pick again, now that the folder is set.
    values.ValueClass = values.get_value_class()
    return folder


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exited(pid: int) -> None:
    """gunicorn's child_exit: a dead worker's live gauges stop counting (counters stay)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)

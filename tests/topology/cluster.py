"""A small production topology on this machine: nginx (deploy/nginx/portal.conf, TLS) in front of
two `portal serve` nodes, two `portal worker`s, one PostgreSQL database and Redis.

Every process is started here, in its own process group, and stopped by its own id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.deploy.nginx_site import (
    main_config,
    nginx_command,
    render_site,
)
from tests.fakes.certs import self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]
PORTAL = str(Path(sys.executable).with_name("portal"))

# Fixed ports of this test (the range 18300-18399 is the topology's).
HTTP_PORT, HTTPS_PORT = 18320, 18323
NODE_PORTS = {"web-1": 18321, "web-2": 18322}


class Process:
    """One process of the topology, its output kept in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path):
        self.name, self.argv, self.env = name, argv, env
        self.log = folder / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self.stopped_in: float | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=ROOT,
                                          start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45) -> float:
        """Sends `sig` to this process only and waits for it to exit; returns how long it took."""
        assert self.popen is not None
        started = time.monotonic()
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)  # the group this test made for it
                self.popen.wait(timeout=10)
        self.stopped_in = time.monotonic() - started
        return self.stopped_in

    def kill_leftovers(self) -> None:
        """Whatever is left of this process's own group (gunicorn workers of a dead master)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_until_answers(url: str, process: Process, *, verify=True, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert process.alive(), f"{process.name} exited:\n{process.tail()}"
        assert time.monotonic() < deadline, f"{url} did not answer:\n{process.tail()}"
        time.sleep(0.2)


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]
    cert: Path
    nodes: dict[str, Process] = field(default_factory=dict)
    workers: list[Process] = field(default_factory=list)
    nginx: Process | None = None
    stopping: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{HTTPS_PORT}"

    def node_url(self, name: str) -> str:
        return f"http://127.0.0.1:{NODE_PORTS[name]}"

    def start(self) -> None:
        for name, port in NODE_PORTS.items():
            self.nodes[name] = Process(name, [PORTAL, "serve", "--host", "127.0.0.1", "--port",
                                              str(port), "--workers", "2", "--threads", "4"],
                                       self.env, self.folder).start()
        for n in (1, 2):
            self.workers.append(Process(f"worker-{n}", [PORTAL, "worker"], self.env,
                                        self.folder).start())
        key = self.cert.with_name("key.pem")
        site = render_site(self.folder, nodes=tuple(f"127.0.0.1:{p}"
                                                    for p in NODE_PORTS.values()),
                           https_port=HTTPS_PORT, http_port=HTTP_PORT, cert=self.cert, key=key)
        config = main_config(self.folder, site)
        self.nginx = Process("nginx", nginx_command(self.folder, config, "-g", "daemon off;"),
                             self.env, self.folder).start()
        for name, node in self.nodes.items():
            wait_until_answers(self.node_url(name) + "/healthz", node)
        wait_until_answers(self.base + "/healthz", self.nginx, verify=str(self.cert))
        for worker in self.workers:
            assert worker.alive(), worker.tail()

    def stop(self) -> None:
        for process in [*self.workers, *self.nodes.values(), self.nginx]:
            if process is not None:
                if process.alive():
                    process.stop(timeout=30)
                process.kill_leftovers()

    def tails(self) -> str:
        return "\n".join(p.tail() for p in [*self.nodes.values(), *self.workers, self.nginx]
                         if p is not None)


def make_cluster(folder: Path, database_url: str, extra_env: dict[str, str]) -> Cluster:
    cert, _key = self_signed_certificate(folder)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PORTAL_", "PYTEST_", "COV_"))}
    env.update({
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_BASE_URL": f"https://127.0.0.1:{HTTPS_PORT}",
        "PORTAL_INSTANCE_PATH": str(folder / "instance"),
        "PORTAL_TRUSTED_PROXIES": "1",
        "PORTAL_ARGON2_PROFILE": "cheap-for-tests",
        # The workers deliver the sandbox's webhooks through nginx, whose certificate is ours.
        "REQUESTS_CA_BUNDLE": str(cert),
        **extra_env,
    })
    return Cluster(folder, env, cert)


UPSTREAM = re.compile(r'"(?P<method>\S+) (?P<path>\S+)" (?P<status>\d+) .* '
                      r'upstream=(?P<addr>.*?) upstream_status=(?P<ups>.*?) id=')


@dataclass
class NginxLog:
    """What nginx's access log (the site's `portal` format) says about the upstreams."""

    served_by: Counter
    retried: list[str]
    statuses: Counter

    @classmethod
    def read(cls, path: Path) -> NginxLog:
        ports = {str(port): name for name, port in NODE_PORTS.items()}
        served_by: Counter = Counter()
        retried, statuses = [], Counter()
        for line in path.read_text().splitlines():
            match = UPSTREAM.search(line)
            if not match or match["addr"] == "-":
                continue
            tried = [addr.strip().rsplit(":", 1)[-1] for addr in match["addr"].split(",")]
            served_by[ports.get(tried[-1], tried[-1])] += 1
            statuses[match["status"]] += 1
            if len(tried) > 1:
                retried.append(f'{match["method"]} {match["path"]} via '
                               f'{" then ".join(ports.get(p, p) for p in tried)} '
                               f'({match["ups"]})')
        return cls(served_by, retried, statuses)

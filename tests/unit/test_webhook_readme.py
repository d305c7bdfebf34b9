"""The README's signature checks (Python, and curl/openssl) verify what the portal signs, with
either secret during a rotation, and refuse anything else."""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404: runs the README's own shell lines on a temporary file
import time
from pathlib import Path

import pytest

from portal.services.outhooks import signature_header

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README[README.index("## Webhooks to the lab's systems"):]
BODY = b'{"id":"evt_1","type":"link.paid","created":1764151570,"data":{"amount":123450}}'


def test_python_example():
    code = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the README's own example  # nosec B102
    verify = namespace["verify"]
    header = signature_header(["whsec_old", "whsec_new"], BODY, int(time.time()))
    assert verify(header, BODY, "whsec_old") and verify(header, BODY, "whsec_new")
    assert not verify(header, BODY + b" ", "whsec_new")
    assert not verify(header, BODY, "whsec_other")
    stale = signature_header(["whsec_new"], BODY, int(time.time()) - 3600)
    assert not verify(stale, BODY, "whsec_new")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_curl_and_openssl_example(tmp_path):
    shell = re.search(r"```sh\nSECRET=.*?```", SECTION, re.S).group(0)
    check = "\n".join(shell.splitlines()[3:6])  # T=..., EXPECTED=..., echo ... valid
    assert check.startswith("T=") and "openssl dgst" in check
    (tmp_path / "body.json").write_bytes(BODY)
    header = signature_header(["whsec_old", "whsec_new"], BODY, 1764151570)

    def run(secret: str) -> str:
        script = f"SECRET={secret}\nHEADER='{header}'\n{check}\n"
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,  # nosec
                              text=True, check=True).stdout.strip()

    assert run("whsec_new") == "valid" and run("whsec_old") == "valid"
    assert run("whsec_other") == "INVALID"

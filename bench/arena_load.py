"""Arena under load: real battles over HTTP on the embedded models, 1..N raters at once, per backend.

For each backend the app's rater page runs in a child process (the real pool: `hf` loads gemma3-270m and
smollm2 in process and batches concurrent raters, cai.backends.stream_batch; `served` registers both as
served models behind one vLLM OpenAI server each, started here). Each rater is a gradio_client session that
signs in, starts a battle and sends its messages one after the other, each as soon as the last answer is in.
Per setting: aggregate_tok_s = answer tokens (both sides, the stored answers re-tokenized by their model's
tokenizer) / seconds from the first send to the last answer; ttft = seconds from a send until that side's
first text arrives (p50, p95 over all sides); answer_p95_s = seconds from a send until both answers are in.
One warm-up turn per backend (models loaded, kernels warm) is not counted.

Prints JSON {"results": [{"backend", "raters", "aggregate_tok_s", "ttft_p50_s", "ttft_p95_s",
"answer_p95_s", ...}]}. Usage:
  python bench/arena_load.py --raters 1,10,30 --backend hf,served [--max-new-tokens 16] [--turns 1]
      [--models gemma3-270m,smollm2 | smollm2 (one model battling itself)]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"gemma3-270m": False, "smollm2": True}  # the embedded models and their chat flag
QUESTIONS = ["What is the capital of France?", "Write a short poem about the sea.", "How do I bake bread?",
             "Why is the sky blue?", "Give me three tips for sleeping better.", "What is a prime number?"]
POLL_S = 0.02  # how often a rater looks for new streamed text


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, int(round(q * len(ordered))) - 1)], 3)


def prepare(db_path: Path, backend: str, use: list[str], raters: int, campaigns: list[str], max_new_tokens: int,
            turns: int, servers: list[Any]) -> None:
    """Register the two battle models (served: start a vLLM server per model), the campaigns and the raters.
    With one model in `use` it battles itself under two names (one engine, one set of weights)."""
    from cai import arena, backends, models, store, users
    from cai.backends.vllm import VLLMServer

    db = store.connect(db_path)
    pairs = list(zip(use, ("-a", "-b"), strict=False)) if len(use) == 2 else [(use[0], "-a"), (use[0], "-b")]
    names = []
    if backend == "hf":
        for name, tag in pairs:
            models.register_model(db, name + tag, name, chat=MODELS[name])
            names.append(name + tag)
    else:  # one server per model, each with a 1 GiB KV cache (as tests/conftest.py's vllm_default)
        started = {name: VLLMServer(backends.model_path(name), served_name=name,
                                    env={"VLLM_CPU_KVCACHE_SPACE": "1"}) for name in dict(pairs)}
        servers.extend(started.values())
        for server in started.values():
            server.wait_ready()
        for name, tag in pairs:
            server = started[name]
            models.register_served(db, f"{name}{tag}-served", [server.url], served_name=name,
                                   tokenizer=backends.model_path(name), weights=name, chat=MODELS[name])
            names.append(f"{name}{tag}-served")
    for camp in campaigns:
        arena.create_campaign(db, camp, names, "helpfulness", max_turns=turns + 1, max_new_tokens=max_new_tokens)
    for i in range(raters):
        users.add_user(db, f"r{i}", "rater", "password1")
    db.close()


def start_app(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from ui.arena import build_page; "
            f"page = build_page({str(db_path)!r}); page.queue(default_concurrency_limit=64).launch("
            f"server_port={port}, prevent_thread_lock=True, quiet=True); print('ready', flush=True); "
            "[time.sleep(3600) for _ in iter(int, 1)]")
    log = open(db_path.parent / "app.log", "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError((db_path.parent / "app.log").read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the app did not come up in 10 minutes")


def answer_text(chat: Any) -> str:
    """The last assistant message of a streamed chat output ('' before it has text)."""
    if not isinstance(chat, list) or not chat or not isinstance(chat[-1], dict):
        return ""
    content = chat[-1].get("content") if chat[-1].get("role") == "assistant" else ""
    if isinstance(content, list):
        content = " ".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return str(content or "")


def one_send(client: Any, message: str) -> dict[str, Any]:
    """Send one message and follow the stream: when each side's first text came and when both were done."""
    start = time.perf_counter()
    job = client.submit(message, api_name="/send")
    first: list[float | None] = [None, None]
    seen = 0
    while True:
        done = job.done()
        outputs = job.outputs()
        for out in outputs[seen:]:
            now = time.perf_counter() - start
            for side in (0, 1):
                if first[side] is None and answer_text(out[side]):
                    first[side] = now
        seen = len(outputs)
        if done:
            break
        time.sleep(POLL_S)
    job.result()  # raises if the event failed
    total = time.perf_counter() - start
    return {"start": start, "end": start + total, "ttft": [f if f is not None else total for f in first],
            "answer_s": total}


def run_setting(url: str, campaign: str, raters: int, turns: int) -> list[dict[str, Any]]:
    from bench import rater_page

    clients = [None] * raters
    errors = rater_page.run_threads(raters, lambda i: clients.__setitem__(i, rater_page.rater(
        url, f"r{i}", campaign, timeout=1800.0)))
    if errors:
        raise errors[0]
    sends: list[dict[str, Any]] = []
    lock, barrier = threading.Lock(), threading.Barrier(raters)

    def rater(i: int) -> None:
        barrier.wait()
        for t in range(turns):
            record = one_send(clients[i], QUESTIONS[(i + t) % len(QUESTIONS)] + f" ({i}.{t})")
            with lock:
                sends.append(record)

    errors = rater_page.run_threads(raters, rater)
    if errors:
        raise errors[0]
    return sends


def answer_tokens(db_path: Path, campaign: str) -> int:
    """Tokens of every stored answer of the campaign, each counted by its own model's tokenizer."""
    from transformers import AutoTokenizer

    from cai import backends, store

    db = store.connect(db_path)
    sql = ("select ma.name, mb.name, t.response_a, t.response_b from battle_turns t join battles b on b.id = t.battle_id "
           "join campaigns c on c.id = b.campaign_id join models ma on ma.id = b.model_a join models mb on mb.id = b.model_b "
           "where c.name = ? and t.response_a is not null")
    rows = db.execute(sql, [campaign]).fetchall()
    tokenizers = {name: AutoTokenizer.from_pretrained(backends.model_path(name)) for name in MODELS}

    def count(name: str, text: str) -> int:
        return len(tokenizers[name.removesuffix("-served")[:-2]].encode(text or "", add_special_tokens=False))

    db.close()
    return sum(count(a, ra) + count(b, rb) for a, b, ra, rb in rows)


def bench_backend(backend: str, use: list[str], raters: list[int], max_new_tokens: int,
                  turns: int) -> list[dict[str, Any]]:
    from bench.rater_page import free_port

    db_path = Path(tempfile.mkdtemp(prefix=f"arena-load-{backend}-")) / "bench.db"
    campaigns = ["warmup", *(f"load-{n}" for n in raters)]
    servers: list[Any] = []
    app = None
    try:
        prepare(db_path, backend, use, max(raters), campaigns, max_new_tokens, turns, servers)
        port = free_port()
        app = start_app(db_path, port)
        url = f"http://127.0.0.1:{port}/"
        run_setting(url, "warmup", 1, 1)  # loads the models (hf) and warms both paths; not counted
        results = []
        for n in raters:
            sends = run_setting(url, f"load-{n}", n, turns)
            wall = max(s["end"] for s in sends) - min(s["start"] for s in sends)
            tokens = answer_tokens(db_path, f"load-{n}")
            ttfts = [x for s in sends for x in s["ttft"]]
            results.append({
                "backend": backend, "models": use, "raters": n, "aggregate_tok_s": round(tokens / wall, 2),
                "ttft_p50_s": pct(ttfts, 0.5), "ttft_p95_s": pct(ttfts, 0.95),
                "answer_p95_s": pct([s["answer_s"] for s in sends], 0.95),
                "answers": 2 * len(sends), "tokens": tokens, "wall_s": round(wall, 2),
            })
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        return results
    finally:
        if app is not None:
            os.killpg(app.pid, 15)
            app.wait(timeout=60)
        for server in servers:
            server.stop()


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend and rater count: aggregate tok/s and p95 TTFT relative to that backend's single rater."""
    out = []
    for r in results:
        base = next((b for b in results if b["backend"] == r["backend"] and b["raters"] == 1), None)
        if base and r["raters"] != 1:
            out.append({"backend": r["backend"], "raters": r["raters"],
                        "tok_s_x": round(r["aggregate_tok_s"] / base["aggregate_tok_s"], 2),
                        "ttft_p95_x": round(r["ttft_p95_s"] / base["ttft_p95_s"], 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raters", default="1,10,30", help="Comma-separated rater counts (default 1,10,30).")
    parser.add_argument("--backend", default="hf,served", help="hf, served or both (default hf,served).")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="Answer length cap (default 16).")
    parser.add_argument("--turns", type=int, default=1, help="Messages each rater sends (default 1).")
    parser.add_argument("--models", default="gemma3-270m,smollm2",
                        help="The battle's two embedded models, or one that battles itself (default both).")
    args = parser.parse_args(argv)
    raters = [int(x) for x in args.raters.split(",") if x.strip()]
    kinds = [x.strip() for x in args.backend.split(",") if x.strip()]
    use = [x.strip() for x in args.models.split(",") if x.strip()]
    bad = [k for k in kinds if k not in ("hf", "served")] + [m for m in use if m not in MODELS]
    if bad or not 1 <= len(use) <= 2 or not raters or min(raters) < 1 or args.max_new_tokens < 1 or args.turns < 1:
        print(f"error: need --backend from hf,served, one or two --models from {', '.join(MODELS)} (got {bad or use}), rater counts >= 1, "
              "--max-new-tokens >= 1 and --turns >= 1", file=sys.stderr)
        return 2
    results = [row for kind in kinds for row in bench_backend(kind, use, raters, args.max_new_tokens, args.turns)]
    print(json.dumps({"results": results, "ratios": ratios(results),
                      "settings": {"max_new_tokens": args.max_new_tokens, "turns": args.turns,
                                   "cpus": os.cpu_count()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

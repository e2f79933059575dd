"""#27 item 6: `bash bench/gpu_check.sh --cpu` runs the GPU check's code path on the CPU with tiny sizes and
writes one JSON file with every section; the wheel unpacking it starts with installs only what is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():  # bench/ is not a package: load the script as a module, leaving sys.path alone
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_unpacks_only_the_wheels_whose_distribution_is_missing(tmp_path):
    gpu_check = _gpu_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, module in (("Not_Here_Pkg", "not_here_pkg"), ("pyyaml", "fake_yaml_copy")):
        with zipfile.ZipFile(wheels / f"{name}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"{module}/__init__.py", "VALUE = 7\n")
            z.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    with pytest.raises(ValueError, match="must contain 'site-packages'"):
        gpu_check.install(wheels, tmp_path / "site")  # dill would pickle its modules by value
    site = tmp_path / "site-packages"
    result = gpu_check.install(wheels, site)
    assert result["unpacked"] == ["Not_Here_Pkg-1.0-py3-none-any.whl"]
    assert result["already_installed"] == ["pyyaml"]  # installed here (PyYAML): left alone
    assert (site / "not_here_pkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert not (site / "fake_yaml_copy").exists()
    assert json.loads((site / "cai-gpu-install.json").read_text()) == result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_cpu_writes_every_section_with_sane_values(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "CAI_CACHE": str(tmp_path / "cache"), "PY": sys.executable,
           "CAI_GPU_SITE": str(tmp_path / "site-packages"), "GPU_CHECK_LIMIT_S": "840"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json"]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["mode"] == "cpu" and data["errors"] == {} and data["skipped"] == {}
    assert set(data) >= {"env", "models", "generate", "hhh", "imported", "smoke", "sections_s", "total_s"}
    assert set(data["sections_s"]) == {"env", "models", "generate", "hhh", "smoke"}
    assert data["env"]["cuda_available"] is False and data["env"]["torch"]
    assert data["models"]["tiny"]["prepare"] == "converted"  # into the test's own cache
    assert data["models"]["random-small"]["params"] == 106816  # hidden 64, 2 layers, the tiny vocabulary
    gen = data["generate"]
    assert [(r["model"], r["batch"]) for r in gen] == [("tiny", 1), ("tiny", 2), ("random-small", 1),
                                                       ("random-small", 2)]
    for r in gen:
        assert 0 < r["ours_tokens"] <= 4 * r["batch"] and 0 < r["plain_tokens"] <= 4 * r["batch"]
        assert r["ours_tok_s"] > 0 and r["plain_tok_s"] > 0 and r["ours_vs_plain"] > 0
        assert r["greedy_texts_equal"] == r["batch"]  # float32 greedy: our generate is plain generate's text
    hhh = data["hhh"]
    assert (hhh["model"], hhh["n"]) == ("tiny", 4)
    for dtype in ("float32", "bfloat16"):
        assert hhh[dtype]["seconds"] > 0 and 0 <= hhh[dtype]["accuracy_order_avg"] <= 1
    assert 0 <= hhh["choice_differs"] <= 4 and 0 <= hhh["max_abs_diff_p_avg"] < 0.05
    assert data["imported"] == {"trl": False, "vllm": False, "gradio": False}
    assert data["smoke"]["status"] == "done" and data["smoke"]["cancelled_at_budget"] is False
    assert list(data["smoke"]["stages"]) == ["sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature",
                                             "dpo", "compare", "hhh", "agreement"]
    assert set(data["smoke"]["stages"].values()) == {"done"}


def test_gpu_check_without_cuda_in_cuda_mode_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "run", "--mode", "cuda", "--out",
                           str(tmp_path / "g.json")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: CUDA is not available to torch (use --mode cpu for the CPU path)"
    assert json.loads((tmp_path / "g.json").read_text())["errors"]["env"].startswith("CUDA is not available")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_out_of_budget_cancels_the_pipeline_and_leaves_no_worker(tmp_path, monkeypatch):
    from cai import runs, store

    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache"))
    result = _gpu_check().smoke("cpu", tmp_path, 0.0)
    assert (result["status"], result["cancelled_at_budget"]) == ("cancelled", True)
    db = store.connect(tmp_path / "smoke.db")
    assert all(r["status"] not in ("queued", "running") for r in runs.list_runs(db))

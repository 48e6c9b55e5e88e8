"""benchmarks/gpu_check.py on the CPU at tiny sizes (`--device cpu --quick`), so the GPU acceptance
script cannot rot between the rare runs on a GPU: every part runs, every check reports, the
report files are written (to a temporary folder, never to benchmarks/results)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_quick_cpu_run_reports_every_part(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0 and not report["totals"].get("FAILED"), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [p["part"] for p in report["parts"]] == [1, 2, 3, 4, 5, 6]
    assert all(p["status"] == "ran" for p in report["parts"]), report["parts"]
    checks = report["checks"]
    assert {c["part"] for c in checks} == {1, 2, 3, 4, 5, 6}
    for c in checks:  # one printed line per check, with its reason when it is not ok
        assert f"[{c['id']}] {c['status']}" in proc.stdout
        assert c["status"] in ("ok", "skipped") and (c["status"] == "ok") != bool(c["reason"])
        if c["status"] == "skipped":
            assert c["reason"].startswith(("cpu", "quick", "no --cupy-reference")), c
    by_name = {c["check"]: c for c in checks}
    agree = [c for c in checks if c["check"].endswith("vs reference")]
    assert len(agree) == 6 and all(c["data"]["max_rel_error"] <= c["data"]["tolerance"] for c in agree)
    steps = [c for c in checks if c["part"] == 2 and c["status"] == "ok"]
    assert len(steps) == 10 and all(c["data"]["grads_finite"] for c in steps)
    eval_check = by_name["attnzoo eval of its checkpoint"]
    assert eval_check["status"] == "ok" and "test" in eval_check["data"]["metrics"]
    assert by_name["torchrun --nproc_per_node 1 attnzoo train, 1 epoch"]["status"] == "ok"
    assert by_name["gloo process group"]["data"]["world_size"] == 1  # torchrun's group, also for one process
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check on cpu") and "tolerances" in md and md.count("\n| ") >= len(checks)

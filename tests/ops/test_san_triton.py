"""The Triton kernels, run on the CPU by Triton's interpreter (TRITON_INTERPRET=1, tiny shapes).

The interpreter must be switched on before triton is imported, so the check runs in a fresh
Python process.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

CHECK = r"""
import json, torch
import attnzoo.ops as O
out = {}
for k, s, d, mode, hw in [(3, 2, 1, "reflect", (5, 6)), (3, 1, 2, "zero", (4, 5))]:
    torch.manual_seed(0)
    p = (d * (k - 1) + 1) // 2
    Ho, Wo = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n in hw]
    x = torch.randn(1, 4, *hw, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 4, *hw, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, k * k, Ho * Wo, dtype=torch.float64, requires_grad=True)
    args = (k, s, p, d, mode)
    diffs = []
    for fn, inputs in ((lambda b: O.aggregation(x, w, *args, backend=b), (x, w)),
                       (lambda b: O.subtraction2(x, x2, *args, backend=b), (x, x2))):
        ys = {b: fn(b) for b in ("reference", "triton")}
        gs = {b: torch.autograd.grad(ys[b].sin().sum(), inputs) for b in ys}
        diffs.append((ys["triton"] - ys["reference"]).abs().max().item())
        diffs += [(a - r).abs().max().item() for a, r in zip(gs["triton"], gs["reference"])]
    out[f"{k}-{s}-{d}-{mode}"] = max(diffs)
print(json.dumps(out))
"""


def test_triton_kernels_match_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) == 2
    for case, diff in result.items():
        assert diff < 1e-10, (case, diff)

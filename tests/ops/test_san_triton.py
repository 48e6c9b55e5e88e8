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
# kernel, stride, dilation, padding mode, (H, W), channels, weight channels, channels_last
for k, s, d, mode, hw, C, Cw, cl in [(3, 2, 1, "reflect", (5, 6), 4, 2, False), (3, 1, 2, "zero", (4, 5), 4, 2, False),
                                     (3, 1, 1, "reflect", (4, 5), 36, 2, True)]:  # 18 channels share: 2 chunks
    torch.manual_seed(0)
    p = (d * (k - 1) + 1) // 2
    Ho, Wo = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n in hw]
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(2, C, *hw, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    x2 = torch.randn(2, C, *hw, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    w = torch.randn(2, Cw, k * k, Ho * Wo, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    args = (k, s, p, d, mode)
    diffs = []
    for fn, inputs in ((lambda b: O.aggregation(x, w, *args, backend=b), (x, w)),
                       (lambda b: O.subtraction2(x, x2, *args, backend=b), (x, x2))):
        ys = {b: fn(b) for b in ("reference", "triton")}
        gy = torch.randn_like(ys["reference"])
        if cl:
            gy = gy.to(memory_format=torch.channels_last)  # incoming gradients in channels_last too
        gs = {b: torch.autograd.grad(ys[b], inputs, gy) for b in ys}
        diffs.append((ys["triton"] - ys["reference"]).abs().max().item())
        diffs += [(a - r).abs().max().item() for a, r in zip(gs["triton"], gs["reference"], strict=True)]
    out[f"{k}-{s}-{d}-{mode}-{C}/{Cw}-{'cl' if cl else 'nchw'}"] = max(diffs)
print(json.dumps(out))
"""


def test_triton_kernels_match_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) == 3
    for case, diff in result.items():
        assert diff < 1e-10, (case, diff)


def _nvidia_backend() -> bool:
    import triton.backends

    return "nvidia" in triton.backends.backends


@pytest.mark.skipif(not _nvidia_backend(), reason="this Triton has no NVIDIA backend")
def test_kernels_compile_for_a_gpu_without_one():
    """Every kernel lowers to a cubin for sm_90 (Triton's bundled ptxas, no GPU needed) in bf16 with
    one share chunk; the aggregation forward also in float32 with two chunks and in float64 with one
    channel per weight channel."""
    import inspect

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from attnzoo.ops import san_triton

    more = [("fp32", tl.float32, 16, 2), ("fp64", tl.float64, 1, 1)]
    keyword = "constexprs" if "constexprs" in inspect.signature(ASTSource).parameters else "constants"
    for name, (kernel, _) in san_triton.KERNELS.items():
        for dtype, acc, share, chunks in [("bf16", tl.float32, 8, 1)] + (more if name == "_agg_fwd" else []):
            constants = {"K": 9, "KW": 3, "SHARE": share, "CHUNKS": chunks, "ACC": acc, "BLOCK": 128}
            constants = {a: v for a, v in constants.items() if a in kernel.arg_names}
            signature = {a: "constexpr" if a in constants else f"*{dtype}" if a.endswith("_ptr") else "i32"
                         for a in kernel.arg_names}
            source = ASTSource(kernel, signature, **{keyword: constants})
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
            assert compiled.asm["cubin"], (name, dtype)


def test_one_configuration_in_deterministic_mode(monkeypatch):
    from attnzoo.ops import san_triton

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    torch = pytest.importorskip("torch")
    previous = torch.are_deterministic_algorithms_enabled()  # an in-process deterministic run sets it
    try:
        torch.use_deterministic_algorithms(False)
        assert not san_triton.pinned()
        torch.use_deterministic_algorithms(True)
        assert san_triton.pinned()
    finally:
        torch.use_deterministic_algorithms(previous)

"""Third round: the half-precision analysis path's per-point operations as
layer_metrics.cc issued them before the fused kernels of half_state_ops.h
(pythia-1.4b shape, 8 x 2048, bf16), each timed, plus step-energy variants;
kept because bench/RESULTS.md cites it. Timings only: the split-bf16 sums
(row_dots, wsum) are not rescaled, so their values are not the quantities.
Today's ops: bench_half_ops (bench/half_ops_micro.cc).
Usage: python3 bench/analysis_ops_micro3.py"""
import torch

from ops_timing import B, d, dev, n, residual_states, timeit

a, b = residual_states()


def split(w):
    peak = w.abs().amax((1, 2), keepdim=True)
    scale = torch.exp2(-torch.floor(torch.log2(peak.clamp_min(1e-30))))
    rest = w * scale
    parts = []
    for i in range(3):
        parts.append(rest.bfloat16())
        rest = (rest - parts[-1].float()) * 256
    return torch.cat(parts, 1), scale


def row_dots(h, v):
    parts, scale = split(v.unsqueeze(1))
    return torch.bmm(h, parts.transpose(1, 2), out_dtype=torch.float32).double().sum(2)


mean = a.sum(1, dtype=torch.float32) / n
timeit("mean: h.sum(1, float32)", lambda: a.sum(1, dtype=torch.float32))
timeit("RowDots(h, mean)", lambda: row_dots(a, mean))
r = row_dots(a, mean)
gg = mean.double().square().sum(1)
out = torch.empty(B, n, n, device=dev)
timeit("sub_out M = (g - r_i) - r_j", lambda: torch.sub((gg.unsqueeze(1) - r).unsqueeze(2).float(), r.unsqueeze(1).float(), out=out))
timeit("baddbmm_out(out, out, h, h^T, float32) in place", lambda: torch.baddbmm(out, a, a.transpose(1, 2), out_dtype=torch.float32, out=out))
out2 = torch.empty(B, n, n, device=dev)
timeit("baddbmm(out, h, h^T, float32) into a new tensor", lambda: torch.baddbmm(out, a, a.transpose(1, 2), out_dtype=torch.float32))
timeit("bmm(h, h^T, float32)", lambda: torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32))
C = out
timeit("C.diagonal().double()", lambda: C.diagonal(0, 1, 2).double())
timeit("C.sum(2)", lambda: C.sum(2))
timeit("vector_norm(C, {1,2})", lambda: torch.linalg.vector_norm(C, 2, (1, 2)))
D = C * 1.1
timeit("(C*D).sum((1,2))", lambda: (C * D).sum((1, 2)))
print("-- step energy variants")
timeit("norm(h.float() - prev)", lambda: torch.linalg.vector_norm(b.float() - a, dim=-1))
buf = torch.empty(B, n, d, device=dev)
timeit("norm(sub(h, prev, out=f32))", lambda: torch.linalg.vector_norm(torch.sub(b, a, out=buf), dim=-1))
exact = b.double() - a.double()
print("sub(bf16, bf16, out=f32) equals the float64 difference:",
      bool((torch.sub(b, a, out=buf).double() == exact).all()))
print("-- token dots")
def token_dots(x, y):
    rows = B * n
    blocks = torch.bmm(x.reshape(rows // 32, 32, d), y.reshape(rows // 32, 32, d).transpose(1, 2), out_dtype=torch.float32)
    return blocks.diagonal(0, 1, 2).reshape(B, n).double()
timeit("TokenDots", lambda: token_dots(a, b))
timeit("linalg_vector_norm(h, float32)", lambda: torch.linalg.vector_norm(a, 2, -1, dtype=torch.float32))
w = torch.rand(B, 2, n, device=dev)
def wsum(w, h):
    parts, scale = split(w)
    return torch.bmm(parts, h, out_dtype=torch.float32).view(B, 3, 2, d).double().sum(1)
timeit("WeightedTokenSums k=2", lambda: wsum(w, a))

"""Fourth round: cheaper forms of the half path's slow steps (centring the
Gram after the GEMM, step energy through cdist, weighted token sums).
Usage: python3 bench/analysis_ops_micro4.py"""
import torch

from ops_timing import B, d, dev, n, residual_states, timeit

a, b = residual_states()


out = torch.empty(B, n, n, device=dev)


def gram_then_centre():
    torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32, out=out)
    r = out.mean(2)
    gm = r.mean(1)
    out.sub_((r - gm.unsqueeze(1)).unsqueeze(2))
    out.sub_(r.unsqueeze(1))
    return out


timeit("bmm into out, r = mean(2), two in-place broadcasts", gram_then_centre)
timeit("  in-place broadcast sub alone", lambda: out.sub_(out[:, :, :1]))
C = gram_then_centre().double()
a64 = a.double()
K64 = torch.bmm(a64, a64.transpose(1, 2))
C64 = K64 - K64.mean(2, keepdim=True) - K64.mean(1, keepdim=True) + K64.mean((1, 2), keepdim=True)
print("centred after the GEMM: max err / max", ((C - C64).abs().max() / C64.abs().max()).item())

print("-- step energy")
ref = (b.double() - a64).square().sum(-1)
# (cdist has no bf16 CUDA kernel.)
f32 = lambda: torch.cdist(b.view(B * n, 1, d).float(), a.view(B * n, 1, d).float(), p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
timeit("cdist on float32 copies", f32)
print("  max rel err", ((f32().view(B, n).double().square() - ref).abs() / ref).max().item())
timeit("current: norm(h.float() - prev)", lambda: torch.linalg.vector_norm(b.float() - a, dim=-1))
print("  max rel err", ((torch.linalg.vector_norm(b.float() - a, dim=-1).double().square() - ref).abs() / ref).max().item())

print("-- weighted token sums [B,2,n] w, [B,n,d] h")
w = torch.rand(B, 2, n, device=dev) + 0.5
wref = torch.bmm(w.double(), a64)
timeit("(h * w_k).sum(1) per k, mixed dtype", lambda: [(a * w[:, k].unsqueeze(2)).sum(1) for k in range(2)])
print("  max rel err", max(((a * w[:, k].unsqueeze(2)).sum(1).double() - wref[:, k]).abs().max().item() / wref.abs().max().item() for k in range(2)))
hi = w.bfloat16(); lo = (w - hi.float()).bfloat16(); lo2 = (w - hi.float() - lo.float()).bfloat16()
W = torch.cat([hi, lo, lo2], 1)
timeit("bmm [B,6,n]x[B,n,d] -> f32", lambda: torch.bmm(W, a, out_dtype=torch.float32))
timeit("bmm [B,d,n]x[B,n,6] -> f32 (transposed)", lambda: torch.bmm(a.transpose(1, 2), W.transpose(1, 2), out_dtype=torch.float32))
W8 = torch.cat([W, torch.zeros(B, 2, n, device=dev, dtype=torch.bfloat16)], 1)
timeit("bmm [B,8,n]x[B,n,d] -> f32 (padded to 8)", lambda: torch.bmm(W8, a, out_dtype=torch.float32))
W16 = torch.cat([W, torch.zeros(B, 10, n, device=dev, dtype=torch.bfloat16)], 1)
timeit("bmm [B,16,n]x[B,n,d] -> f32 (padded to 16)", lambda: torch.bmm(W16, a, out_dtype=torch.float32))
timeit("matmul [6, n] x [n, d] per prompt loop", lambda: [torch.mm(W[i], a[i], out_dtype=torch.float32) for i in range(B)])
print("-- row dots h . mu")
mu = a.sum(1, dtype=torch.float32) / n
timeit("(h * mu).sum(-1) mixed dtype", lambda: (a * mu.unsqueeze(1)).sum(-1))
M16 = torch.zeros(B, d, 16, device=dev, dtype=torch.bfloat16)
timeit("bmm [B,n,d]x[B,d,16] -> f32", lambda: torch.bmm(a, M16, out_dtype=torch.float32))

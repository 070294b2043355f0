"""Second round of bench/analysis_ops_micro.py: GEMM formulations that read
bf16 states once (no float copies). Usage: python3 bench/analysis_ops_micro2.py"""
import torch

from ops_timing import B, d, dev, n, residual_states, timeit

a, b = residual_states()
a64, b64 = a.double(), b.double()


def group_dot(x, y, gsz):
    xv = x.reshape(B * n // gsz, gsz, d)
    yv = y.reshape(B * n // gsz, gsz, d)
    m = torch.bmm(xv, yv.transpose(1, 2), out_dtype=torch.float32)
    return m.diagonal(0, 1, 2).reshape(B, n)


ref = (a64 * b64).sum(-1)
for gsz in (4, 8, 16, 32, 64):
    timeit(f"token dot via grouped bf16 GEMM, groups of {gsz}", lambda: group_dot(a, b, gsz))
print("grouped dot max rel err", ((group_dot(a, b, 16).double() - ref).abs() / ref.abs()).max().item())
timeit("token sum bf16 -> f32 (fused)", lambda: a.sum(1, dtype=torch.float32))
timeit("token norm bf16 -> f32 (fused)", lambda: torch.linalg.vector_norm(a, dim=-1, dtype=torch.float32))


def split3(w):
    hi = w.bfloat16()
    r = w - hi.float()
    mid = r.bfloat16()
    lo = (r - mid.float()).bfloat16()
    return torch.cat([hi, mid, lo], 1)


w = torch.rand(B, 2, n, device=dev) + 0.5
timeit("weighted token sums via split-3 bf16 GEMM [B,6,n]x[B,n,d]",
       lambda: torch.bmm(split3(w), a, out_dtype=torch.float32).view(B, 3, 2, d).sum(1))
ws = torch.bmm(split3(w), a, out_dtype=torch.float32).view(B, 3, 2, d).sum(1).double()
wref = torch.bmm(w.double(), a64)
print("split-3 weighted sum max rel err", ((ws - wref).abs().max() / wref.abs().max()).item())

timeit("gram bf16 -> f32 full", lambda: torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32))
out = torch.empty(B, n, n, device=dev)


def sym_gram(x, out, blocks=4):
    for i in range(blocks):
        lo, hi = n * i // blocks, n * (i + 1) // blocks
        blk = torch.bmm(x[:, lo:hi], x[:, :hi].transpose(1, 2), out_dtype=torch.float32)
        out[:, lo:hi, :hi] = blk
        if lo > 0:
            out[:, :lo, lo:hi] = blk[:, :, :lo].transpose(1, 2)


timeit("gram bf16 -> f32 symmetric 4 blocks", lambda: sym_gram(a, out))
K = torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32)


def centre_inplace(k):
    r = k.mean(2)                                   # [B, n]
    gm = r.mean(1, keepdim=True)                    # [B, 1]
    u = torch.stack([r - gm / 2, torch.ones_like(r)], 2)      # [B, n, 2]
    v = torch.stack([-torch.ones_like(r), -(r - gm / 2)], 2)  # [B, n, 2]
    return k.baddbmm_(u, v.transpose(1, 2))


Kc = K.clone()
timeit("centre in place: row means + rank-2 baddbmm_", lambda: centre_inplace(Kc.copy_(K)))
timeit("  (the copy_ alone)", lambda: Kc.copy_(K))
C = centre_inplace(K.clone())
K64 = torch.bmm(a64, a64.transpose(1, 2))
C64 = K64 - K64.mean(2, keepdim=True) - K64.mean(1, keepdim=True) + K64.mean((1, 2), keepdim=True)
print("centred f32 vs f64 max err / max", ((C.double() - C64).abs().max() / C64.abs().max()).item())
D = C.clone() * 1.1
timeit("frobenius per prompt: at::dot loop", lambda: torch.stack([torch.dot(C[i].view(-1), D[i].view(-1)) for i in range(B)]))
timeit("frobenius per prompt: bmm [B,1,n2]x[B,n2,1]", lambda: torch.bmm(C.view(B, 1, -1), D.view(B, -1, 1)))
timeit("frobenius per prompt: (C*D).sum((1,2))", lambda: (C * D).sum((1, 2)))
timeit("frobenius per prompt: split 64 bmm + f64 sum",
       lambda: torch.bmm(C.view(B * 64, 1, -1), D.view(B * 64, -1, 1)).view(B, 64).double().sum(1))
P = 25
stack = torch.randn(P, n * n, device=dev)
timeit("all-pair [25,n2] f32 mm", lambda: stack @ stack.T)
for chunk in (16384, 65536, 262144, 1048576):
    timeit(f"all-pair split-K {chunk} bmm + f64 sum",
           lambda: torch.bmm(stack.view(P, -1, chunk).transpose(0, 1),
                             stack.view(P, -1, chunk).permute(1, 2, 0)).double().sum(0))
st = stack.T.contiguous()
timeit("all-pair [n2,25] f32 (A^T A)", lambda: st.T @ st)
s64 = stack.double()
timeit("all-pair f64 mm", lambda: s64 @ s64.T)
sb = torch.randn(P, B, n * n, device=dev)
timeit("all-pair, all prompts: bmm [B,25,n2]x[B,n2,25] f32", lambda: torch.bmm(sb.transpose(0, 1), sb.permute(1, 2, 0)))

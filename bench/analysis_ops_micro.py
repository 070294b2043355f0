"""Cost of the candidate tensor operations of the analysis on one
representation point of pythia-1.4b's shape (8 prompts x 2048 tokens,
d = 2048, bf16): what the accumulator's precision choices cost on a GPU.

Usage (GPU machine): python3 bench/analysis_ops_micro.py
Prints one line per operation: median milliseconds over 20 runs (CUDA
events), plus the accuracy of the mixed-precision Gram against float64.
"""
import torch

from ops_timing import B, d, dev, n, residual_states, timeit

a, b = residual_states()


a64, b64 = a.double(), b.double()
a32, b32 = a.float(), b.float()
timeit("to(float64)", lambda: a.double())
timeit("to(float32)", lambda: a.float())
timeit("norm f64 of f64 copy", lambda: torch.linalg.vector_norm(a64, dim=-1))
timeit("norm bf16 -> f32 (fused cast)", lambda: torch.linalg.vector_norm(a, dim=-1, dtype=torch.float32))
timeit("dot f64 (a*b).sum", lambda: (a64 * b64).sum(-1))
timeit("dot f32 (a*b).sum", lambda: (a32 * b32).sum(-1))
timeit("dot bf16 mul->f32 out, sum", lambda: torch.mul(a, b, out=torch.empty(B, n, d, device=dev)).sum(-1))
timeit("dot bmm [Bn,1,d]x[Bn,d,1] bf16->f32", lambda: torch.bmm(a.view(B * n, 1, d), b.view(B * n, d, 1), out_dtype=torch.float32))
timeit("diff norm f64", lambda: torch.linalg.vector_norm(b64 - a64, dim=-1))
timeit("diff norm f32", lambda: torch.linalg.vector_norm(b32 - a32, dim=-1))
w = torch.rand(B, 2, n, device=dev, dtype=torch.float64)
timeit("intertoken gemv f64", lambda: torch.bmm(w, a64))
timeit("intertoken gemv f32", lambda: torch.bmm(w.float(), a32))
timeit("centre f64", lambda: a64 - a64.mean(1, keepdim=True))
timeit("gram f64 bmm", lambda: torch.bmm(a64, a64.transpose(1, 2)))
timeit("gram f32 bmm", lambda: torch.bmm(a32, a32.transpose(1, 2)))
timeit("gram bf16 bmm -> f32", lambda: torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32))
K = torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32)
L = torch.bmm(b, b.transpose(1, 2), out_dtype=torch.float32)


def centre(k):
    r = k.mean(2, keepdim=True)
    return k - r - r.transpose(1, 2) + r.mean(1, keepdim=True)


timeit("centre gram f32", lambda: centre(K))
C, D = centre(K), centre(L)
timeit("frobenius f32 per prompt (dot)", lambda: [torch.dot(C[i].view(-1), D[i].view(-1)) for i in range(B)])
P = 25
stack = torch.randn(P, n * n, device=dev)
timeit("all-pair inner [25, n^2] f32 mm, one prompt", lambda: stack @ stack.T)
timeit("all-pair inner [25, n^2] f32 split-K 4096 + f64 sum, one prompt",
       lambda: torch.bmm(stack.view(P, -1, 4096).transpose(0, 1), stack.view(P, -1, 4096).permute(1, 2, 0)).double().sum(0))
stack64 = stack.double()
timeit("all-pair inner [25, n^2] f64 mm, one prompt", lambda: stack64 @ stack64.T)

# Accuracy: Gram from bf16 states with fp32 accumulation, centred in f32 or
# f64, against float64 throughout; CKA of the two points both ways.
def cka(kc, lc):
    num = (kc * lc).sum((1, 2))
    return num / ((kc * kc).sum((1, 2)) * (lc * lc).sum((1, 2))).sqrt()


K64 = torch.bmm(a64, a64.transpose(1, 2))
L64 = torch.bmm(b64, b64.transpose(1, 2))
ref = cka(centre(K64), centre(L64))
mixed = cka(centre(K.double()), centre(L.double()))
mixed32 = cka(centre(K).double(), centre(L).double())
print("gram bf16->f32 vs f64: max rel entry err of centred Gram",
      ((centre(K.double()) - centre(K64)).abs().max() / centre(K64).abs().max()).item())
print("biased CKA f64", ref.tolist())
print("biased CKA, Gram f32 centred f64: max abs diff", (mixed - ref).abs().max().item())
print("biased CKA, Gram f32 centred f32: max abs diff", (mixed32 - ref).abs().max().item())

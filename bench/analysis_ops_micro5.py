"""Fifth round: does cuBLAS's reduced-precision split-K reduction (on by
default for fp16/bf16 GEMMs) touch the half GEMMs with a float32 output that
the analysis uses? Error against float64 with the default and with it off.
Usage: python3 bench/analysis_ops_micro5.py"""
import torch

from ops_timing import B, d, dev, n

g = torch.Generator(device=dev).manual_seed(0)
x = torch.randn(B, n, d, device=dev, generator=g) + 0.5
w = torch.rand(B, 6, n, device=dev, generator=g)
for dt in (torch.float16, torch.bfloat16):
    xh, wh = x.to(dt), w.to(dt)
    ref = torch.bmm(wh.double(), xh.double())
    gram_ref = torch.bmm(xh[:2].double(), xh[:2].double().transpose(1, 2))
    for allow in (True, False):
        if dt == torch.float16:
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = allow
        else:
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = allow
        got = torch.bmm(wh, xh, out_dtype=torch.float32).double()
        gram = torch.bmm(xh[:2], xh[:2].transpose(1, 2), out_dtype=torch.float32).double()
        print(dt, "reduced-precision reduction allowed" if allow else "disallowed",
              "weighted sums max rel err %.3g" % ((got - ref).abs().max() / ref.abs().max()).item(),
              "gram max rel err %.3g" % ((gram - gram_ref).abs().max() / gram_ref.abs().max()).item())

"""Which Mamba operations give a prompt different float32 results on a GPU
when it runs in a batch of 4 or of 2 (the 1-GPU vs 2-GPU sharded runs of
bench/gpu.sh sharded)? mamba-130m shapes, 1024 tokens, random values.
Prints, per operation, the largest |batch-of-4 row - batch-of-2 row|.
Usage (GPU machine): python3 bench/ssm_batch_invariance.py"""
import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"
g = torch.Generator(device=dev).manual_seed(0)
L, d, E, N, R, K = 1024, 768, 1536, 16, 48, 4


def rnd(*shape):
    return torch.randn(*shape, device=dev, generator=g)


def compare(name, fn, x4):
    full = fn(x4)
    half = torch.cat([fn(x4[:2]), fn(x4[2:])], 0)
    print(f"{name:48s} max |batch 4 - batch 2| = {(full - half).abs().max().item():.3g}", flush=True)


w_in, w_x, w_dt, w_out = rnd(2 * E, d) * 0.03, rnd(R + 2 * N, E) * 0.03, rnd(E, R) * 0.1, rnd(d, E) * 0.03
conv_w, conv_b = rnd(E, 1, K) * 0.5, rnd(E) * 0.1
compare("in_proj  linear [B*L, 768] x [768, 3072]", lambda x: F.linear(x, w_in), rnd(4, L, d))
compare("x_proj   linear [B*L, 1536] x [1536, 80]", lambda x: F.linear(x, w_x), rnd(4, L, E))
compare("dt_proj  linear [B*L, 48] x [48, 1536]", lambda x: F.linear(x, w_dt), rnd(4, L, R))
compare("out_proj linear [B*L, 1536] x [1536, 768]", lambda x: F.linear(x, w_out), rnd(4, L, E))
compare("depthwise causal conv1d (cuDNN)",
        lambda x: F.conv1d(x, conv_w, conv_b, padding=K - 1, groups=E)[..., :L], rnd(4, E, L))


def shifted(x):
    xp = F.pad(x, (K - 1, 0))
    out = conv_b.view(1, E, 1).expand_as(x).clone()
    for j in range(K):
        out = out + conv_w[:, 0, j].view(1, E, 1) * xp[..., j:j + L]
    return out


compare("depthwise causal conv1d as shifted sums", shifted, rnd(4, E, L))
x = rnd(4, E, L)
ref = F.conv1d(x.double(), conv_w.double(), conv_b.double(), padding=K - 1, groups=E)[..., :L]
print("conv vs float64: cuDNN %.3g, shifted sums %.3g" % (
    (F.conv1d(x, conv_w, conv_b, padding=K - 1, groups=E)[..., :L] - ref).abs().max().item(),
    (shifted(x) - ref).abs().max().item()))

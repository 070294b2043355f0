"""Shared by bench/gram_blocks_micro.py (and, until 44dce91, the analysis_ops_micro rounds): residual-stream-like bf16 states of
pythia-1.4b's shape and a CUDA-event timer."""
import torch

torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
B, n, d = 8, 2048, 2048


def residual_states():
    """Two consecutive "layers" a, b [B, n, d] bf16: a shared direction
    (intertoken cos ~0.9) plus noise, b = a + a small step."""
    g = torch.Generator(device=dev).manual_seed(0)
    common = torch.randn(d, device=dev, generator=g) * 3
    a = (torch.randn(B, n, d, device=dev, generator=g) + common).bfloat16()
    b = (a.float() + 0.3 * torch.randn(B, n, d, device=dev, generator=g)).bfloat16()
    return a, b


def timeit(name, fn, reps=20):
    """Prints the median milliseconds of fn over reps runs (after one warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    print(f"{name:64s} {times[len(times) // 2]:8.3f} ms", flush=True)

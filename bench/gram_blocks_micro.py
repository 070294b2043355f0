"""The CKA Gram of the half-precision path (worker/analysis/half_state_ops.cc,
HalfLowerBlockGram): the full half GEMM against its lower block triangle in
k row blocks (k GEMMs into strided views of one [B, n, n] buffer, as the
worker does), and against one batched GEMM over gathered block pairs.
Which is fastest on the GPU decides kGramRowBlocks.
Usage: python3 bench/gram_blocks_micro.py"""
import torch

from ops_timing import B, d, dev, n, residual_states, timeit

a, _ = residual_states()
out = torch.empty(B, n, n, device=dev)


def full():
    torch.bmm(a, a.transpose(1, 2), out_dtype=torch.float32, out=out)


def row_blocks(k):
    def run():
        for i in range(k):
            lo, hi = n * i // k, n * (i + 1) // k
            torch.bmm(a[:, lo:hi], a[:, :hi].transpose(1, 2), out_dtype=torch.float32,
                      out=out[:, lo:hi, :hi])
    return run


def block_pairs(k):
    m = n // k
    pairs = [(i, j) for i in range(k) for j in range(i + 1)]
    rows = torch.tensor([i for i, _ in pairs], device=dev)
    cols = torch.tensor([j for _, j in pairs], device=dev)
    pair_out = torch.empty(B * len(pairs), m, m, device=dev)

    def run():
        blocks = a.view(B, k, m, d)
        x = blocks.index_select(1, rows).reshape(B * len(pairs), m, d)
        y = blocks.index_select(1, cols).reshape(B * len(pairs), m, d)
        torch.bmm(x, y.transpose(1, 2), out_dtype=torch.float32, out=pair_out)
    return run


timeit("full Gram, one bmm (100% of the multiply-adds)", full)
for k in (2, 4, 8):
    timeit(f"{k} row blocks into strided views ({(k + 1) / (2 * k):.1%})", row_blocks(k))
for k in (4, 8):
    timeit(f"{k}x{k} block pairs gathered, one bmm ({(k + 1) / (2 * k):.1%})", block_pairs(k))

# The row blocks give the same lower triangle as the full product.
row_blocks(4)()
lower = out.clone()
full()
for i in range(4):
    lo, hi = n * i // 4, n * (i + 1) // 4
    assert torch.equal(lower[:, lo:hi, :hi], out[:, lo:hi, :hi]) or \
        (lower[:, lo:hi, :hi] - out[:, lo:hi, :hi]).abs().max() <= 1e-5 * out.abs().max()
print("row blocks agree with the full product")

#include "worker/analysis/half_state_ops.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "worker/kernels/kernel_switch.h"

#ifdef LF_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cublas_v2.h>

#include "worker/analysis/half_state_kernels.h"

static_assert(layerflow::worker::cuda_kernels::kPassThreadTerms ==
                  layerflow::worker::kPointPassThreadTerms,
              "HalfPointPassBounds describes the kernel's float32 partials");
#endif

namespace layerflow::worker {
namespace {

void CheckHalfStates(const at::Tensor& h, const char* what) {
  TORCH_CHECK(h.defined(), "analysis: ", what, " undefined");
  TORCH_CHECK(h.dim() == 3, "analysis: ", what, " must be [batch, seq, d], got ", h.sizes());
  TORCH_CHECK(IsFusedStateType(h.scalar_type()), "analysis: ", what,
              " must be bf16, fp16 or float32, got ", h.scalar_type());
}

void CheckTokenStatsInputs(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& v) {
  CheckHalfStates(cur, "states");
  if (prev.defined()) {
    TORCH_CHECK(prev.sizes() == cur.sizes(), "analysis: layer shapes differ: ", prev.sizes(),
                " vs ", cur.sizes());
    TORCH_CHECK(prev.scalar_type() == cur.scalar_type(),
                "analysis: layer dtypes differ: ", prev.scalar_type(), " vs ", cur.scalar_type(),
                " (upcast the lower-precision one first)");
  }
  if (v.defined()) {
    TORCH_CHECK(v.dim() == 2 && v.size(0) == cur.size(0) && v.size(1) == cur.size(2) &&
                    v.scalar_type() == at::kDouble,
                "analysis: per-prompt vector must be float64 [", cur.size(0), ", ", cur.size(2),
                "], got ", v.sizes());
  }
}

void CheckTokenWeights(const at::Tensor& w, const at::Tensor& h) {
  CheckHalfStates(h, "states");
  TORCH_CHECK(w.dim() == 3 && w.size(0) == h.size(0) && w.size(2) == h.size(1) && w.size(1) >= 1 &&
                  w.size(1) <= 4 && w.scalar_type() == at::kDouble,
              "analysis: token weights must be float64 [", h.size(0), ", 1..4, ", h.size(1),
              "], got ", w.sizes());
}

// out = x y for half x [B, m, k], y [B, k, p] and float32 out [B, m, p] (a
// strided view is written in place): cuBLAS's half GEMM with a float32
// output on CUDA; on the CPU, which has no such kernel, the float32 product
// of the exactly upcast operands (every product of two halves is exact in
// float32 there too: the same arithmetic up to the order of the float32
// additions).
void HalfGemmInto(at::Tensor& out, const at::Tensor& x, const at::Tensor& y) {
  if (x.is_cuda()) {
    at::bmm_out(out, x, y, at::kFloat);
  } else {
    at::bmm_out(out, x.to(at::kFloat), y.to(at::kFloat));
  }
}

#ifdef LF_WITH_CUDA
cuda_kernels::StateType KernelType(const at::Tensor& h) {
  switch (h.scalar_type()) {
    case at::kBFloat16:
      return cuda_kernels::StateType::kBFloat16;
    case at::kHalf:
      return cuda_kernels::StateType::kFloat16;
    default:
      return cuda_kernels::StateType::kFloat32;  // CheckHalfStates let nothing else in
  }
}

void CheckLaunch(cudaError_t error, const char* kernel) {
  TORCH_CHECK(error == cudaSuccess, "analysis: CUDA kernel ", kernel,
              " failed: ", cudaGetErrorString(error));
}

// Thread blocks of the passes over an n x n Gram (a warp per row): 8 warps
// a block, ~2 rows a warp, enough warps to fill the GPU.
int64_t GramRowGroups(int64_t n) { return std::clamp<int64_t>(n / 16, 1, 256); }

cudaStream_t StreamOf(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
#endif

}  // namespace

TokenStats HalfTokenStatsAten(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& v) {
  CheckTokenStatsInputs(cur, prev, v);
  const at::Tensor x = cur.to(at::kDouble);
  TokenStats s;
  s.norm_sq = x.square().sum(-1);
  if (prev.defined()) {
    const at::Tensor y = prev.to(at::kDouble);
    s.prev_dot = (x * y).sum(-1);
    s.step_sq = (x - y).square().sum(-1);
  }
  if (v.defined()) s.vec_dot = at::bmm(x, v.unsqueeze(2)).squeeze(2);
  return s;
}

TokenStats HalfTokenStats(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& v) {
#ifdef LF_WITH_CUDA
  if (cur.is_cuda()) {
    CheckTokenStatsInputs(cur, prev, v);
    c10::cuda::CUDAGuard guard(cur.device());
    const at::Tensor c = cur.contiguous();
    const at::Tensor p = prev.defined() ? prev.contiguous() : prev;
    const at::Tensor w = v.defined() ? v.contiguous() : v;
    const int64_t batch = c.size(0), n = c.size(1), d = c.size(2);
    at::Tensor out = at::empty({batch, n, 4}, c.options().dtype(at::kDouble));
    CheckLaunch(cuda_kernels::LaunchTokenStats(
                    KernelType(c), c.data_ptr(), p.defined() ? p.data_ptr() : nullptr,
                    w.defined() ? w.data_ptr<double>() : nullptr, batch * n, n, d,
                    out.data_ptr<double>(), StreamOf(c)),
                "TokenStats");
    TokenStats s;
    s.norm_sq = out.select(2, 0);
    if (prev.defined()) {
      s.prev_dot = out.select(2, 1);
      s.step_sq = out.select(2, 2);
    }
    if (v.defined()) s.vec_dot = out.select(2, 3);
    return s;
  }
#endif
  return HalfTokenStatsAten(cur, prev, v);
}

at::Tensor HalfWeightedTokenSumsAten(const at::Tensor& w, const at::Tensor& h) {
  CheckTokenWeights(w, h);
  return at::bmm(w, h.to(at::kDouble));
}

at::Tensor HalfWeightedTokenSums(const at::Tensor& w, const at::Tensor& h) {
#ifdef LF_WITH_CUDA
  if (h.is_cuda()) {
    static_assert(cuda_kernels::kMaxWeightRows == 4, "CheckTokenWeights allows 1..4 rows");
    CheckTokenWeights(w, h);
    c10::cuda::CUDAGuard guard(h.device());
    const at::Tensor x = h.contiguous(), weights = w.contiguous();
    const int64_t batch = x.size(0), n = x.size(1), d = x.size(2), k = w.size(1);
    // ~64 tokens per thread: enough warps to fill the GPU, and partials
    // (read again by the sum below) of at most a sixteenth of the states'
    // bytes per weight row.
    const int64_t splits = std::clamp<int64_t>(n / 64, 1, 32);
    at::Tensor partial = at::empty({batch, splits, k, d}, x.options().dtype(at::kDouble));
    CheckLaunch(cuda_kernels::LaunchWeightedTokenSums(
                    KernelType(x), weights.data_ptr<double>(), static_cast<int>(k), x.data_ptr(),
                    batch, n, d, splits, partial.data_ptr<double>(), StreamOf(x)),
                "WeightedTokenSums");
    return partial.sum(1);
  }
#endif
  return HalfWeightedTokenSumsAten(w, h);
}

namespace {

// The point pass from the per-quantity passes: Aten ones (`aten`) or the
// dispatching ones (kernels on CUDA).
PointPassResult ComposedPointPass(const at::Tensor& cur, const at::Tensor& prev,
                                  const PointPassSpec& spec, bool aten) {
  const TokenStats t =
      aten ? HalfTokenStatsAten(cur, prev, at::Tensor()) : HalfTokenStats(cur, prev, at::Tensor());
  PointPassResult r;
  r.norm_sq = t.norm_sq.contiguous();
  if (prev.defined()) {
    r.prev_dot = t.prev_dot.contiguous();
    r.step_sq = t.step_sq.contiguous();
  }
  auto sums_of = [&](const at::Tensor& w, const at::Tensor& h) {
    return aten ? HalfWeightedTokenSumsAten(w, h) : HalfWeightedTokenSums(w, h);
  };
  std::vector<at::Tensor> weights;  // [B, n] each
  if (spec.unit || spec.unit_nofirst) {
    const at::Tensor unit = r.norm_sq.sqrt().clamp_min(spec.tiny).reciprocal();
    if (spec.unit) weights.push_back(unit);
    if (spec.unit_nofirst) {
      at::Tensor w = unit.clone();
      w.select(1, 0).zero_();
      weights.push_back(w);
    }
  }
  const int64_t units = static_cast<int64_t>(weights.size());
  if (spec.plain) weights.push_back(at::ones_like(r.norm_sq));
  if (!weights.empty()) {
    const at::Tensor sums = sums_of(at::stack(weights, 1), cur);  // [B, k, d]
    if (units > 0) r.unit_sums = sums.narrow(1, 0, units);
    if (spec.plain) r.plain_sum = sums.select(1, units);
  }
  if (spec.rounded) {
    r.rounded = cur.to(at::kBFloat16);
    r.rounded_sum = sums_of(at::ones_like(r.norm_sq).unsqueeze(1), r.rounded).squeeze(1);
    r.rounded_norm_sq = (aten ? HalfTokenStatsAten(r.rounded, at::Tensor(), at::Tensor())
                              : HalfTokenStats(r.rounded, at::Tensor(), at::Tensor()))
                            .norm_sq.contiguous();
  }
  if (spec.prev_vec.defined()) {
    const at::Tensor p = spec.prev_vec_rounded ? prev.to(at::kBFloat16) : prev;
    r.prev_vec_dot = (aten ? HalfTokenStatsAten(p, at::Tensor(), spec.prev_vec)
                           : HalfTokenStats(p, at::Tensor(), spec.prev_vec))
                         .vec_dot.contiguous();
  }
  return r;
}

void CheckPointPassInputs(const at::Tensor& cur, const at::Tensor& prev,
                          const PointPassSpec& spec) {
  CheckTokenStatsInputs(cur, prev, at::Tensor());
  TORCH_CHECK(!spec.rounded || cur.scalar_type() == at::kFloat, "analysis: a bf16 rounding of ",
              cur.scalar_type(), " states was asked for (float32 states only)");
  if (spec.prev_vec.defined()) {
    TORCH_CHECK(prev.defined(), "analysis: a vector for the point before, but no point before");
    TORCH_CHECK(!spec.prev_vec_rounded || prev.scalar_type() == at::kFloat,
                "analysis: a bf16 rounding of ", prev.scalar_type(),
                " states was asked for (float32 states only)");
    CheckTokenStatsInputs(prev, at::Tensor(), spec.prev_vec);
  }
}

}  // namespace

PointPassResult HalfPointPassAten(const at::Tensor& cur, const at::Tensor& prev,
                                  const PointPassSpec& spec) {
  CheckPointPassInputs(cur, prev, spec);
  return ComposedPointPass(cur, prev, spec, /*aten=*/true);
}

PointPassResult HalfPointPassBounds(const at::Tensor& cur, const at::Tensor& prev,
                                    const PointPassSpec& spec) {
  CheckPointPassInputs(cur, prev, spec);
  constexpr double kFloat64Sum = 0x1p-44;  // float64 sums of <= 2^8 d terms, d <= 8192
  constexpr double kStat = (kPointPassThreadTerms + 3) * 0x1p-24 + kFloat64Sum;
  const at::Tensor x = cur.to(at::kDouble), ax = x.abs();
  const auto sum_d = [](const at::Tensor& t) { return t.sum(2); };  // [B, n, d] -> [B, n]
  PointPassResult b;
  b.norm_sq = kStat * sum_d(x * x);
  if (prev.defined()) {
    const at::Tensor y = prev.to(at::kDouble);
    b.prev_dot = kStat * sum_d(ax * y.abs());
    b.step_sq = kStat * sum_d((x - y) * (x - y));
    if (spec.prev_vec.defined()) {
      const at::Tensor p = spec.prev_vec_rounded ? prev.to(at::kBFloat16).to(at::kDouble) : y;
      b.prev_vec_dot = kStat * sum_d(p.abs() * spec.prev_vec.to(x.device()).abs().unsqueeze(1));
    }
  }
  if (spec.unit || spec.unit_nofirst) {
    const at::Tensor unit = x.norm(2, {2}).clamp_min(spec.tiny).reciprocal();  // [B, n]
    const at::Tensor col = (kStat / 2 + kFloat64Sum) * (ax * unit.unsqueeze(2)).sum(1);  // [B, d]
    b.unit_sums = at::stack(std::vector<at::Tensor>(spec.unit + spec.unit_nofirst, col), 1);
  }
  if (spec.plain) b.plain_sum = kFloat64Sum * ax.sum(1);
  if (spec.rounded) {
    const at::Tensor r = cur.to(at::kBFloat16).to(at::kDouble);
    b.rounded_sum = kFloat64Sum * r.abs().sum(1);
    b.rounded_norm_sq = kStat * sum_d(r * r);
  }
  return b;
}

PointPassResult HalfPointPass(const at::Tensor& cur, const at::Tensor& prev,
                              const PointPassSpec& spec) {
  CheckPointPassInputs(cur, prev, spec);
#ifdef LF_WITH_CUDA
  if (cur.is_cuda() && cuda_kernels::PointPassFits(KernelType(cur), cur.size(2))) {
    c10::cuda::CUDAGuard guard(cur.device());
    const at::Tensor c = cur.contiguous();
    const at::Tensor p = prev.defined() ? prev.contiguous() : prev;
    const auto aligned = [](const at::Tensor& x) {
      return !x.defined() || reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
    };
    if (aligned(c) && aligned(p)) {
      const int64_t batch = c.size(0), n = c.size(1), d = c.size(2);
      const cuda_kernels::PassRows rows{spec.unit, spec.unit_nofirst, spec.plain, spec.rounded};
      const int64_t splits = cuda_kernels::PointPassSplits(batch, n);
      const auto f64 = c.options().dtype(at::kDouble);
      at::Tensor stats = at::empty({cuda_kernels::kPassStats, batch, n}, f64);
      const at::Tensor v = spec.prev_vec.defined() ? spec.prev_vec.contiguous() : at::Tensor();
      at::Tensor partial =
          rows.count() > 0 ? at::empty({batch, splits, rows.count(), d}, f64) : at::Tensor();
      PointPassResult r;
      if (spec.rounded) r.rounded = at::empty({batch, n, d}, c.options().dtype(at::kBFloat16));
      CheckLaunch(cuda_kernels::LaunchPointPass(
                      KernelType(c), c.data_ptr(), p.defined() ? p.data_ptr() : nullptr,
                      v.defined() ? v.data_ptr<double>() : nullptr, spec.prev_vec_rounded, batch, n,
                      d, rows, spec.tiny, splits, stats.data_ptr<double>(),
                      partial.defined() ? partial.data_ptr<double>() : nullptr,
                      spec.rounded ? r.rounded.data_ptr() : nullptr, StreamOf(c)),
                  "PointPass");
      r.norm_sq = stats[0];
      if (prev.defined()) {
        r.prev_dot = stats[1];
        r.step_sq = stats[2];
      }
      if (v.defined()) r.prev_vec_dot = stats[3];
      if (spec.rounded) r.rounded_norm_sq = stats[4];
      if (rows.count() > 0) {
        const at::Tensor sums = partial.sum(1);  // [B, k, d]
        const int64_t units = (spec.unit ? 1 : 0) + (spec.unit_nofirst ? 1 : 0);
        if (units > 0) r.unit_sums = sums.narrow(1, 0, units);
        if (spec.plain) r.plain_sum = sums.select(1, units);
        if (spec.rounded) r.rounded_sum = sums.select(1, rows.count() - 1);
      }
      return r;
    }
  }
#endif
  return ComposedPointPass(cur, prev, spec, /*aten=*/false);
}

bool IsHalfPrecision(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

bool IsFusedStateType(at::ScalarType type) {
  return type == at::kBFloat16 || type == at::kHalf || type == at::kFloat;
}

namespace {
// Float32 states on CUDA: the fused passes unless LAYERFLOW_SSM_KERNELS=0
// (worker/kernels/kernel_switch.h), which gives the float64 path instead.
std::atomic<bool> float32_fused{SsmKernelsRequested()};
}  // namespace

void SetFloat32FusedPath(bool enabled) { float32_fused.store(enabled); }

bool TakesFusedPath(c10::Device device, at::ScalarType type, at::ScalarType model_dtype) {
  const bool half_model = model_dtype == at::kBFloat16 || model_dtype == at::kHalf;
  return type == at::kBFloat16 || type == at::kHalf ||
         (type == at::kFloat && (device.is_cuda() || half_model) && float32_fused.load());
}

RowBlock RowBlockOf(int64_t n, int64_t blocks, int64_t i) {
  return {n * i / blocks, n * (i + 1) / blocks};
}

namespace {
std::atomic<int64_t> max_gram_blocks{kGramRowBlocks};
}  // namespace

void SetGramRowBlocks(int64_t blocks) { max_gram_blocks.store(std::max<int64_t>(blocks, 1)); }

int64_t GramRowBlocks(int64_t n) {
  const int64_t most = std::clamp<int64_t>(n / kMinGramBlockRows, 1, max_gram_blocks.load());
  // Halved until the blocks are equal and whole 16-byte float32 rows (what
  // the tile GEMM takes; n = 2000: 4 blocks of 500), else the most.
  for (int64_t blocks = most; blocks >= 2; blocks /= 2) {
    if (n % (4 * blocks) == 0) return blocks;
  }
  return most;
}

at::Tensor SplitBf16OperandsAten(const at::Tensor& h) {
  TORCH_CHECK(h.defined() && h.dim() == 3 && h.scalar_type() == at::kFloat,
              "analysis: the split-bf16 operands need float32 states [batch, seq, d]");
  const at::Tensor hi = h.to(at::kBFloat16);
  const at::Tensor lo = (h - hi.to(at::kFloat)).to(at::kBFloat16);
  return at::cat({lo, hi, hi, lo}, 2);
}

at::Tensor SplitBf16Operands(const at::Tensor& h) {
#ifdef LF_WITH_CUDA
  if (h.is_cuda()) {
    TORCH_CHECK(h.dim() == 3 && h.scalar_type() == at::kFloat,
                "analysis: the split-bf16 operands need float32 states [batch, seq, d]");
    c10::cuda::CUDAGuard guard(h.device());
    const at::Tensor x = h.contiguous();
    const int64_t batch = x.size(0), n = x.size(1), d = x.size(2);
    at::Tensor out = at::empty({batch, n, 4 * d}, x.options().dtype(at::kBFloat16));
    CheckLaunch(cuda_kernels::LaunchSplitBf16(x.data_ptr<float>(), batch * n, d, out.data_ptr(),
                                              StreamOf(x)),
                "SplitBf16");
    return out;
  }
#endif
  return SplitBf16OperandsAten(h);
}

namespace {

// The GEMM operands of h [B, n, d]'s Gram: (x, y) with x y^T = K. Half
// states: h itself, both sides. Float32 states: the split-bf16 operands
// (header) as views of one [B, n, 4 d] buffer S = [lo | hi | hi | lo]:
// x = S[..., d:4d] = [hi | hi | lo], y = S[..., 0:3d] = [lo | hi | hi].
struct GramOperands {
  at::Tensor x, y;
};
GramOperands GramOperandsOf(const at::Tensor& h) {
  if (h.scalar_type() != at::kFloat) return {h, h};
  const int64_t d = h.size(2);
  const at::Tensor s = SplitBf16Operands(h);
  return {s.narrow(2, d, 3 * d), s.narrow(2, 0, 3 * d)};
}

// Float32 states: K's diagonal set to the float32 rounding of the exact
// float64 |h_t|^2 (norm_sq [B, n], or computed here when undefined). The
// split-bf16 GEMM leaves it low by sum_k lo_tk^2 (~2e-6 of it, a bias, not
// noise), and the unbiased HSIC subtracts exact diagonals (metric_observers.cc):
// see the header. Half states: K as the GEMM gave it.
void SetExactDiagonal(at::Tensor& k, const at::Tensor& h, const at::Tensor& norm_sq) {
  if (h.scalar_type() != at::kFloat) return;
  const at::Tensor exact =
      norm_sq.defined() ? norm_sq : HalfTokenStats(h, at::Tensor(), at::Tensor()).norm_sq;
  TORCH_CHECK(exact.sizes() == at::IntArrayRef({h.size(0), h.size(1)}) &&
                  exact.scalar_type() == at::kDouble,
              "analysis: token norms must be float64 [", h.size(0), ", ", h.size(1), "], got ",
              exact.sizes());
  k.diagonal(0, 1, 2).copy_(exact);
}

#ifdef LF_WITH_CUDA
std::atomic<bool> gram_tiles{true};

// The lower block triangle as ONE batched GEMM over its tiles. The row-block
// GEMMs below are `blocks` launches of growing width whose first ones cannot
// fill the GPU (4 blocks of 512 rows at n = 2048, B = 8: 6 waves of cuBLAS's
// 128 x 256 tiles on 132 SMs for 4.85 waves of work), and a finer tiling
// multiplies less ((blocks + 1) / (2 blocks) of the product) but launches
// more, smaller GEMMs. cuBLAS's pointer-array batched GEMM takes tiles
// anywhere in memory, so all B blocks (blocks + 1) / 2 tiles go in one
// launch: tile (i, j), j <= i, of prompt b is x_b[rows of i] y_b[rows of
// j]^T into out_b[rows of i, columns of j] (row-major; cuBLAS's column-major
// view of it is y_j x_i^T, hence transa = T). Equal, 16-byte aligned tiles
// only: false (and nothing launched) otherwise. The entries are those of the
// row-block path up to the order of cuBLAS's float32 accumulation. H200,
// [8, 2048, 2048] bf16 (bench_half_ops): 8 blocks' tiles 0.128 ms, against
// 0.145 ms for 4 row blocks (the best of the row-block forms) and 0.161 ms
// for 8; their centred products read 10% less (0.065 against 0.070 ms).
bool GemmLowerTiles(at::Tensor& out, const at::Tensor& x, const at::Tensor& y, int64_t blocks) {
  const int64_t batch = x.size(0), n = x.size(1), k = x.size(2);
  if (!gram_tiles.load() || blocks < 2 || n % blocks != 0 || x.stride(2) != 1 || y.stride(2) != 1 ||
      x.scalar_type() != y.scalar_type() || !out.is_contiguous()) {
    return false;
  }
  const int64_t m = n / blocks, count = batch * blocks * (blocks + 1) / 2;
  // Every tile's pointer and leading dimension 16-byte aligned: cuBLAS
  // cannot see the pointers in the arrays when it picks its kernel.
  const int64_t bytes = x.element_size();
  auto aligned = [](int64_t v) { return v % 16 == 0; };
  if (!aligned(reinterpret_cast<int64_t>(x.data_ptr())) ||
      !aligned(reinterpret_cast<int64_t>(y.data_ptr())) ||
      !aligned(reinterpret_cast<int64_t>(out.data_ptr())) || !aligned(x.stride(0) * bytes) ||
      !aligned(y.stride(0) * bytes) || !aligned(x.stride(1) * bytes) ||
      !aligned(y.stride(1) * bytes) || !aligned(m * static_cast<int64_t>(sizeof(float))) ||
      !aligned(n * static_cast<int64_t>(sizeof(float)))) {
    return false;
  }
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (count > kIntMax || k > kIntMax || x.stride(1) > kIntMax || y.stride(1) > kIntMax ||
      n > kIntMax) {
    return false;
  }
  // The three pointer arrays, made on the host into pinned memory and copied
  // on the stream (the caching host allocator keeps the buffer until the
  // copy has run), 24 bytes a tile.
  at::Tensor host = at::empty({3, count}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* a = host.data_ptr<int64_t>();
  int64_t* b = a + count;
  int64_t* c = b + count;
  const auto x0 = reinterpret_cast<int64_t>(x.data_ptr());
  const auto y0 = reinterpret_cast<int64_t>(y.data_ptr());
  const auto out0 = reinterpret_cast<int64_t>(out.data_ptr());
  int64_t t = 0;
  for (int64_t p = 0; p < batch; ++p) {
    for (int64_t i = 0; i < blocks; ++i) {
      for (int64_t j = 0; j <= i; ++j, ++t) {
        a[t] = y0 + (p * y.stride(0) + j * m * y.stride(1)) * bytes;
        b[t] = x0 + (p * x.stride(0) + i * m * x.stride(1)) * bytes;
        c[t] = out0 + (p * n * n + i * m * n + j * m) * static_cast<int64_t>(sizeof(float));
      }
    }
  }
  const at::Tensor pointers = host.to(x.device(), /*non_blocking=*/true);
  const int64_t* d = pointers.data_ptr<int64_t>();
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t type = x.scalar_type() == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  const cublasStatus_t status = cublasGemmBatchedEx(
      at::cuda::getCurrentCUDABlasHandle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m),
      static_cast<int>(m), static_cast<int>(k), &alpha, reinterpret_cast<const void* const*>(d),
      type, static_cast<int>(y.stride(1)), reinterpret_cast<const void* const*>(d + count), type,
      static_cast<int>(x.stride(1)), &beta, reinterpret_cast<void* const*>(d + 2 * count),
      CUDA_R_32F, static_cast<int>(n), static_cast<int>(count), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS,
              "analysis: the Gram's tile GEMM failed: ", cublasGetStatusString(status));
  return true;
}
#endif

}  // namespace

void SetGramTileGemm(bool enabled) {
#ifdef LF_WITH_CUDA
  gram_tiles.store(enabled);
#else
  (void)enabled;
#endif
}

at::Tensor HalfLowerBlockGram(const at::Tensor& h, int64_t blocks, const at::Tensor& norm_sq) {
  CheckHalfStates(h, "states");
  TORCH_CHECK(blocks >= 1, "analysis: Gram row blocks must be >= 1, got ", blocks);
  const int64_t batch = h.size(0), n = h.size(1);
  const auto options = h.options().dtype(at::kFloat);
  at::Tensor out = at::empty({batch, n, n}, options);
  const GramOperands g = GramOperandsOf(h);
#ifdef LF_WITH_CUDA
  if (h.is_cuda()) {
    c10::cuda::CUDAGuard guard(h.device());
    if (GemmLowerTiles(out, g.x, g.y, blocks)) {
      SetExactDiagonal(out, h, norm_sq);
      return out;
    }
  }
#endif
  for (int64_t i = 0; i < blocks; ++i) {
    const RowBlock r = RowBlockOf(n, blocks, i);
    if (r.hi == r.lo) continue;
    at::Tensor view = out.narrow(1, r.lo, r.hi - r.lo).narrow(2, 0, r.hi);
    HalfGemmInto(view, g.x.narrow(1, r.lo, r.hi - r.lo), g.y.narrow(1, 0, r.hi).transpose(1, 2));
  }
  SetExactDiagonal(out, h, norm_sq);
  return out;
}

at::Tensor CentreGramAten(at::Tensor& k, const at::Tensor& r, const at::Tensor& g) {
  // The kernel's order: (k - (r_i - g)) - r_j.
  const at::Tensor c =
      (k.to(at::kDouble) - (r - g.unsqueeze(1)).unsqueeze(2) - r.unsqueeze(1)).to(at::kFloat);
  k.copy_(c);
  return c.to(at::kDouble).square().sum({1, 2});
}

void HalfGramInto(at::Tensor& out, const at::Tensor& h, const at::Tensor& norm_sq) {
  CheckHalfStates(h, "states");
  const int64_t batch = h.size(0), n = h.size(1);
  TORCH_CHECK(out.dim() == 3 && out.size(0) == batch && out.size(1) == n && out.size(2) == n &&
                  out.scalar_type() == at::kFloat && out.is_contiguous(),
              "analysis: a centred Gram must be contiguous float32 [", batch, ", ", n, ", ", n,
              "], got ", out.sizes());
  const GramOperands operands = GramOperandsOf(h);
  HalfGemmInto(out, operands.x, operands.y.transpose(1, 2));
  SetExactDiagonal(out, h, norm_sq);
}

at::Tensor HalfCentredGram(at::Tensor& out, const at::Tensor& h, const at::Tensor& r,
                           const at::Tensor& g, const at::Tensor& norm_sq) {
  HalfGramInto(out, h, norm_sq);
  return CentreGram(out, r, g);
}

at::Tensor CentreGram(at::Tensor& out, const at::Tensor& r, const at::Tensor& g) {
  const int64_t batch = out.size(0), n = out.size(1);
  TORCH_CHECK(
      out.dim() == 3 && out.size(2) == n && out.scalar_type() == at::kFloat && out.is_contiguous(),
      "analysis: a centred Gram must be contiguous float32 [", batch, ", ", n, ", ", n, "], got ",
      out.sizes());
  TORCH_CHECK(r.sizes() == at::IntArrayRef({batch, n}) && g.sizes() == at::IntArrayRef({batch}) &&
                  r.scalar_type() == at::kDouble && g.scalar_type() == at::kDouble,
              "analysis: Gram row means must be float64 [", batch, ", ", n,
              "] and the grand mean float64 [", batch, "]");
#ifdef LF_WITH_CUDA
  if (out.is_cuda()) {
    c10::cuda::CUDAGuard guard(out.device());
    const at::Tensor rows = r.contiguous(), grand = g.contiguous();
    const int64_t groups = GramRowGroups(n);
    at::Tensor partial = at::empty({batch, groups}, rows.options());
    CheckLaunch(cuda_kernels::LaunchCentreGram(out.data_ptr<float>(), rows.data_ptr<double>(),
                                               grand.data_ptr<double>(), batch, n, groups,
                                               partial.data_ptr<double>(), StreamOf(out)),
                "CentreGram");
    return partial.sum(1);
  }
#endif
  return CentreGramAten(out, r, g);
}

at::Tensor CentredGramProductsAten(const RawGram& a, const RawGram& b) {
  const at::Tensor& kb = b.lower;
  const int64_t n = kb.size(1);
  const bool with_a = a.lower.defined();
  at::Tensor ab = at::zeros({kb.size(0)}, kb.options().dtype(at::kDouble));
  at::Tensor bb = at::zeros_like(ab);
  auto centred = [&](const RawGram& g, const RowBlock& r) {  // [B, rows, hi]
    return g.lower.narrow(1, r.lo, r.hi - r.lo).narrow(2, 0, r.hi).to(at::kDouble) -
           g.row_means.narrow(1, r.lo, r.hi - r.lo).unsqueeze(2) -
           g.row_means.narrow(1, 0, r.hi).unsqueeze(1) + g.grand.view({-1, 1, 1});
  };
  for (int64_t i = 0; i < b.blocks; ++i) {
    const RowBlock r = RowBlockOf(n, b.blocks, i);
    if (r.hi == r.lo) continue;
    // Columns left of the diagonal block count twice (C is symmetric).
    at::Tensor weight = at::ones({r.hi}, ab.options());
    weight.narrow(0, 0, r.lo).fill_(2.0);
    const at::Tensor cb = centred(b, r);
    const at::Tensor weighted = cb * weight;
    bb += (weighted * cb).sum({1, 2});
    if (with_a) ab += (weighted * centred(a, r)).sum({1, 2});
  }
  return at::stack({ab, bb}, 1);
}

at::Tensor CentredGramProducts(const RawGram& a, const RawGram& b) {
  return CentredGramProductPartials(a, b).sum(2);
}

at::Tensor CentredGramProductPartials(const RawGram& a, const RawGram& b) {
  TORCH_CHECK(b.lower.defined() && b.lower.dim() == 3 && b.lower.scalar_type() == at::kFloat,
              "analysis: a raw Gram must be float32 [batch, n, n]");
  TORCH_CHECK(!a.lower.defined() || (a.lower.sizes() == b.lower.sizes() && a.blocks == b.blocks),
              "analysis: Gram shapes differ: ", a.lower.sizes(), " vs ", b.lower.sizes());
#ifdef LF_WITH_CUDA
  if (b.lower.is_cuda()) {
    c10::cuda::CUDAGuard guard(b.lower.device());
    const int64_t batch = b.lower.size(0), n = b.lower.size(1);
    const bool with_a = a.lower.defined();
    auto contiguous = [](const at::Tensor& t) { return t.contiguous(); };
    const at::Tensor kb = contiguous(b.lower), rb = contiguous(b.row_means),
                     gb = contiguous(b.grand);
    const at::Tensor ka = with_a ? contiguous(a.lower) : at::Tensor();
    const at::Tensor ra = with_a ? contiguous(a.row_means) : at::Tensor();
    const at::Tensor ga = with_a ? contiguous(a.grand) : at::Tensor();
    const int64_t groups = GramRowGroups(n);
    at::Tensor partial = at::empty({batch, 2, groups}, rb.options());
    CheckLaunch(
        cuda_kernels::LaunchCentredGramProducts(
            with_a ? ka.data_ptr<float>() : nullptr, with_a ? ra.data_ptr<double>() : nullptr,
            with_a ? ga.data_ptr<double>() : nullptr, kb.data_ptr<float>(), rb.data_ptr<double>(),
            gb.data_ptr<double>(), batch, n, b.blocks, groups, partial.data_ptr<double>(),
            StreamOf(kb)),
        "CentredGramProducts");
    return partial;
  }
#endif
  return CentredGramProductsAten(a, b).unsqueeze(2);
}

}  // namespace layerflow::worker

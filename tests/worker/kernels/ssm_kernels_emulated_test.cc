// The SSM kernels (worker/kernels/ssm_kernels.h) run under the CPU
// emulation of CUDA, against the ATen path of the models (worker/model, the
// code the CPU parity tests hold to transformers) and a float64 sequential
// recurrence. Shapes are chosen so that every tile boundary is crossed: a
// sequence that is not a multiple of the scan's 32-token tile or of the
// SSD's 64-token chunk, channel counts that leave a partial block, several
// prompts (the batch offsets), and more than one group of B and C.
// (The GPU test, tests/worker/kernels/ssm_kernels_gpu_test.cc, runs the same kernels
// on the hardware.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "worker/kernels/ssm_kernels.h"
#include "worker/model/mamba2.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {
namespace {

namespace ck = cuda_kernels;  // cuda_kernels_emulated in this target

ck::ActType ActOf(at::ScalarType t) {
  return t == at::kBFloat16 ? ck::ActType::kBFloat16
         : t == at::kHalf   ? ck::ActType::kFloat16
                            : ck::ActType::kFloat32;
}

double MaxRel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble);
  const double scale = w.abs().max().item<double>();
  return (got.to(at::kDouble) - w).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

// One rounding of the dtype (and accumulation order in float32).
double RoundingTolerance(at::ScalarType t) {
  return t == at::kFloat ? 2e-6 : t == at::kHalf ? 2e-3 : 1.6e-2;
}

class SsmKernelsEmulated : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  c10::InferenceMode guard_;
};

TEST_P(SsmKernelsEmulated, CausalConvEqualsAtenConvOnStridedRows) {
  const at::ScalarType type = GetParam();
  at::manual_seed(1);
  // 96 channels: a partial block (of 128 threads, or of 64 threads of 8
  // channels); 70 tokens: a partial run of 64 (and of 32, not a multiple of
  // the 8-channel kernel's 4 rows loaded ahead). Rows 130 values apart from
  // column 17 take the one-channel kernel; 136 apart from column 16 (16-byte
  // aligned, as in_proj's rows) the 8-channel one.
  struct Layout {
    int64_t row, first;
  };
  for (const Layout& layout : {Layout{130, 17}, Layout{136, 16}}) {
    const at::Tensor wide = at::randn({2, 70, layout.row}).to(type);
    const at::Tensor x = wide.narrow(-1, layout.first, 96);
    const at::Tensor w = (0.5 * at::randn({96, 1, 4})).to(type);
    const at::Tensor bias = at::randn({96}).to(type);
    for (bool with_bias : {true, false}) {
      at::Tensor out = at::empty({2, 70, 96}, x.options());
      ASSERT_EQ(ck::LaunchCausalConv1dSilu(ActOf(type), x.data_ptr(), x.stride(1), w.data_ptr(),
                                           with_bias ? bias.data_ptr() : nullptr, 2, 70, 96, 4,
                                           out.data_ptr(), nullptr),
                cudaSuccess);
      const at::Tensor want =
          ssm::CausalConv1dSilu(x.transpose(1, 2), w, with_bias ? bias : at::Tensor())
              .transpose(1, 2);
      EXPECT_LE(MaxRel(out, want), RoundingTolerance(type))
          << type << " bias " << with_bias << " row " << layout.row;
    }
  }
}

// The selective scan of MambaMixer in float64, with the ATen path's
// roundings of delta and silu(z) to the dtype: y [B, L, E], delta [B, L, E].
std::pair<at::Tensor, at::Tensor> ScanReference(const at::Tensor& u, const at::Tensor& dt,
                                                const at::Tensor& z, const at::Tensor& B,
                                                const at::Tensor& C, const at::Tensor& A,
                                                const at::Tensor& bias, const at::Tensor& D) {
  const at::ScalarType type = u.scalar_type();
  const at::Tensor delta = at::softplus((dt.to(at::kFloat) + bias.to(type).to(at::kFloat)).to(type))
                               .to(type)
                               .to(at::kDouble);  // [B, L, E]
  const at::Tensor gate = at::silu(z).to(at::kDouble);
  const at::Tensor ud = u.to(at::kDouble), Bd = B.to(at::kDouble), Cd = C.to(at::kDouble);
  const at::Tensor Ad = A.to(at::kDouble);
  at::Tensor h = at::zeros({u.size(0), u.size(2), A.size(1)}, at::kDouble);  // [B, E, N]
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < u.size(1); ++t) {
    const at::Tensor d = delta.select(1, t).unsqueeze(-1);  // [B, E, 1]
    h = at::exp(d * Ad) * h + d * ud.select(1, t).unsqueeze(-1) * Bd.select(1, t).unsqueeze(1);
    at::Tensor y = (h * Cd.select(1, t).unsqueeze(1)).sum(-1) + D.to(at::kDouble) * ud.select(1, t);
    ys.push_back(y * gate.select(1, t));
  }
  return {at::stack(ys, 1), delta};
}

TEST_P(SsmKernelsEmulated, SelectiveScanEqualsFloat64Recurrence) {
  const at::ScalarType type = GetParam();
  for (int64_t n : {16, 32}) {
    at::manual_seed(2);
    const int64_t batch = 2, seq = 70, e = 96;  // 70 tokens: a partial 32-token tile
    // Views of wider rows, as the mixer passes slices of its projections.
    const at::Tensor proj = at::randn({batch, seq, 2 * e}).to(type);
    const at::Tensor u = proj.narrow(-1, 0, e), z = proj.narrow(-1, e, e);
    const at::Tensor dt = (at::randn({batch, seq, e}) - 1).to(type);
    const at::Tensor params = at::randn({batch, seq, 8 + 2 * n}).to(type);
    const at::Tensor B = params.narrow(-1, 8, n), C = params.narrow(-1, 8 + n, n);
    const at::Tensor A =
        -at::exp(at::log(at::arange(1, n + 1, at::kFloat)).expand({e, n})).contiguous();
    const at::Tensor bias = at::randn({e}).to(type).to(at::kFloat);
    const at::Tensor D = at::randn({e}).to(type).to(at::kFloat);
    at::Tensor y = at::empty({batch, seq, e}, u.options());
    at::Tensor delta = at::empty({batch, seq, e}, at::kFloat);
    ck::SelectiveScanArgs args;
    args.type = ActOf(type);
    args.batch = batch, args.seq = seq, args.channels = e, args.states = n;
    args.u = u.data_ptr(), args.u_row = u.stride(1);
    args.dt = dt.data_ptr(), args.dt_row = dt.stride(1);
    args.z = z.data_ptr(), args.z_row = z.stride(1);
    args.B = B.data_ptr(), args.C = C.data_ptr(), args.bc_row = B.stride(1);
    args.A = A.data_ptr<float>(), args.dt_bias = bias.data_ptr<float>();
    args.D = D.data_ptr<float>();
    args.y = y.data_ptr(), args.delta_out = delta.data_ptr<float>();
    ASSERT_EQ(ck::LaunchSelectiveScan(args, nullptr), cudaSuccess);
    const auto [want_y, want_delta] = ScanReference(u, dt, z, B, C, A, bias, D);
    // float32: the state's float32 recurrence and exp2 (exact here, ~2 ulp
    // on the GPU's ex2.approx) against float64; halves: y's one rounding.
    EXPECT_LE(MaxRel(y, want_y), type == at::kFloat ? 1e-5 : RoundingTolerance(type))
        << type << " N " << n;
    EXPECT_LE(MaxRel(delta, want_delta), 1e-6) << type << " N " << n;
  }
}

TEST_P(SsmKernelsEmulated, SsdAndGatedNormEqualAtenChunkScan) {
  const at::ScalarType type = GetParam();
  const ck::ActType act = ActOf(type);
  if (!ck::SsdSupports(act, 64, 64, 64)) {
    // float32 runs the ATen path by design (SsdSupports): nothing to compare.
    EXPECT_EQ(type, at::kFloat);
    return;
  }
  struct Shape {
    int64_t groups, states, seq, chunk;
  };
  // 150 = two chunks of 64 and a partial one; 138 with 128 states. 300 in
  // chunks of 256: a chunk's 4 row tiles each take the causal s tiles up to
  // their own (the output kernel's loop and its skipped upper tiles), and
  // the second, partial chunk carries the first's state.
  for (const Shape& s : {Shape{2, 64, 150, 64}, Shape{1, 128, 138, 64}, Shape{1, 128, 300, 256}}) {
    at::manual_seed(3);
    const int64_t batch = 2, heads = 4, p = 64, chunk = s.chunk, e = heads * p;
    const int64_t width = e + 2 * s.groups * s.states;
    const at::Tensor xbc = (0.5 * at::randn({batch, s.seq, width})).to(type);
    const at::Tensor dt =
        at::softplus(at::randn({batch, s.seq, heads}) - 2).to(type).to(at::kFloat);
    const at::Tensor A = -at::arange(1, heads + 1, at::kFloat);
    const at::Tensor D = at::randn({heads}).to(type).to(at::kFloat);
    // The gate a strided view, as in the mixer (a slice of in_proj's rows),
    // 16-byte aligned as the norm's loads need.
    const at::Tensor proj = at::randn({batch, s.seq, e + 24}).to(type);
    const at::Tensor gate = proj.narrow(-1, 8, e);
    const at::Tensor weight = (1 + 0.1 * at::randn({e})).to(type);
    at::Tensor out = at::empty({batch, s.seq, e}, xbc.options());
    ck::SsdArgs args;
    args.type = act;
    args.batch = batch, args.seq = s.seq, args.heads = heads, args.head_dim = p;
    args.groups = s.groups, args.states = s.states, args.chunk = chunk;
    args.xbc = xbc.data_ptr(), args.dt = dt.data_ptr<float>(), args.A = A.data_ptr<float>();
    args.D = D.data_ptr<float>();
    args.gate = gate.data_ptr(), args.gate_row = gate.stride(1);
    args.norm_weight = weight.data_ptr(), args.eps = 1e-5;
    args.out = out.data_ptr();
    at::Tensor work = at::empty({ck::SsdWorkspaceFloats(args)}, at::kFloat);
    args.work = work.data_ptr<float>();
    ASSERT_EQ(ck::LaunchSsd(args, nullptr), cudaSuccess);

    // The ATen path: Mamba2Model::ChunkScan in float32 (B, C repeated per
    // head), then MambaRMSNormGated as Mamba2Model's mixer forms it.
    const int64_t gn = s.groups * s.states;
    auto per_head = [&](const at::Tensor& t) {
      return t.reshape({batch, s.seq, s.groups, s.states})
          .to(at::kFloat)
          .repeat_interleave(heads / s.groups, 2);
    };
    const at::Tensor y =
        Mamba2Model::ChunkScan(xbc.narrow(-1, 0, e).reshape({batch, s.seq, heads, p}), dt, A,
                               per_head(xbc.narrow(-1, e, gn)),
                               per_head(xbc.narrow(-1, e + gn, gn)), D, chunk)
            .reshape({batch, s.seq, e});
    at::Tensor g = y * at::silu(gate.to(at::kFloat));
    g = g * at::rsqrt(g.pow(2).mean(-1, true) + 1e-5);
    const at::Tensor want = (weight * g).to(type);
    // The decayed C B^T and the passed states are rounded to the dtype
    // once before the tensor cores read them (as the Mamba authors'
    // kernels): a few roundings of the dtype.
    const double tol = type == at::kHalf ? 1e-2 : 4e-2;
    EXPECT_LE(MaxRel(out, want), tol)
        << type << " groups " << s.groups << " N " << s.states << " chunk " << chunk;
    // And not trivially: the outputs are far from zero.
    EXPECT_GT(want.to(at::kFloat).abs().mean().item<double>(), 0.1);
  }
}

TEST_P(SsmKernelsEmulated, SsdRefusesRowsItCannotLoad16BytesAtATime) {
  // The SSD stages rows 16 bytes a load: a gate whose rows are not a
  // multiple of 8 values apart is refused with a status, never misread.
  const at::ScalarType type = GetParam();
  if (type == at::kFloat) {  // float32 never reaches the SSD
    EXPECT_FALSE(ck::SsdSupports(ActOf(type), 64, 64, 64));
    return;
  }
  const int64_t batch = 1, seq = 64, heads = 1, e = 64, width = e + 2 * 64;
  const at::Tensor xbc = at::zeros({batch, seq, width}, type);
  const at::Tensor dt = at::zeros({batch, seq, heads});
  const at::Tensor A = -at::ones({heads});
  const at::Tensor proj = at::zeros({batch, seq, e + 3}, type);
  const at::Tensor weight = at::ones({e}, type);
  at::Tensor out = at::empty({batch, seq, e}, type);
  ck::SsdArgs args;
  args.type = ActOf(type);
  args.batch = batch, args.seq = seq, args.heads = heads, args.head_dim = 64;
  args.groups = 1, args.states = 64, args.chunk = 64;
  args.xbc = xbc.data_ptr(), args.dt = dt.data_ptr<float>(), args.A = A.data_ptr<float>();
  args.gate = proj.data_ptr(), args.gate_row = proj.stride(1);
  args.norm_weight = weight.data_ptr(), args.out = out.data_ptr();
  at::Tensor work = at::empty({ck::SsdWorkspaceFloats(args)}, at::kFloat);
  args.work = work.data_ptr<float>();
  EXPECT_EQ(ck::LaunchSsd(args, nullptr), cudaErrorMisalignedAddress);
  args.gate_row = e + 8;  // aligned rows: accepted (the buffer is only read if it runs)
  const at::Tensor aligned = at::zeros({batch, seq, e + 8}, type);
  args.gate = aligned.data_ptr();
  EXPECT_EQ(ck::LaunchSsd(args, nullptr), cudaSuccess);
}

TEST_P(SsmKernelsEmulated, AddRmsNormEqualsAtenResidualAndNorm) {
  const at::ScalarType type = GetParam();
  const ck::ActType act = ActOf(type);
  if (!ck::AddRmsNormSupports(act, 64)) {
    EXPECT_EQ(type, at::kFloat);  // float32 models keep the ATen ops
    return;
  }
  at::manual_seed(5);
  // 3 rows; widths of one partial step (40) and of two steps with a
  // partial second (2056 = 8 x 256 + 8).
  for (int64_t width : {40, 2056}) {
    const at::Tensor residual = 30 * at::randn({3, width});
    const at::Tensor mixer = at::randn({3, width}).to(type);
    const at::Tensor weight = (1 + 0.1 * at::randn({width})).to(type);
    at::Tensor sum = at::empty({3, width});
    at::Tensor out = at::empty({3, width}, type);
    ASSERT_EQ(
        ck::LaunchAddRmsNorm(act, residual.data_ptr<float>(), mixer.data_ptr(), weight.data_ptr(),
                             3, width, 1e-5, sum.data_ptr<float>(), out.data_ptr(), nullptr),
        cudaSuccess);
    // MambaBlock: the float32 sum, then the next block's norm of it in the dtype.
    const at::Tensor want_sum = residual + mixer;
    EXPECT_TRUE(at::equal(sum, want_sum)) << type << " width " << width;
    const at::Tensor want = ssm::RmsNorm(want_sum.to(type), weight, 1e-5);
    // The variance's summation order alone differs: at most one rounding.
    EXPECT_LE(MaxRel(out, want), RoundingTolerance(type)) << type << " width " << width;
    EXPECT_GT(
        (out.to(at::kFloat) - want.to(at::kFloat)).abs().eq(0).to(at::kFloat).mean().item<double>(),
        0.95)
        << "nearly every value rounds the same";
  }
  EXPECT_FALSE(ck::AddRmsNormSupports(act, 8200));  // past 8 x 256 x 4
  EXPECT_FALSE(ck::AddRmsNormSupports(act, 36));    // not a multiple of 8
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SsmKernelsEmulated,
                         ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

}  // namespace
}  // namespace layerflow::worker

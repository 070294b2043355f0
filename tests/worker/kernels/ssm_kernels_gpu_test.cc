// The fused SSM kernels (worker/kernels/ssm_kernels.h) on the GPU: each
// against the ATen path it replaces on the same GPU (ssm::
// SetSsmKernelsEnabled(false)), and whole Mamba / Mamba-2 forwards against
// the same weights in float64 (the ATen path, which the CPU tests hold to
// transformers and to the sequential recurrence). Lengths that are not
// multiples of the kernels' tiles (32 tokens, 64-token chunks) and several
// prompts a batch, so padding and the batch offsets are exercised.
// CI has no GPU: this executable is not registered with CTest. On a GPU
// machine run build-gpu/tests/worker/kernels/worker_ssm_kernels_gpu_test
// (bench/gpu.sh conformance and bench/gpu.sh ssm do, and bench/RESULTS.md
// records it).
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {
namespace {

const c10::Device kGpu(c10::kCUDA, 0);

// max |got - want| / max |want|, float64 on the CPU.
double MaxRel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kCPU).to(at::kDouble);
  const double scale = w.abs().max().item<double>();
  return (got.to(at::kCPU).to(at::kDouble) - w).abs().max().item<double>() /
         (scale > 0 ? scale : 1.0);
}

// The kernels are off by default until this test has passed on a GPU
// (ssm_ops.cc): on for the whole binary.
const bool kKernelsOn = [] {
  ssm::SetSsmKernelsEnabled(true);
  return true;
}();

// The kernels switched off for one scope: the ATen path on the same GPU.
class AtenPath {
 public:
  AtenPath() { ssm::SetSsmKernelsEnabled(false); }
  ~AtenPath() { ssm::SetSsmKernelsEnabled(true); }
};

struct Points {
  std::vector<at::Tensor> hidden;  // every representation point, float64 CPU
  std::vector<at::Tensor> log_lambda;
};

Points RunPoints(const LanguageModel& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  Points out;
  SpectrumSink sink;
  sink.on_layer = [&](int64_t, const at::Tensor& ll) {
    out.log_lambda.push_back(ll.to(at::kCPU).to(at::kDouble));
  };
  model.Forward(
      ids.to(model.device()),
      [&](int64_t, const at::Tensor& h) { out.hidden.push_back(h.to(at::kCPU).to(at::kDouble)); },
      &sink);
  return out;
}

// Worst relative difference over the points (each point's own scale).
double WorstPoint(const Points& got, const Points& want, const char* what) {
  EXPECT_EQ(got.hidden.size(), want.hidden.size());
  double worst = 0;
  for (size_t p = 0; p < got.hidden.size() && p < want.hidden.size(); ++p) {
    worst = std::max(worst, MaxRel(got.hidden[p], want.hidden[p]));
  }
  std::printf("  %-40s states %.3g", what, worst);
  double spectra = 0;
  for (size_t l = 0; l < got.log_lambda.size() && l < want.log_lambda.size(); ++l) {
    spectra = std::max(spectra, MaxRel(got.log_lambda[l], want.log_lambda[l]));
  }
  std::printf("  log lambda %.3g\n", spectra);
  return worst;
}

ModelConfig MambaTestConfig() {
  ModelConfig config = FindModelPreset("mamba-130m")->config;
  config.mamba.vocab_size = 1000;
  config.mamba.hidden_size = 256;
  config.mamba.num_hidden_layers = 3;
  return config;
}

ModelConfig Mamba2TestConfig(int64_t groups, int64_t states) {
  ModelConfig config = FindModelPreset("mamba2-130m")->config;
  Mamba2Config& c = config.mamba2;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.num_hidden_layers = 3;
  c.num_heads = c.expand * c.hidden_size / c.head_dim;  // head_dim 64: 8 heads
  c.n_groups = groups;
  c.state_size = states;
  c.chunk_size = 64;
  return config;
}

at::Tensor Ids(int64_t batch, int64_t seq) {
  return at::randint(0, 1000, {batch, seq}, at::TensorOptions().dtype(at::kLong));
}

TEST(SsmKernelsGpu, CausalConvMatchesAtenOnStridedRows) {
  c10::InferenceMode guard;
  // [B, L, C] as a slice of a wider row, as the mixers pass it.
  for (at::ScalarType type : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor wide = at::randn({3, 301, 200}, at::TensorOptions().device(kGpu)).to(type);
    const at::Tensor x = wide.narrow(-1, 40, 136);
    const at::Tensor w = (0.5 * at::randn({136, 1, 4}, at::TensorOptions().device(kGpu))).to(type);
    const at::Tensor bias = at::randn({136}, at::TensorOptions().device(kGpu)).to(type);
    const at::Tensor got = ssm::CausalConv1dSiluRows(x, w, bias);
    at::Tensor want;
    {
      AtenPath aten;
      want = ssm::CausalConv1dSiluRows(x, w, bias);
    }
    // One rounding of the conv output apart at most (accumulation order).
    const double tol = type == at::kFloat ? 1e-6 : type == at::kHalf ? 2e-3 : 1.6e-2;
    EXPECT_LE(MaxRel(got, want), tol) << type;
    EXPECT_LE(MaxRel(ssm::CausalConv1dSiluRows(x, w, at::Tensor()),
                     [&] {
                       AtenPath aten;
                       return ssm::CausalConv1dSiluRows(x, w, at::Tensor());
                     }()),
              tol)
        << type << " without bias";
  }
}

TEST(SsmKernelsGpu, MambaForwardMatchesFloat64AndAtenPath) {
  const ModelConfig config = MambaTestConfig();
  const at::Tensor ids = Ids(3, 301);  // 301: not a multiple of the 32-token tile
  auto reference = CreateRandomModel(config, InitScheme{}, 7, kGpu, at::kDouble);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const Points want = RunPoints(**reference, ids);
  struct Case {
    at::ScalarType type;
    double vs_float64, vs_aten;
  };
  // fp32: the kernel keeps the float32 state (ex2.approx for the decay);
  // bf16 / fp16: the ATen path rounds its state to the dtype before C.
  for (const Case& c : {Case{at::kFloat, 2e-4, 2e-4}, Case{at::kBFloat16, 6e-2, 6e-2},
                        Case{at::kHalf, 1e-2, 1e-2}}) {
    auto model = CreateRandomModel(config, InitScheme{}, 7, kGpu, c.type);
    ASSERT_TRUE(model.ok()) << model.status();
    const Points got = RunPoints(**model, ids);
    Points aten;
    {
      AtenPath path;
      aten = RunPoints(**model, ids);
    }
    EXPECT_LE(WorstPoint(got, want, c10::toString(c.type)), c.vs_float64) << c.type;
    EXPECT_LE(WorstPoint(got, aten, "  vs the ATen path"), c.vs_aten) << c.type;
    ASSERT_EQ(got.log_lambda.size(), want.log_lambda.size());
    for (size_t l = 0; l < got.log_lambda.size(); ++l) {
      EXPECT_EQ(got.log_lambda[l].sizes(), want.log_lambda[l].sizes());
    }
  }
}

TEST(SsmKernelsGpu, Mamba2ForwardMatchesFloat64AndAtenPath) {
  // 200 tokens: three full 64-token chunks and a partial one.
  const at::Tensor ids = Ids(3, 200);
  for (auto [groups, states] : {std::pair<int64_t, int64_t>{1, 128}, {2, 64}}) {
    const ModelConfig config = Mamba2TestConfig(groups, states);
    auto reference = CreateRandomModel(config, InitScheme{}, 11, kGpu, at::kDouble);
    ASSERT_TRUE(reference.ok()) << reference.status();
    const Points want = RunPoints(**reference, ids);
    for (at::ScalarType type : {at::kBFloat16, at::kHalf}) {
      auto model = CreateRandomModel(config, InitScheme{}, 11, kGpu, type);
      ASSERT_TRUE(model.ok()) << model.status();
      ASSERT_TRUE(
          ssm::SsdKernelSupports(at::empty({1}, at::TensorOptions().device(kGpu).dtype(type)),
                                 config.mamba2.head_dim, states, 64));
      const Points got = RunPoints(**model, ids);
      Points aten;
      {
        AtenPath path;
        aten = RunPoints(**model, ids);
      }
      std::printf(" groups %lld, N %lld:\n", static_cast<long long>(groups),
                  static_cast<long long>(states));
      const double tol = type == at::kHalf ? 1e-2 : 6e-2;
      EXPECT_LE(WorstPoint(got, want, c10::toString(type)), tol) << type;
      EXPECT_LE(WorstPoint(got, aten, "  vs the ATen path"), tol) << type;
    }
  }
}

}  // namespace
}  // namespace layerflow::worker

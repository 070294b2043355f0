// Seeded init on the GPU (worker/kernels/counter_init.cu) against the CPU
// fill (worker/model/counter_fill.cc): the same bits, for every dtype, both
// distributions and whole presets of every architecture; and the time to
// initialise 2.8B presets on the device (target: <= 100 ms on an H200,
// issue 13; printed, as a benchmark figure, not asserted).
//
// The claim is bit for bit, not 1 ulp: the generator's transforms use only
// IEEE-754 + - * / and sqrt (worker/model/counter_rng.h), and the device code
// is built with -fmad=false, the host code with -ffp-contract=off.
// CI has no GPU: this executable is not registered with CTest. On a GPU
// machine (device tool, .deps carried):
//   LF_TARGETS=worker_counter_init_gpu_test bash -c 'source bench/gpu_prelude.sh &&
//     build-gpu/tests/worker/model/worker_counter_init_gpu_test'
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>

#include "worker/model/init.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"

namespace layerflow::worker {
namespace {

const c10::Device kGpu(c10::kCUDA, 0);
const c10::Device kCpu(c10::kCPU);

// The tensor's bits as integers of its width, on the CPU.
at::Tensor Bits(const at::Tensor& t) {
  const at::Tensor cpu = t.to(at::kCPU).contiguous();
  switch (cpu.element_size()) {
    case 2:
      return cpu.view(at::kShort);
    case 4:
      return cpu.view(at::kInt);
    default:
      return cpu.view(at::kLong);
  }
}

// Elements whose bits differ (0 when bit for bit).
int64_t Mismatches(const at::Tensor& a, const at::Tensor& b) {
  return (Bits(a) != Bits(b)).sum().item<int64_t>();
}

TEST(CounterInitGpuTest, FillsEqualCpuBitForBit) {
  c10::InferenceMode guard;
  counter_rng::FillSpec normal;
  normal.key = ParameterDraws(0, "gpt_neox.embed_in.weight").key();
  normal.a = 0.02;
  counter_rng::FillSpec uniform;
  uniform.key = ParameterDraws(1, "backbone.layers.3.mixer.out_proj.weight").key();
  uniform.distribution = counter_rng::Distribution::kUniform;
  uniform.a = -0.0442;
  uniform.b = 0.0442;
  for (int64_t numel : {int64_t{1}, int64_t{5}, (int64_t{1} << 20) + 3, int64_t{1} << 26}) {
    for (const counter_rng::FillSpec& spec : {normal, uniform}) {
      for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
        SCOPED_TRACE(testing::Message() << "numel " << numel << " " << c10::toString(dtype));
        at::Tensor gpu = at::empty({numel}, at::TensorOptions().device(kGpu).dtype(dtype));
        at::Tensor cpu = at::empty({numel}, at::TensorOptions().dtype(dtype));
        CounterFill(gpu, spec);
        CounterFill(cpu, spec);
        EXPECT_EQ(Mismatches(gpu, cpu), 0);
      }
    }
  }
}

// Whole presets, every parameter (the SSMs' own included), in bf16 and fp32.
TEST(CounterInitGpuTest, PresetsEqualCpuBitForBit) {
  c10::InferenceMode guard;
  for (const char* name : {"pythia-160m", "gpt-neo-125m", "mamba-130m", "mamba2-130m"}) {
    for (const char* scheme_text : {"reference", "xavier_uniform", "kaiming_normal"}) {
      for (c10::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
        SCOPED_TRACE(testing::Message()
                     << name << " " << scheme_text << " " << c10::toString(dtype));
        auto preset = FindModelPreset(name);
        ASSERT_TRUE(preset.ok()) << preset.status();
        const InitScheme scheme = *ParseInitScheme(scheme_text);
        auto gpu = CreateRandomModel(preset->config, scheme, 7, kGpu, dtype);
        auto cpu = CreateRandomModel(preset->config, scheme, 7, kCpu, dtype);
        ASSERT_TRUE(gpu.ok() && cpu.ok());
        int64_t bad = 0;
        for (const auto& [pname, tensor] : (*cpu)->parameters().items()) {
          const int64_t m = Mismatches((*gpu)->parameters().Get(pname), tensor);
          EXPECT_EQ(m, 0) << pname;
          bad += m;
        }
        EXPECT_EQ(bad, 0);
      }
    }
  }
}

// Wall time of CreateRandomModel on the GPU, synchronised, best of 3 after a
// warm-up (the CUDA context and the allocator's first blocks).
TEST(CounterInitGpuTest, InitOf2p8bPresetsOnTheDevice) {
  c10::InferenceMode guard;
  {
    auto warm = CreateRandomModel(FindModelPreset("pythia-160m")->config, InitScheme{}, 0, kGpu,
                                  at::kBFloat16);
    ASSERT_TRUE(warm.ok());
    c10::cuda::device_synchronize();
  }
  for (const char* name : {"pythia-2.8b", "mamba-2.8b"}) {
    for (const char* scheme_text : {"reference", "xavier_uniform"}) {
      auto preset = FindModelPreset(name);
      ASSERT_TRUE(preset.ok());
      const InitScheme scheme = *ParseInitScheme(scheme_text);
      double best_ms = 1e30;
      int64_t params = 0;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        auto model = CreateRandomModel(preset->config, scheme, rep, kGpu, at::kBFloat16);
        c10::cuda::device_synchronize();
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        ASSERT_TRUE(model.ok()) << model.status();
        best_ms = std::min(best_ms, ms);
        params = 0;
        for (const auto& [pname, tensor] : (*model)->parameters().items()) {
          params += tensor.numel();
          ASSERT_TRUE(at::isfinite(tensor).all().item<bool>()) << pname;
        }
      }
      std::printf("init %s %s bf16: %.1f ms for %.3fB parameters (target <= 100 ms)\n", name,
                  scheme_text, best_ms, params / 1e9);
      RecordProperty(std::string(name) + "_" + scheme_text + "_ms", std::to_string(best_ms));
      EXPECT_GT(params, 2'500'000'000);
    }
  }
}

}  // namespace
}  // namespace layerflow::worker

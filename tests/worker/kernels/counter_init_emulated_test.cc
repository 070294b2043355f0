// The CUDA fill of seeded init (worker/kernels/counter_init.cu) under the CPU
// emulation of CUDA, against the CPU fill (worker/model/counter_fill.cc),
// bit for bit: its indexing (thread -> block of 4 elements, the grid-stride
// loop, the tail of a numel that is not a multiple of 4) and its dtype
// conversions. Whether the GPU's arithmetic gives the same bits is
// tests/worker/model/counter_init_gpu_test.cc, on a GPU.
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "gtest/gtest.h"
#include "worker/model/counter_init_cuda.h"
#include "worker/model/init.h"

namespace layerflow::worker {
namespace {

namespace ck = cuda_kernels;
namespace cr = counter_rng;

struct Dtype {
  ck::FillType fill;
  c10::ScalarType torch;
};

TEST(CounterInitEmulatedTest, KernelEqualsCpuFillBitForBit) {
  c10::InferenceMode guard;
  const Dtype dtypes[] = {{ck::FillType::kFloat32, at::kFloat},
                          {ck::FillType::kFloat64, at::kDouble},
                          {ck::FillType::kBFloat16, at::kBFloat16},
                          {ck::FillType::kFloat16, at::kHalf}};
  cr::FillSpec normal;
  normal.key = ParameterDraws(3, "gpt_neox.layers.0.attention.dense.weight").key();
  normal.a = 0.02;
  cr::FillSpec uniform;
  uniform.key = ParameterDraws(3, "backbone.layers.0.mixer.conv1d.weight").key();
  uniform.distribution = cr::Distribution::kUniform;
  uniform.a = -0.5;
  uniform.b = 0.5;
  // numel: below one block of 4, a ragged tail, one thread block (256 x 4),
  // and more; max_blocks 1 and 3 make every thread loop (grid stride).
  for (int64_t numel : {1, 3, 4, 5, 1023, 1024, 4099}) {
    for (int max_blocks : {1, 3, 0}) {
      for (const cr::FillSpec& spec : {normal, uniform}) {
        for (const Dtype& dtype : dtypes) {
          SCOPED_TRACE(testing::Message() << "numel " << numel << " max_blocks " << max_blocks
                                          << " dtype " << c10::toString(dtype.torch));
          at::Tensor cpu = at::empty({numel}, at::TensorOptions().dtype(dtype.torch));
          CounterFill(cpu, spec);
          // One element past the end must stay untouched.
          const size_t bytes = numel * cpu.element_size();
          std::vector<unsigned char> out(bytes + 16, 0xAB);
          ASSERT_EQ(ck::LaunchCounterFill(spec, dtype.fill, out.data(), numel, nullptr, max_blocks),
                    cudaSuccess);
          EXPECT_EQ(std::memcmp(out.data(), cpu.data_ptr(), bytes), 0);
          for (size_t i = bytes; i < out.size(); ++i) ASSERT_EQ(out[i], 0xAB) << "byte " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace layerflow::worker

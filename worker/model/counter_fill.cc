// CounterFill (init.h): the CPU loop and the CUDA launch of one generator
// (counter_rng.h). Compiled with -ffp-contract=off (CMakeLists.txt) so that
// no multiply-add is fused here either: the bits must be the device's.
#include <algorithm>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "worker/model/init.h"

#ifdef LF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "worker/model/counter_init_cuda.h"
#endif

namespace layerflow::worker {
namespace {

// T(float) rounds to nearest even for c10::BFloat16 and c10::Half, as
// __float2bfloat16_rn and __float2half_rn do on the device.
template <typename T>
void FillCpu(T* out, int64_t numel, const counter_rng::FillSpec& spec) {
  const int64_t blocks = (numel + 3) / 4;
  at::parallel_for(0, blocks, /*grain_size=*/1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      float v[4];
      counter_rng::Values4(spec, static_cast<uint64_t>(g), v);
      const int64_t base = 4 * g;
      const int64_t n = std::min<int64_t>(4, numel - base);
      for (int64_t j = 0; j < n; ++j) out[base + j] = static_cast<T>(v[j]);
    }
  });
}

#ifdef LF_WITH_CUDA
cuda_kernels::FillType FillTypeOf(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return cuda_kernels::FillType::kFloat32;
    case c10::kDouble:
      return cuda_kernels::FillType::kFloat64;
    case c10::kBFloat16:
      return cuda_kernels::FillType::kBFloat16;
    case c10::kHalf:
      return cuda_kernels::FillType::kFloat16;
    default:
      TORCH_CHECK(false, "init: no counter fill for dtype ", c10::toString(type));
  }
}
#endif

}  // namespace

void CounterFill(at::Tensor& tensor, const counter_rng::FillSpec& spec) {
  TORCH_CHECK(tensor.is_contiguous(), "init: counter fill of a non-contiguous tensor");
  const int64_t numel = tensor.numel();
  if (tensor.is_cuda()) {
#ifdef LF_WITH_CUDA
    const cuda_kernels::FillType type = FillTypeOf(tensor.scalar_type());
    c10::cuda::CUDAGuard guard(tensor.device());
    const cudaError_t error = cuda_kernels::LaunchCounterFill(
        spec, type, tensor.data_ptr(), numel,
        c10::cuda::getCurrentCUDAStream(tensor.device().index()).stream());
    TORCH_CHECK(error == cudaSuccess,
                "CUDA kernel CounterFill failed: ", cudaGetErrorString(error));
    return;
#else
    TORCH_CHECK(false, "init: a CUDA tensor in a build without CUDA");
#endif
  }
  TORCH_CHECK(tensor.device().is_cpu(), "init: no counter fill on ", tensor.device().str());
  switch (tensor.scalar_type()) {
    case c10::kFloat:
      return FillCpu(tensor.data_ptr<float>(), numel, spec);
    case c10::kDouble:
      return FillCpu(tensor.data_ptr<double>(), numel, spec);
    case c10::kBFloat16:
      return FillCpu(tensor.data_ptr<c10::BFloat16>(), numel, spec);
    case c10::kHalf:
      return FillCpu(tensor.data_ptr<c10::Half>(), numel, spec);
    default:
      TORCH_CHECK(false, "init: no counter fill for dtype ", c10::toString(tensor.scalar_type()));
  }
}

}  // namespace layerflow::worker

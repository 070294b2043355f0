// The CUDA fill of the counter-based generator (counter_rng.h), in
// worker/kernels/counter_init.cu: raw device pointers and a stream, no
// LibTorch, like the other kernels of that folder. counter_fill.cc launches
// it on CUDA tensors; tests/worker/kernels runs the same source under the
// CPU emulation of CUDA.
#ifndef LAYERFLOW_WORKER_MODEL_COUNTER_INIT_CUDA_H_
#define LAYERFLOW_WORKER_MODEL_COUNTER_INIT_CUDA_H_

#include <cstdint>

#include <cuda_runtime_api.h>

#include "worker/model/counter_rng.h"

namespace layerflow::worker::cuda_kernels {

// The element type the fill writes (float32 values rounded to nearest even).
enum class FillType : int32_t { kFloat32, kFloat64, kBFloat16, kFloat16 };

// out[i] = counter_rng::ValueAt(spec, i) in `type`, for i in [0, numel), out
// contiguous. A grid-stride loop over blocks of 4 elements on at most
// `max_blocks` thread blocks of 256 (0: the default, 8192), so any numel
// takes one launch.
cudaError_t LaunchCounterFill(const counter_rng::FillSpec& spec, FillType type, void* out,
                              int64_t numel, cudaStream_t stream, int max_blocks = 0);

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_MODEL_COUNTER_INIT_CUDA_H_

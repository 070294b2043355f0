// The eigenvalue side of attention for the spectra (language_model.h,
// SpectrumSink): log λ_t = LSE_{t-1} - LSE_t, with LSE_t the log of the
// softmax normaliser η_t = sum_j exp(scale q_t . k_j) over the keys the mask
// lets query t see.
#ifndef LAYERFLOW_WORKER_MODEL_SPECTRUM_OPS_H_
#define LAYERFLOW_WORKER_MODEL_SPECTRUM_OPS_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace layerflow::worker {

// q, k: [B, H, S, d] (any float dtype, rotary already applied); mask: bool
// [S, S] (true = key visible to the query) or undefined (every key counts).
// Returns float64 [B, H, S - 1, 1] for t = 2..S (1-based). Scores are built
// in float64 a few heads at a time, so memory stays O(heads_per_step S^2).
at::Tensor AttentionLogLambda(const at::Tensor& q, const at::Tensor& k, double scale,
                              const at::Tensor& mask);

// Boolean [S, S] causal mask (key j visible from query i iff j <= i).
at::Tensor CausalMask(int64_t seq, c10::Device device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_SPECTRUM_OPS_H_

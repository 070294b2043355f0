#include "worker/model/spectrum_ops.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>

namespace layerflow::worker {

at::Tensor CausalMask(int64_t seq, c10::Device device) {
  return at::ones({seq, seq}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
}

at::Tensor AttentionLogLambda(const at::Tensor& q, const at::Tensor& k, double scale,
                              const at::Tensor& mask) {
  const int64_t batch = q.size(0), heads = q.size(1), seq = q.size(2);
  at::Tensor out =
      at::empty({batch, heads, std::max<int64_t>(seq - 1, 0), 1}, q.options().dtype(at::kDouble));
  if (seq < 2) return out;
  // About 256 MiB of float64 scores per step.
  const int64_t per_step =
      std::max<int64_t>(1, (int64_t{1} << 25) / std::max<int64_t>(1, seq * seq));
  const at::Tensor hidden_keys = mask.defined() ? mask.logical_not() : at::Tensor();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h0 = 0; h0 < heads; h0 += per_step) {
      const int64_t hn = std::min(per_step, heads - h0);
      at::Tensor qs = q[b].narrow(0, h0, hn).to(at::kDouble);
      at::Tensor ks = k[b].narrow(0, h0, hn).to(at::kDouble);
      at::Tensor scores = at::matmul(qs, ks.transpose(-1, -2)).mul_(scale);  // [hn, S, S]
      if (hidden_keys.defined()) {
        scores.masked_fill_(hidden_keys, -std::numeric_limits<double>::infinity());
      }
      at::Tensor lse = at::logsumexp(scores, -1);  // [hn, S]
      out[b].narrow(0, h0, hn).select(-1, 0).copy_(lse.narrow(-1, 0, seq - 1) -
                                                   lse.narrow(-1, 1, seq - 1));
    }
  }
  return out;
}

}  // namespace layerflow::worker

// AdamW (Loshchilov & Hutter 2019) as torch.optim.AdamW computes it
// (amsgrad off, decoupled weight decay applied before the moment update):
//   p   <- p - lr * wd * p                       (decayed parameters only)
//   m   <- b1 m + (1 - b1) g
//   v   <- b2 v + (1 - b2) g^2
//   p   <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
// Written out in ATen rather than torch::optim so that its whole state is
// three named tensors a parameter plus the step, which the TRAIN job saves
// and restores (worker/train/trainer.h) without LibTorch's serializer.
#ifndef LAYERFLOW_WORKER_TRAIN_ADAMW_H_
#define LAYERFLOW_WORKER_TRAIN_ADAMW_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace layerflow::worker::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // `params` require grad; decay[i] says whether params[i] is decayed.
  AdamW(std::vector<at::Tensor> params, std::vector<bool> decay, AdamWOptions options);

  // One update with learning rate `lr` from each parameter's .grad()
  // (a parameter without a gradient is left alone, its moments too).
  void Step(double lr);

  int64_t steps() const { return steps_; }
  // The moments, in the order of the parameters (zeros before the first
  // step); a restore copies into them and sets the step count.
  std::vector<at::Tensor>& exp_avg() { return exp_avg_; }
  std::vector<at::Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<bool> decay_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  int64_t steps_ = 0;
};

// torch.nn.utils.clip_grad_norm_: the global L2 norm of every gradient
// (summed in float64), and when it exceeds max_norm every gradient scaled by
// max_norm / (norm + 1e-6). Returns the norm before clipping.
double ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace layerflow::worker::train

#endif  // LAYERFLOW_WORKER_TRAIN_ADAMW_H_

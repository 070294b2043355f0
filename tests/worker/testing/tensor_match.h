// Comparisons of a kernel's tensors with their references, shared by the
// emulated kernel tests (CPU) and the GPU tests: got may be on any device,
// the reference and bounds are float64 on the CPU.
#ifndef LAYERFLOW_TESTS_WORKER_TESTING_TENSOR_MATCH_H_
#define LAYERFLOW_TESTS_WORKER_TESTING_TENSOR_MATCH_H_

#include <cstdint>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace layerflow::worker::testing {

// max |got - want| / max |want| (1 where want is all zeros).
inline double MaxRel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kCPU).to(at::kDouble);
  const double scale = w.abs().max().item<double>();
  return (got.to(at::kCPU).to(at::kDouble) - w).abs().max().item<double>() /
         (scale > 0 ? scale : 1.0);
}

// Whether every |got - want| is within its bound (want's shape).
inline ::testing::AssertionResult WithinBounds(const at::Tensor& got, const at::Tensor& want,
                                               const at::Tensor& bound) {
  const at::Tensor excess = (got.to(at::kCPU).to(at::kDouble) - want).abs() - bound;
  const double worst = excess.max().item<double>();
  if (worst <= 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << (excess > 0).sum().item<int64_t>() << " of "
                                       << excess.numel() << " entries off, the worst by " << worst
                                       << " past its bound";
}

// Residual-stream-like states [B, n, d] of `type`: a shared direction plus
// noise.
inline at::Tensor ResidualLikeStates(int64_t b, int64_t n, int64_t d, at::ScalarType type) {
  return (at::randn({b, n, d}) + 3 * at::randn({1, 1, d})).to(type);
}

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_TESTING_TENSOR_MATCH_H_

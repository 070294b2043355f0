// Wall time of the batched linear-probe trainer (worker/probe) on random
// features with a planted signal (Probing issue: 2000 prompts x 33 points x
// 2560 dims, 11 classes, 150 epochs x 3 seeds on one GPU).
//
//   bench_probe [--examples 2000] [--points 33] [--dim 2560] [--classes 11]
//               [--epochs 150] [--seeds 3] [--signal-point P/2]
//               [--strength 0.5] [--device cuda|cpu]
//
// Features are float16 on the device (CUDA when present, else the CPU):
// standard normal noise, plus at the signal point `strength` * mu_c for the
// examples of class c (mu_c a standard normal vector of the class, dense: a
// signal spread over all d coordinates, as in real hidden states). Labels are balanced (i mod C,
// shuffled). One warm-up call (1 epoch, 1 seed) initialises the device libraries; the timed call
// covers TrainProbes from start to its report, which ends with a device-to-host copy of the
// predictions (so queued kernels are counted). Prints the per-point test accuracy, the wall time,
// and the best point found; exits 1 when the best point is not the planted one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>

#include "bench/bench_util.h"
#include "worker/probe/probe_trainer.h"

namespace lw = layerflow::worker;

namespace {

using ::layerflow::bench::Flag;

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = std::atoll(Flag(argc, argv, "--examples", "2000").c_str());
  const int64_t points = std::atoll(Flag(argc, argv, "--points", "33").c_str());
  const int64_t dim = std::atoll(Flag(argc, argv, "--dim", "2560").c_str());
  const int classes = std::atoi(Flag(argc, argv, "--classes", "11").c_str());
  const int epochs = std::atoi(Flag(argc, argv, "--epochs", "150").c_str());
  const int num_seeds = std::atoi(Flag(argc, argv, "--seeds", "3").c_str());
  const int64_t planted =
      std::atoll(Flag(argc, argv, "--signal-point", std::to_string(points / 2).c_str()).c_str());
  const double strength = std::atof(Flag(argc, argv, "--strength", "0.5").c_str());
  const std::string device_name = Flag(argc, argv, "--device", at::hasCUDA() ? "cuda" : "cpu");
  if (n < 2 || points < 1 || dim < 1 || classes < 2 || epochs < 1 || num_seeds < 1 || planted < 0 ||
      planted >= points) {
    std::fprintf(stderr,
                 "error: need --examples >= 2, --points >= 1, --dim >= 1, --classes "
                 ">= 2, --epochs >= 1, --seeds >= 1, 0 <= --signal-point < --points\n");
    return 2;
  }
  if (device_name == "cuda" && !at::hasCUDA()) {
    std::fprintf(stderr, "error: --device cuda: no CUDA device\n");
    return 2;
  }
  const c10::Device device =
      device_name == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  c10::InferenceMode guard;

  std::vector<int32_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % classes);
  std::mt19937_64 rng(0);
  std::shuffle(labels.begin(), labels.end(), rng);

  at::manual_seed(0);
  at::Tensor features =
      at::randn({n, points, dim}, at::TensorOptions().dtype(at::kHalf).device(device));
  {
    std::vector<int64_t> y(labels.begin(), labels.end());
    const at::Tensor yt = at::tensor(at::ArrayRef<int64_t>(y), at::kLong).to(device);
    const at::Tensor means =
        at::randn({classes, dim}, at::TensorOptions().dtype(at::kHalf).device(device));
    features.select(1, planted).add_(means.index_select(0, yt), strength);
  }
  features.sum().item<float>();  // generation done before the clock starts

  lw::ProbeOptions options;
  options.num_classes = classes;
  options.epochs = epochs;
  options.seeds.resize(num_seeds);
  std::iota(options.seeds.begin(), options.seeds.end(), 0);

  lw::ProbeOptions warm = options;
  warm.epochs = 1;
  warm.seeds = {0};
  if (auto w = lw::TrainProbes(features, labels, warm, device); !w.ok()) {
    std::fprintf(stderr, "error: %s\n", w.status().ToString().c_str());
    return 1;
  }

  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<lw::ProbeReport> r = lw::TrainProbes(features, labels, options, device);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) {
    std::fprintf(stderr, "error: %s\n", r.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "probe bench: device %s, %lld examples x %lld points x %lld dims "
      "(float16), %d classes, %d epochs x %d seeds, train %lld / test %lld\n",
      device.str().c_str(), static_cast<long long>(n), static_cast<long long>(points),
      static_cast<long long>(dim), classes, epochs, num_seeds, static_cast<long long>(r->num_train),
      static_cast<long long>(r->num_test));
  std::printf("point  test_acc (mean +- std)  train_acc  test_mae\n");
  for (int64_t p = 0; p < points; ++p) {
    const lw::ProbePointReport& pt = r->points[p];
    std::printf("%5lld  %.4f +- %.4f        %.4f     %.3f%s\n", static_cast<long long>(p),
                pt.test_accuracy_mean, pt.test_accuracy_std, pt.train_accuracy_mean,
                pt.test_mae_mean, p == planted ? "  <- planted" : "");
  }
  std::printf("chance %.4f, best point %lld (%.4f), final point %.4f, drop %.4f\n", r->chance,
              static_cast<long long>(r->best_point), r->best_test_accuracy, r->final_test_accuracy,
              r->drop);
  std::printf("wall_s %.3f  best_point %lld  planted %lld  %s\n", wall_s,
              static_cast<long long>(r->best_point), static_cast<long long>(planted),
              r->best_point == planted ? "OK" : "MISMATCH");
  return r->best_point == planted ? 0 : 1;
}

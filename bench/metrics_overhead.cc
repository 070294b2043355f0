// How much the on-device analysis adds to a forward pass (Analysis issue:
// at most 15% for all metrics, 8 prompts x 2048 tokens, a 1.4B-size model).
//
//   bench_metrics_overhead [--model pythia-1.4b] [--dtype bf16] [--prompts 8]
//                          [--tokens 2048] [--reps 5] [--forward-only 1]
//                          [--each 1] [--check-half 1] [--spectra 1]
//
// Times, on CUDA when present (else the CPU), the median of --reps runs of:
//   forward        the model's forward with a callback that keeps nothing
//   + default      forward + adjacent_cos, intertoken_cos
//   + all          forward + the 8 per-layer metrics (adjacent CKA included;
//                  the target and the earlier GPU records)
//   + all + new    forward + every analysis, adding the all-pair CKA
//                  (cka_all_biased, cka_all_unbiased) and adjacent_cos_tokens
//   --each 1       also forward + each analysis alone
//   --check-half 1 also: every analysis on the model's states through the
//                  path they take (the fused path for bf16 / fp16 states and
//                  for float32 states on CUDA: --dtype fp32, or a bf16 SSM's
//                  float32 residual) against the float64 path on the same
//                  values (one forward), the largest |difference| /
//                  (|value| + count)
//   --spectra 1    only: forward + the eigenvalue spectra (docs/spectra.md)
//   --forward-only 1  only the forward
// Each run ends with a device-to-host copy, so queued kernels are counted.
// An exception in a measurement (c10::Error from the model or the analysis,
// or any std::exception) ends the bench with "error: <measurement>: <what>"
// on stderr and exit status 1, never an abort.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "bench/bench_util.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/analysis/spectrum.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"

namespace lw = layerflow::worker;

namespace {

using ::layerflow::bench::Flag;

// Two warm-ups: allocator, kernels, caches.
double MedianMs(int reps, const std::function<void()>& run) {
  return ::layerflow::bench::MedianMs(reps, run, 2);
}

// Thrown by Guarded after it has printed the error: main exits with 1.
struct MeasurementFailed {};

// f() of measurement `what`; an exception is printed as "error: <what>:
// <message>" (c10::Error without its backtrace) and rethrown as
// MeasurementFailed.
template <typename F>
auto Guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s: %s\n", what, e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s: %s\n", what, e.what());
  }
  throw MeasurementFailed{};
}

// The "all metrics": the 8 per-layer metrics of METHODS.md.
const std::vector<std::string> kAllMetrics = {
    "adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
    "step_energy",  "path_energy",    "cka_unbiased",           "cka_biased"};
// Every analysis: those plus the all-pair CKA and the per-token heat map.
std::vector<std::string> EveryAnalysis() {
  std::vector<std::string> every = kAllMetrics;
  every.insert(every.end(), {"cka_all_unbiased", "cka_all_biased", "adjacent_cos_tokens"});
  return every;
}

int Run(int argc, char** argv) {
  const std::string model_name = Flag(argc, argv, "--model", "pythia-1.4b");
  const std::string dtype_name = Flag(argc, argv, "--dtype", "bf16");
  const int64_t prompts = std::atoll(Flag(argc, argv, "--prompts", "8").c_str());
  const int64_t tokens = std::atoll(Flag(argc, argv, "--tokens", "2048").c_str());
  const int reps = std::atoi(Flag(argc, argv, "--reps", "5").c_str());

  c10::InferenceMode guard;
  const c10::Device device = at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  auto preset = lw::FindModelPreset(model_name);
  auto dtype = lw::ParseDtype(dtype_name);
  if (!preset.ok() || !dtype.ok()) {
    std::fprintf(stderr, "error: %s\n",
                 (!preset.ok() ? preset.status() : dtype.status()).ToString().c_str());
    return 2;
  }
  auto model = lw::CreateRandomModel(preset->config, lw::InitScheme{}, 0, device, *dtype);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().ToString().c_str());
    return 1;
  }
  const int64_t L = (*model)->num_layers();
  at::Tensor ids =
      at::randint(0, 256, {prompts, tokens}, at::TensorOptions().dtype(at::kLong).device(device));

  const double forward_ms = Guarded("forward", [&] {
    return MedianMs(reps, [&] {
      at::Tensor last;
      (*model)->Forward(ids, [&](int64_t, const at::Tensor& h) { last = h; });
      (void)last.sum().item<double>();
    });
  });
  auto print_header = [&] {
    std::printf("model %s (%lld blocks), %s, %lld prompts x %lld tokens, device %s, median of %d\n",
                model_name.c_str(), static_cast<long long>(L), dtype_name.c_str(),
                static_cast<long long>(prompts), static_cast<long long>(tokens),
                device.str().c_str(), reps);
    std::printf("forward            %9.1f ms\n", forward_ms);
  };
  if (Flag(argc, argv, "--forward-only", "0") == std::string("1")) {
    print_header();
    return 0;
  }
  if (Flag(argc, argv, "--spectra", "0") == std::string("1")) {
    // The eigenvalue spectra (docs/spectra.md) on top of the forward.
    const double spectra_ms = Guarded("forward + spectrum", [&] {
      return MedianMs(reps, [&] {
        lw::SpectrumAccumulator acc("spectrum", L, (*model)->spectrum_groups(), device);
        lw::SpectrumSink sink;
        sink.on_layer = [&](int64_t layer, const at::Tensor& ll) { acc.Observe(layer, ll); };
        (*model)->Forward(
            ids, [](int64_t, const at::Tensor&) {}, &sink);
        (void)acc.sums().cpu();
      });
    });
    print_header();
    std::printf("forward + spectrum %9.1f ms  (+%.1f%%)\n", spectra_ms,
                100.0 * (spectra_ms / forward_ms - 1));
    return 0;
  }
  auto with_metrics = [&](const char* what, const std::vector<std::string>& names) {
    const std::vector<lw::LayerMetric> metrics = *lw::ParseLayerMetrics(names);
    return Guarded(what, [&] {
      return MedianMs(reps, [&] {
        lw::LayerMetricAccumulator acc(metrics, L, device, tokens);
        acc.SetModelDtype((*model)->dtype());
        (*model)->Forward(ids, [&](int64_t point, const at::Tensor& h) { acc.Observe(point, h); });
        acc.EndBatch();
        (void)acc.sums().cpu();
      });
    });
  };
  const double default_ms = with_metrics("forward + default", {"adjacent_cos", "intertoken_cos"});
  const double all_ms = with_metrics("forward + all", kAllMetrics);
  const double every_ms = with_metrics("forward + all + new", EveryAnalysis());

  print_header();
  std::printf("forward + default  %9.1f ms  (+%.1f%%)\n", default_ms,
              100.0 * (default_ms / forward_ms - 1));
  std::printf("forward + all      %9.1f ms  (+%.1f%%)\n", all_ms,
              100.0 * (all_ms / forward_ms - 1));
  std::printf("forward + all + new%9.1f ms  (+%.1f%%)\n", every_ms,
              100.0 * (every_ms / forward_ms - 1));
  if (Flag(argc, argv, "--check-half", "0") == std::string("1")) {
    const std::vector<lw::LayerMetric> every = *lw::ParseLayerMetrics(EveryAnalysis());
    lw::LayerMetricAccumulator states(every, L, device, tokens);
    lw::LayerMetricAccumulator exact(every, L, device, tokens);
    // The dtypes of point 0 and of the other points (a bf16 SSM: bf16, then
    // its float32 residual): point 0's chose the path (LayerMetricAccumulator).
    at::ScalarType first = at::ScalarType::Undefined;
    std::set<at::ScalarType> others;
    Guarded("check-half", [&] {
      (*model)->Forward(ids, [&](int64_t point, const at::Tensor& h) {
        if (point == 0) {
          first = h.scalar_type();
        } else {
          others.insert(h.scalar_type());
        }
        states.Observe(point, h);
        exact.Observe(point, h.to(at::kDouble));
      });
      states.EndBatch();
      exact.EndBatch();
    });
    std::string types = c10::toString(first);
    if (!(others.size() == 1 && *others.begin() == first)) {
      types += ", then";
      for (at::ScalarType t : others) types += std::string(" ") + c10::toString(t);
    }
    const char* path = lw::TakesFusedPath(device, first) ? "fused path" : "float64 path";
    const at::Tensor want = exact.sums().cpu(), got = states.sums().cpu();
    at::Tensor ratio = (got - want).abs() / (want.abs() + want.select(1, 2).unsqueeze(1));
    // cka_baseline draws its Gaussians in the states' dtype: not comparable.
    for (size_t i = 0; i < exact.keys().size(); ++i) {
      if (exact.keys()[i].metric.rfind("cka_baseline", 0) == 0) ratio[i].zero_();
    }
    const int64_t worst = std::get<0>(ratio.max(1)).argmax().item<int64_t>();
    const lw::StatKey& key = exact.keys()[worst];
    std::printf(
        "%s (states %s) vs float64 path, same states: max |diff| / (|value| + count) "
        "= %.3g (%s layer %d layer_b %d position %d)\n",
        path, types.c_str(), ratio.max().item<double>(), key.metric.c_str(), key.layer, key.layer_b,
        key.position);
  }
  if (Flag(argc, argv, "--each", "0") == std::string("1")) {
    for (const std::string& name : EveryAnalysis()) {
      const double ms = with_metrics(("forward + " + name).c_str(), {name});
      std::printf("  + %-22s %9.1f ms  (+%.1f%%)\n", name.c_str(), ms,
                  100.0 * (ms / forward_ms - 1));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const MeasurementFailed&) {
    return 1;  // Guarded printed it
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}

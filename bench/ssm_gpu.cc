// The SSM GPU benchmark (issue 11): forward, forward + the three metrics of
// a typical sweep (adjacent_cos, intertoken_cos, cka_unbiased) and forward
// + all 8 per-layer metrics, for each model, on one GPU, with tokens/s,
// model FLOP utilisation and peak memory; writes the figures as JSON.
//
//   bench_ssm_gpu --models pythia-1.4b,mamba-1.4b,mamba2-1.3b [--dtype bf16]
//                 [--prompts 8] [--tokens 2048] [--reps 5] [--json out.json]
//                 [--forward-only-models mamba-2.8b,mamba2-2.7b]
//                 [--aten 1]   (also the ATen path of the SSMs, for the ratio)
//                 [--warmups 2] (0 with --reps 1: exactly one forward, for ncu)
//                 [--sets three,all_8] (which metric sets are timed)
//                 [--gram-blocks 4] [--gram-tiles 1] (the CKA Gram's tiling, A/B)
//                 [--profile-range 1] (the profiler on only while a forward-only
//                  model's forward or a metric set runs: with
//                  `ncu --profile-from-start off`, the kernels of exactly that)
//
// Times are the median of --reps runs after --warmups warm-ups (2), each ending on a
// device-to-host copy (queued kernels counted). The metric sets run in rounds
// with a forward (forward, three, all 8, forward, ...), and each set's
// overhead is the median of its run over its round's forward. A failure of one model or
// measurement is reported in its entry ("error") and the others go on: the
// process never aborts on a LibTorch exception.
//
// Model FLOPs: 2 x (the parameters of every block's matrices) per token,
// plus causal attention 2 B n^2 d per layer for the Transformers; the
// selective scans' few FLOPs per state are not counted (the convention of
// the Mamba papers). MFU = FLOPs / time / 989 TFLOP/s (H100/H200 dense bf16,
// the vendor's datasheet).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#ifdef LF_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_profiler_api.h>
#endif
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "worker/analysis/half_state_ops.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/model/ssm_ops.h"

namespace lw = layerflow::worker;
using ::layerflow::bench::Flag;

namespace {

constexpr double kPeakFlops = 989e12;

std::vector<std::string> Split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

double PeakGiB(const c10::Device& device) {
#ifdef LF_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  return 0;
}

void ResetPeak(const c10::Device& device) {
#ifdef LF_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  (void)device;
}

// run() with the CUDA profiler collecting (when `on`): what
// `ncu --profile-from-start off` sees.
template <typename F>
auto Profiled(bool on, F&& run) {
  return [on, run = std::forward<F>(run)]() mutable {
#ifdef LF_WITH_CUDA
    if (on) cudaProfilerStart();
#endif
    run();
#ifdef LF_WITH_CUDA
    if (on) cudaProfilerStop();
#endif
  };
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// 2 x block matrix parameters per token, + causal attention.
double ModelFlops(const lw::LanguageModel& model, int64_t prompts, int64_t tokens) {
  double matrix_params = 0;
  for (const auto& [name, tensor] : model.parameters().items()) {
    if (tensor.dim() >= 2 && name.find("embed") == std::string::npos &&
        name.find("lm_head") == std::string::npos && name.find("wte") == std::string::npos &&
        name.find("wpe") == std::string::npos && name.find("conv1d") == std::string::npos &&
        name.find("A_log") == std::string::npos) {
      matrix_params += static_cast<double>(tensor.numel());
    }
  }
  double flops = 2.0 * matrix_params * static_cast<double>(prompts * tokens);
  const std::string& arch = model.architecture();
  if (arch == "gpt_neox" || arch == "gpt_neo") {
    flops += 2.0 * static_cast<double>(prompts) * static_cast<double>(tokens) *
             static_cast<double>(tokens) * static_cast<double>(model.hidden_size()) *
             static_cast<double>(model.num_layers());
  }
  return flops;
}

const std::vector<std::string> kThree = {"adjacent_cos", "intertoken_cos", "cka_unbiased"};
const std::vector<std::string> kAllEight = {
    "adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
    "step_energy",  "path_energy",    "cka_unbiased",           "cka_biased"};

nlohmann::json BenchModel(const std::string& name, c10::ScalarType dtype, int64_t prompts,
                          int64_t tokens, int reps, int warmups, bool forward_only, bool aten,
                          const std::vector<std::string>& sets, bool profile_range,
                          const c10::Device& device) {
  nlohmann::json out = {{"model", name}};
  try {
    c10::InferenceMode guard;
    auto preset = lw::FindModelPreset(name);
    if (!preset.ok()) throw std::runtime_error(preset.status().ToString());
    ResetPeak(device);
    auto model = lw::CreateRandomModel(preset->config, lw::InitScheme{}, 0, device, dtype);
    if (!model.ok()) throw std::runtime_error(model.status().ToString());
    const lw::LanguageModel& m = **model;
    double weight_bytes = 0;
    for (const auto& [n, t] : m.parameters().items()) {
      weight_bytes += static_cast<double>(t.numel() * t.element_size());
    }
    out["weights_gib"] = weight_bytes / (1ull << 30);
    out["blocks"] = m.num_layers();
    const at::Tensor ids =
        at::randint(0, 256, {prompts, tokens}, at::TensorOptions().dtype(at::kLong).device(device));
    auto forward = [&] {
      at::Tensor last;
      m.Forward(ids, [&](int64_t, const at::Tensor& h) { last = h; });
      (void)last.sum().item<double>();
    };
    ResetPeak(device);
    const double forward_ms =
        layerflow::bench::MedianMs(reps, Profiled(profile_range && forward_only, forward), warmups);
    const double flops = ModelFlops(m, prompts, tokens);
    out["forward_ms"] = forward_ms;
    out["forward_peak_gib"] = PeakGiB(device);
    out["tokens_per_s"] = static_cast<double>(prompts * tokens) / (forward_ms / 1e3);
    out["model_tflop"] = flops / 1e12;
    out["mfu"] = flops / (forward_ms / 1e3) / kPeakFlops;
    std::printf("%-12s forward %9.1f ms  %9.0f tok/s  MFU %5.1f%%  peak %.1f GiB (weights %.1f)\n",
                name.c_str(), forward_ms, out["tokens_per_s"].get<double>(),
                100 * out["mfu"].get<double>(), out["forward_peak_gib"].get<double>(),
                out["weights_gib"].get<double>());
    std::fflush(stdout);
    if (aten && (m.architecture() == "mamba" || m.architecture() == "mamba2")) {
      lw::ssm::SetSsmKernelsEnabled(false);
      try {
        const double aten_ms = layerflow::bench::MedianMs(std::min(reps, 2), forward, 1);
        out["aten_forward_ms"] = aten_ms;
        std::printf("%-12s   ATen path forward %9.1f ms (kernels %.1fx faster)\n", name.c_str(),
                    aten_ms, aten_ms / forward_ms);
      } catch (const std::exception& e) {
        out["aten_error"] = e.what();
      }
      lw::ssm::SetSsmKernelsEnabled(true);
    }
    if (forward_only) return out;
    // The metric sets timed in rounds with the forward, each round one run
    // of each, and each set's overhead the median over rounds of its run
    // over that round's forward: the GPU's speed drifts between blocks of
    // runs (a forward's median moved by 2% between consecutive runs of one
    // binary, more than the 1 ms a change to the metrics is worth), and a
    // ratio of neighbours cancels that drift.
    struct Timed {
      std::string label;
      std::function<void()> run;
      std::vector<double> ms;
      double peak_gib = 0;
    };
    std::vector<Timed> timed = {{"forward", Profiled(profile_range && forward_only, forward)}};
    for (const auto& [label, names] :
         {std::pair{"three_metrics", kThree}, std::pair{"all_8_metrics", kAllEight}}) {
      const std::string set = std::string(label) == "three_metrics" ? "three" : "all_8";
      if (std::find(sets.begin(), sets.end(), set) == sets.end()) continue;
      const std::vector<lw::LayerMetric> metrics = *lw::ParseLayerMetrics(names);
      timed.push_back(
          {label, Profiled(profile_range, [&m, &ids, &device, metrics, tokens] {
             lw::LayerMetricAccumulator acc(metrics, m.num_layers(), device, tokens);
             acc.SetModelDtype(m.dtype());
             m.Forward(ids, [&](int64_t point, const at::Tensor& h) { acc.Observe(point, h); });
             acc.EndBatch();
             (void)acc.sums().cpu();
           })});
    }
    for (Timed& t : timed) {
      // Warm-ups (none in ncu's one-forward runs, --warmups 0); the first
      // gives the run's peak memory.
      for (int i = 0; i < warmups; ++i) {
        if (i == 0) ResetPeak(device);
        t.run();
        if (i == 0) t.peak_gib = PeakGiB(device);
      }
    }
    for (int r = 0; r < reps; ++r) {
      for (Timed& t : timed) t.ms.push_back(layerflow::bench::ElapsedMs(t.run));
    }
    for (size_t i = 1; i < timed.size(); ++i) {
      const Timed& t = timed[i];
      std::vector<double> ratio;
      for (int r = 0; r < reps; ++r) ratio.push_back(t.ms[r] / timed[0].ms[r]);
      const double overhead = Median(ratio) - 1;
      const double ms = Median(t.ms);
      out[t.label + "_ms"] = ms;
      out[t.label + "_overhead"] = overhead;
      out[t.label + "_peak_gib"] = warmups > 0 ? t.peak_gib : PeakGiB(device);
      std::printf(
          "%-12s + %-14s %9.1f ms  (+%.1f%% of the forward beside it, %.1f ms)  peak %.1f GiB\n",
          name.c_str(), t.label.c_str(), ms, 100 * overhead, Median(timed[0].ms),
          out[t.label + "_peak_gib"].get<double>());
      std::fflush(stdout);
    }
    out["forward_beside_metrics_ms"] = Median(timed[0].ms);
  } catch (const c10::Error& e) {
    out["error"] = e.what_without_backtrace();
  } catch (const std::exception& e) {
    out["error"] = e.what();
  }
  if (out.contains("error")) {
    std::printf("%-12s error: %s\n", name.c_str(), out["error"].get<std::string>().c_str());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dtype_name = Flag(argc, argv, "--dtype", "bf16");
  const int64_t prompts = std::atoll(Flag(argc, argv, "--prompts", "8").c_str());
  const int64_t tokens = std::atoll(Flag(argc, argv, "--tokens", "2048").c_str());
  const int reps = std::atoi(Flag(argc, argv, "--reps", "5").c_str());
  const bool aten = Flag(argc, argv, "--aten", "0") == std::string("1");
  const int warmups = std::atoi(Flag(argc, argv, "--warmups", "2").c_str());
  const std::vector<std::string> sets = Split(Flag(argc, argv, "--sets", "three,all_8"));
  const bool profile_range = Flag(argc, argv, "--profile-range", "0") == std::string("1");
  // The CKA Gram's tiling (worker/analysis/half_state_ops.h), for A/B runs.
  const std::string default_blocks = std::to_string(layerflow::worker::kGramRowBlocks);
  layerflow::worker::SetGramRowBlocks(
      std::atoll(Flag(argc, argv, "--gram-blocks", default_blocks.c_str()).c_str()));
  layerflow::worker::SetGramTileGemm(Flag(argc, argv, "--gram-tiles", "1") == std::string("1"));
  auto dtype = lw::ParseDtype(dtype_name);
  if (!dtype.ok()) {
    std::fprintf(stderr, "error: %s\n", dtype.status().ToString().c_str());
    return 2;
  }
  const c10::Device device = at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  // The caching allocator's statistics exist once it holds the device.
  if (device.is_cuda()) (void)at::empty({1}, at::TensorOptions().device(device));
  std::printf("bench_ssm_gpu: %s, %lld prompts x %lld tokens, device %s, median of %d\n",
              dtype_name.c_str(), static_cast<long long>(prompts), static_cast<long long>(tokens),
              device.str().c_str(), reps);
  nlohmann::json report = {
      {"dtype", dtype_name},
      {"prompts", prompts},
      {"tokens", tokens},
      {"reps", reps},
      {"device", device.str()},
      {"gram_blocks", layerflow::worker::GramRowBlocks(tokens)},
      {"gram_tiles", Flag(argc, argv, "--gram-tiles", "1") == std::string("1")},
      {"models", nlohmann::json::array()}};
  bool failed = false;
  for (const std::string& name :
       Split(Flag(argc, argv, "--models", "pythia-1.4b,mamba-1.4b,mamba2-1.3b"))) {
    report["models"].push_back(BenchModel(name, *dtype, prompts, tokens, reps, warmups, false, aten,
                                          sets, profile_range, device));
    failed |= report["models"].back().contains("error");
  }
  for (const std::string& name : Split(Flag(argc, argv, "--forward-only-models", ""))) {
    report["models"].push_back(BenchModel(name, *dtype, prompts, tokens, reps, warmups, true, false,
                                          sets, profile_range, device));
    failed |= report["models"].back().contains("error");
  }
  const std::string json = Flag(argc, argv, "--json", "");
  if (!json.empty()) std::ofstream(json) << report.dump(2) << "\n";
  return failed ? 1 : 0;
}

// Where the half-precision analysis path's time goes, op by op
// (worker/analysis/half_state_ops.h), on states of pythia-1.4b's shape:
//
//   bench_half_ops [--dtype bf16|fp16|fp32] [--prompts 8] [--tokens 2048]
//                  [--width 2048] [--reps 20] [--accumulator 1] [--layers 24]
//                  [--float64-path 1]
//
// Times, on CUDA when present (else the CPU), the median over --reps of each
// op run 10 times back to back (ended by a device-to-host copy), per call:
// the per-token pass, the weighted token sums, the CKA Gram's lower block
// triangle in 1, 2, 4, 8 and 16 row blocks, each by row-block GEMMs and as
// one batched GEMM of its tiles (and the full GEMM with a half output, the
// tensor cores' rate without the float32 write), and the centred products
// of two such Grams. One point of the adjacent CKA costs
// one Gram and one product pass. --dtype fp32: float32 states, whose Grams
// are the split-bf16 GEMM (half_state_ops.h; the split itself timed too).
//   --accumulator 1  instead: the 8 per-layer metrics of LayerMetricAccumulator
//                  over --layers + 2 points of such states (the model's
//                  callback without the model), per batch. Without a forward
//                  to run ahead of, this wall time includes the CPU's
//                  dispatch of the small per-point ops; under Nsight Compute
//                  (`ncu --print-summary per-kernel`) it gives each kernel's
//                  GPU time (bench/RESULTS.md).
//   --float64-path 1 with --accumulator 1: the points handed over as
//                  float64, i.e. the float64 path (what float32 states on
//                  CUDA took before they joined the fused path).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "bench/bench_util.h"
#include "worker/analysis/half_state_ops.h"
#include "worker/analysis/layer_metrics.h"

namespace lw = layerflow::worker;

namespace {

using ::layerflow::bench::Flag;

constexpr int kCallsPerRep = 10;

// Per call of run() (which returns its result), the median over `reps` of
// kCallsPerRep calls back to back, ended by a device-to-host copy.
template <typename F>
double MedianMsPerCall(int reps, F&& run) {
  return ::layerflow::bench::MedianMs(reps,
                                      [&] {
                                        at::Tensor last;
                                        for (int i = 0; i < kCallsPerRep; ++i) last = run();
                                        (void)last.sum().item<double>();
                                      }) /
         kCallsPerRep;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dtype_name = Flag(argc, argv, "--dtype", "bf16");
  const int64_t batch = std::atoll(Flag(argc, argv, "--prompts", "8").c_str());
  const int64_t n = std::atoll(Flag(argc, argv, "--tokens", "2048").c_str());
  const int64_t d = std::atoll(Flag(argc, argv, "--width", "2048").c_str());
  const int reps = std::atoi(Flag(argc, argv, "--reps", "20").c_str());
  c10::InferenceMode guard;
  const at::Device device = at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const at::ScalarType dtype = dtype_name == "fp16"   ? at::kHalf
                               : dtype_name == "fp32" ? at::kFloat
                                                      : at::kBFloat16;
  at::manual_seed(0);
  // Residual-stream-like states: a shared direction plus noise, and a next
  // "layer" one small step away.
  const auto f32 = at::TensorOptions().device(device).dtype(at::kFloat);
  const at::Tensor common = 3 * at::randn({d}, f32);
  const at::Tensor a = (at::randn({batch, n, d}, f32) + common).to(dtype);
  const at::Tensor b = (a.to(at::kFloat) + 0.3 * at::randn({batch, n, d}, f32)).to(dtype);
  const at::Tensor mean = a.to(at::kDouble).mean(1);  // [B, d], as HalfTokenMean gives it
  if (Flag(argc, argv, "--accumulator", "0") == std::string("1")) {
    const int64_t layers = std::atoll(Flag(argc, argv, "--layers", "24").c_str());
    std::vector<at::Tensor> points = {a};
    for (int64_t p = 1; p <= layers + 1; ++p) {
      points.push_back(
          (points.back().to(at::kFloat) + 0.3 * at::randn({batch, n, d}, f32)).to(dtype));
    }
    const bool float64_path = Flag(argc, argv, "--float64-path", "0") == std::string("1");
    if (float64_path) {
      for (at::Tensor& point : points) point = point.to(at::kDouble);
    }
    const std::vector<lw::LayerMetric> metrics = *lw::ParseLayerMetrics(
        {"adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
         "step_energy", "path_energy", "cka_unbiased", "cka_biased"});
    auto batch_ms = [&](const std::vector<lw::LayerMetric>& which) {
      return MedianMsPerCall(reps, [&] {
        lw::LayerMetricAccumulator acc(which, layers, device, n);
        for (int64_t p = 0; p <= layers + 1; ++p) acc.Observe(p, points[p]);
        acc.EndBatch();
        return acc.sums();
      });
    };
    std::printf("%s states%s [%lld, %lld, %lld] x %lld points, device %s, median of %d x %d\n",
                dtype_name.c_str(), float64_path ? " as float64" : "",
                static_cast<long long>(batch), static_cast<long long>(n), static_cast<long long>(d),
                static_cast<long long>(layers + 2), device.str().c_str(), reps, kCallsPerRep);
    const std::vector<lw::LayerMetric> every = *lw::ParseLayerMetrics(
        {"adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
         "step_energy", "path_energy", "cka_unbiased", "cka_biased", "cka_all_unbiased",
         "cka_all_biased", "adjacent_cos_tokens"});
    // Built once per chunk and replica (job_runner.cc): CPU time, no kernels.
    std::printf("  accumulator of every analysis, built     %8.3f ms\n",
                ::layerflow::bench::MedianMs(
                    reps, [&] { lw::LayerMetricAccumulator acc(every, layers, device, n); }));
    // The host's time to issue one batch (no wait for the GPU; the states
    // are already there): what a forward must outlast to hide it.
    auto issue_ms = [&](const std::vector<lw::LayerMetric>& which) {
      std::vector<double> ms;
      for (int i = 0; i < reps; ++i) {
        lw::LayerMetricAccumulator acc(which, layers, device, n);
        (void)acc.sums().sum().item<double>();
        ms.push_back(::layerflow::bench::ElapsedMs([&] {
          for (int64_t p = 0; p <= layers + 1; ++p) acc.Observe(p, points[p]);
          acc.EndBatch();
        }));
        (void)acc.sums().sum().item<double>();
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    std::printf("  host time to issue a batch, all 8        %8.3f ms\n", issue_ms(metrics));
    std::printf("  host time to issue a batch, every        %8.3f ms\n", issue_ms(every));
    std::printf("  every analysis, one batch                %8.3f ms\n", batch_ms(every));
    std::printf("  cka_all_unbiased alone, one batch        %8.3f ms\n",
                batch_ms(*lw::ParseLayerMetrics({"cka_all_unbiased"})));
    std::printf("  adjacent_cos_tokens alone, one batch     %8.3f ms\n",
                batch_ms(*lw::ParseLayerMetrics({"adjacent_cos_tokens"})));
    std::printf("  all 8 per-layer metrics, one batch       %8.3f ms\n", batch_ms(metrics));
    std::printf("  cka_unbiased alone, one batch            %8.3f ms\n",
                batch_ms(*lw::ParseLayerMetrics({"cka_unbiased"})));
    std::printf("  intertoken_cos alone, one batch          %8.3f ms\n",
                batch_ms(*lw::ParseLayerMetrics({"intertoken_cos"})));
    return 0;
  }
  std::printf("%s states [%lld, %lld, %lld], device %s, median of %d x %d calls\n",
              dtype_name.c_str(), static_cast<long long>(batch), static_cast<long long>(n),
              static_cast<long long>(d), device.str().c_str(), reps, kCallsPerRep);
  auto report = [&](const std::string& name, double ms) {
    std::printf("  %-58s %8.3f ms\n", name.c_str(), ms);
  };
  report("per-token pass (norms, step, dot with mean)",
         MedianMsPerCall(reps, [&] { return lw::HalfTokenStats(b, a, mean).step_sq; }));
  const at::Tensor ones = at::ones({batch, 1, n}, mean.options());
  report("weighted token sums, 1 row (token mean)",
         MedianMsPerCall(reps, [&] { return lw::HalfWeightedTokenSums(ones, b); }));
  report("full Gram, states' dtype output (at::bmm)",
         MedianMsPerCall(reps, [&] { return at::bmm(b, b.transpose(1, 2)); }));
  if (dtype == at::kFloat) {
    report("split-bf16 operands [lo|hi|hi|lo] of float32 states",
           MedianMsPerCall(reps, [&] { return lw::SplitBf16Operands(b); }));
  }
  {
    // The all-pair CKA's path (metric_observers.cc, PointStage and
    // AllPairCka): per point a centred float32 Gram with its Frobenius norm;
    // per batch the P x P products of the P = 25 Grams per prompt.
    const int64_t p = 25;
    at::Tensor grams = at::empty({p, batch, n, n}, f32);
    const at::Tensor r = lw::HalfTokenStats(b, at::Tensor(), mean).vec_dot.contiguous();
    const at::Tensor grand = mean.square().sum(1);
    report("all-pair Gram: full half GEMM, centred in place (+ norm)", MedianMsPerCall(reps, [&] {
             at::Tensor out = grams[0];
             return lw::HalfCentredGram(out, b, r, grand);
           }));
    grams.normal_();
    report("all-pair products, 25 Grams: one mm per prompt", MedianMsPerCall(reps, [&] {
             at::Tensor inner = at::empty({batch, p, p}, f32);
             for (int64_t q = 0; q < batch; ++q) {
               const at::Tensor g = grams.select(1, q).reshape({p, n * n});
               at::Tensor out = inner[q];
               at::mm_out(out, g, g.t());
             }
             return inner;
           }));
    for (const int64_t splits : {16, 64, 256}) {
      report(
          "all-pair products, 25 Grams: one bmm, " + std::to_string(splits) + " splits",
          MedianMsPerCall(reps, [&] {
            // [P, B * S, n^2 / S] -> [B * S, P, n^2 / S] (strided, no copy).
            const at::Tensor g = grams.view({p, batch * splits, n * n / splits}).transpose(0, 1);
            return at::bmm(g, g.transpose(1, 2)).to(at::kDouble).view({batch, splits, p, p}).sum(1);
          }));
    }
  }
  for (const int64_t blocks : {1, 2, 4, 8, 16}) {
    // Row block by row block, then (CUDA, blocks dividing n) the same
    // triangle's tiles in one batched GEMM (HalfLowerBlockGram's default).
    lw::SetGramTileGemm(false);
    report("Gram lower block triangle, float32, " + std::to_string(blocks) + " row blocks",
           MedianMsPerCall(reps, [&] { return lw::HalfLowerBlockGram(b, blocks); }));
    lw::SetGramTileGemm(true);
    report("Gram lower block triangle, float32, " + std::to_string(blocks) + " blocks, tiles",
           MedianMsPerCall(reps, [&] { return lw::HalfLowerBlockGram(b, blocks); }));
    lw::RawGram ga, gb;
    ga.lower = lw::HalfLowerBlockGram(a, blocks);
    gb.lower = lw::HalfLowerBlockGram(b, blocks);
    ga.row_means = lw::HalfTokenStats(a, at::Tensor(), mean).vec_dot;
    gb.row_means = lw::HalfTokenStats(b, at::Tensor(), mean).vec_dot;
    ga.grand = gb.grand = mean.square().sum(1);
    ga.blocks = gb.blocks = blocks;
    report("centred products of two Grams, " + std::to_string(blocks) + " row blocks",
           MedianMsPerCall(reps, [&] { return lw::CentredGramProducts(ga, gb); }));
  }
  return 0;
}

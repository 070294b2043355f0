// The GPU conformance suite (issue 11, point 2): every architecture at a
// published size x every analysis x fp32 / bf16 / fp16 x batch 1 and 8, each
// job's rows against a float64 computation of the same job.
//
//   bench_gpu_conformance [--device cuda|cpu] [--small 1] [--models A,B,..]
//       [--dtypes fp32,bf16,fp16] [--batches 1,8] [--prompts 8] [--tokens 2048]
//       [--odd-tokens 2000] [--dataset mqar] [--seed 0] [--init reference]
//       [--feature-dtype fp16] [--ref-batch 1] [--ref-convert 0] [--init-threads 8]
//       [--json PATH] [--commit SHA] [--gpu-name NAME] [--date TEXT]
//
// Defaults: --device cuda, the presets pythia-1.4b, gpt-neo-1.3b, mamba2-1.3b,
// mamba-1.4b (the slowest last), 8 prompts x 2048 tokens, and for Mamba-2 also 8 x
// --odd-tokens (2000: not a multiple of its chunk size, 256). --small 1: the
// tiny presets (pythia-tiny, gpt-neo-tiny, mamba-tiny, mamba2-tiny, chunk 32)
// at 64 tokens and 50 for Mamba-2's odd length; with --device cpu the default
// dtypes are fp32,bf16 (a check of this program's logic on a CPU machine:
// the tolerances are those of the published sizes, which the tiny presets
// can exceed in the tightest families, e.g. pythia-tiny bf16
// adjacent_cos_tokens at 1.35 of pythia-1.4b's; errors, missing rows and
// crashes are what it checks).
//
// Per model and length, three computations:
//   job      the real job path: CreateJobRunner(JobConfig{model, dtype,
//            batch_prompts = 1 | 8, prompts_per_chunk = num_prompts,
//            every analysis (11 layer metrics, spectrum, spectrum_dsf),
//            has_probe}, DeviceConfig{device, 1}) and RunChunk(0): its
//            MetricStat rows and its last-token features file.
//   float64  the same preset, seed and init in float64 on the same device
//            (CreateFloat64Model: the float32 draws in float64; where the
//            model code itself stays in float32 — the SSMs' residual_in_fp32
//            stream, RMSNorm statistics, Mamba-2's chunk scan, GPT-Neo's
//            attention — so does this; each reference line says which),
//            the same prompts (CreateJobDataset, the
//            byte tokenizer, the same token ids) through float64
//            LayerMetricAccumulator + SpectrumAccumulators and the
//            last-token states, --ref-batch prompts per forward.
//   same     (bf16 / fp16) the job's model built again in its dtype, one
//   states   forward of the 8 prompts in one batch, every layer metric on
//            the half states as the job computes them AND on the same states
//            upcast to float64 (bench_metrics_overhead --check-half's idea).
// Checks, per (metric, layer, layer_b, head, position) on the mean over
// prompts (sum / count), |got - want| <= abs + rel |want|:
//   (a) same states: the analysis on half states vs float64 analysis of the
//       SAME states, kSameStates* (tight; cka_baseline rows are left out: they
//       draw their Gaussians in the states' dtype). The SSMs hand over
//       float32 states in every dtype (residual_in_fp32): their CKA Grams
//       are formed from the states' bf16 rounding, so their CKA rows are
//       checked against float64 on that rounding, and how far the
//       rounding moves CKA is reported beside them;
//   (b) the job in dtype X vs the float64 job: kTolerances, by (architecture,
//       dtype, family); the features by their relative Frobenius error per
//       point. Every row of either side must exist on the other with the
//       same prompt count.
// Each job and same-states line comes to one verdict:
//   PASS    every cell within its tolerance, no missing or extra rows;
//   FAIL    anything else, except:
//   NOT REPRESENTABLE IN FP16   an fp16 line that fails while the float64
//           reference of the same model and prompts stays finite and holds a
//           state beyond 65504, fp16's largest value (random-init
//           Mamba-1.4B grows its residual stream to ~1.5e6: its fp16 model
//           overflows in its first block and gives NaN from there on). That
//           is a property of the model in that dtype, not of layerflow, so
//           it does not fail the suite; it is not a pass either: it has its
//           own line, status "not_representable_fp16" in the JSON, its own
//           count in the summary and the JSON's "counts", with the float64
//           |h| and the point it is at, and the comparison as measured. The
//           decision rests on the float64 reference alone, never on how the
//           job failed; a line with missing or extra rows is a FAIL whatever
//           the states, and an fp16 line that passes is a PASS.
// The features are read from the job's own feature file
// (worker/runtime/feature_file.h): fp16 when asked for and every value fits,
// fp32 otherwise (states beyond 65504 are stored in fp32, never as inf); the
// log and the JSON say which.
// Prints one line per (model, dtype, batch, length) with its verdict and its
// worst cell, then the worst cell of each family (to tune the table); exits 1
// on any FAIL, 2 on a setup error (and no FAIL), 0 otherwise; --json writes
// every figure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/status_macros.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/analysis/spectrum.h"
#include "worker/data/datasets.h"
#include "worker/model/checkpoint.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/runtime/feature_file.h"
#include "worker/runtime/job_runner.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace lw = layerflow::worker;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------
// Tolerances: the one table to tune. A cell passes when
//   |got - want| <= abs + rel * |want|
// (means over prompts; for `features`, per point p: want = ||F64_p||_F and
// |got - want| stands for ||F_p - F64_p||_F over prompts and hidden units).
// The first entry whose architecture, dtype and family match applies ("*"
// matches anything, "a,b" either). Families (FamilyOf):
//   cosine            adjacent_cos, intertoken_cos, intertoken_cos_nofirst
//   cosine_tokens     adjacent_cos_tokens (one token, no mean over tokens)
//   dispersion        token_dispersion
//   energy            step_energy, path_energy
//   cka               cka_unbiased, cka_biased, cka_all_unbiased, cka_all_biased
//   cka_baseline      cka_baseline_*: Gaussians drawn in the states' dtype, so
//                     the job and float64 draw different matrices; a
//                     statistical check only
//   spectrum_frac     spectrum(_dsf)_frac_k (bin fractions)
//   spectrum_mean_log spectrum(_dsf)_mean_log
//   spectrum_quantile spectrum(_dsf)_q01, _q50, _q99 of |λ|, compared as
//                     log|λ| (natural log of the mean over prompts)
//   spectrum_extreme  spectrum(_dsf)_min, _max of |λ|, as log|λ| too
//   features          the probe's last-token features file (--feature-dtype;
//                     fp16 files round to ~3e-4, feature_file.h)
//
// Derived from the measured errors of the H200 run at f0b096a
// (bench/results/gpu_conformance.json, bench/RESULTS.md 2026-12-01): for
// each (architecture, dtype, family), rho = the largest
// |got - want| / (abs + rel |want|) over its cells in all of its jobs (batch
// 1 and 8, both Mamba-2 lengths) under that run's tolerances, and the entry
// is 2 x rho x that run's (abs, rel), rounded up to two digits: every
// measured cell sits at no more than half of its tolerance (margin 2), and
// the abs / rel mix of each family is kept, because the JSON keeps each
// family's worst cell and maximum, not every cell. The comment after each
// entry gives the measured max |got - want| and rho. Entries marked "kept"
// had no finite measurement (the fp16 feature files of Mamba held inf, fixed
// since; Mamba-1.4B in fp16 is not representable, see main()): they keep
// that run's values until a run measures them. Every kernel or model change
// can move these errors; re-derive from the next run's JSON the same way.
//
// Log-spectrum quantiles near |λ| = 1 (attention medians: log|λ| ~ 0, where
// a relative term gives nothing) need the absolute term. For attention
// log λ_t = LSE_{t-1} - LSE_t, so an error δ (relative) in q and k moves it
// by about δ |s|, |s| the logit scale at the dominant keys: δ is the run
// dtype's rounding u (fp32 6e-8, fp16 4.9e-4, bf16 3.9e-3) amplified
// through the layers before (the features' relative error at that depth).
// Pythia (1/sqrt(d) scaling, |s| ~ 5-10) in bf16: u |s| ~ 0.03, measured
// 0.032 on a median; the abs below is 0.063. GPT-Neo uses no scaling (|s| ~
// 10-30) and amplifies rounding far more (its final-point features: 3.5e-4
// off in fp32, 13% in fp16, 45% in bf16), so its medians move by ~3e-3 in
// fp32, ~0.1 in fp16 and ~0.2 in bf16, as measured; its entries are wider
// for that reason, not by choice.
//
// GPT-Neo-1.3B bf16 `features` (23 of 26 points off the old 5%, 45% at the
// final point) is not a bug of the job path: the job and the float64
// reference take h_T from the same point of the same Forward (the final
// point is ln_f of the last block's output in both, worker/model/gpt_neo.cc),
// the error grows smoothly layer by layer (no single bad point), fp32 stays
// at the fp16 file's rounding, and Hugging Face transformers' own GPTNeoModel
// at the same size and init (normal(0.02), 512 tokens, CPU) gives 0.42 at
// the final point in bf16 and 0.33 in fp16 against float64 (1.1e-4 in fp32),
// growing from 2.6e-3 at the embedding; with q scaled by 1/sqrt(128) (what
// GPT-NeoX does) the same model gives 1.3% in bf16 (Pythia-1.4B here: 1.1%)
// and 9e-7 in fp32: the unscaled attention logits amplify rounding. Hence
// rel 0.9 for it below.
//
// Mamba bf16 `cosine_tokens`: 18 of 196,608 cells (layers 13-30 at token
// position 21, up to 0.133 off) set its 0.27; every other cell is within
// 0.1. One token's residual moving at one block and carrying on to the
// following layers, in both batch sizes; whether the SSM kernels or bf16
// itself move it is for the next GPU run (LAYERFLOW_SSM_KERNELS=0 takes
// the ATen path).
struct Tolerance {
  const char* arch;   // "gpt_neox", "gpt_neo", "mamba", "mamba2"
  const char* dtype;  // "fp32", "bf16", "fp16"
  const char* family;
  double abs;
  double rel;
};
constexpr Tolerance kTolerances[] = {
    // Statistical for every run: the CKA of independent Gaussian draws
    // spreads as ~1/n (n tokens): 2.5e-4 apart at 2048 tokens on the H200,
    // 0.029 at the 64 tokens of --small; 5e-2 serves both.
    {"*", "*", "cka_baseline", 5e-2, 0},
    // {arch, dtype, family, abs, rel},  // measured max |got - want|, rho
    {"gpt_neox", "fp32", "cosine", 3.2e-07, 0},                   // 1.6e-07, 0.00159
    {"gpt_neox", "fp32", "cosine_tokens", 2.1e-07, 0},            // 1e-07, 0.000104
    {"gpt_neox", "fp32", "dispersion", 2.4e-07, 2.4e-07},         // 1.6e-07, 0.00118
    {"gpt_neox", "fp32", "energy", 3.5e-10, 3.5e-07},             // 5.4e-05, 0.000173
    {"gpt_neox", "fp32", "cka", 1.6e-05, 0},                      // 7.6e-06, 0.0761
    {"gpt_neox", "fp32", "spectrum_frac", 0.00025, 0},            // 0.00012, 0.122
    {"gpt_neox", "fp32", "spectrum_mean_log", 6.3e-08, 6.3e-07},  // 3.2e-08, 0.000313
    {"gpt_neox", "fp32", "spectrum_quantile", 0.00013, 0.00013},  // 7e-05, 0.0616
    {"gpt_neox", "fp32", "spectrum_extreme", 1.6e-05, 1.6e-05},   // 0.00021, 0.00794
    {"gpt_neox", "fp32", "features", 0, 0.00042},                 // 0.16, 0.105
    {"gpt_neox", "bf16", "cosine", 0.0002, 0},                    // 9.5e-05, 0.0019
    {"gpt_neox", "bf16", "cosine_tokens", 0.0006, 0},             // 0.0003, 0.00299
    {"gpt_neox", "bf16", "dispersion", 0.00012, 0.00012},         // 9.5e-05, 0.00114
    {"gpt_neox", "bf16", "energy", 1.2e-06, 0.0006},              // 0.31, 0.006
    {"gpt_neox", "bf16", "cka", 0.00012, 0},                      // 5.5e-05, 0.0011
    {"gpt_neox", "bf16", "spectrum_frac", 0.0066, 0},             // 0.0033, 0.066
    {"gpt_neox", "bf16", "spectrum_mean_log", 0.00017, 0.00081},  // 8e-05, 0.00802
    {"gpt_neox", "bf16", "spectrum_quantile", 0.063, 0.063},      // 0.15, 1.55
    {"gpt_neox", "bf16", "spectrum_extreme", 0.032, 0.032},       // 0.44, 0.32
    {"gpt_neox", "bf16", "features", 0, 0.023},                   // 8.6, 0.228
    {"gpt_neox", "fp16", "cosine", 1.5e-05, 0},                   // 7.3e-06, 0.000147
    {"gpt_neox", "fp16", "cosine_tokens", 6.4e-05, 0},            // 3.2e-05, 0.000317
    {"gpt_neox", "fp16", "dispersion", 9.5e-06, 9.5e-06},         // 7.3e-06, 9.43e-05
    {"gpt_neox", "fp16", "energy", 1.5e-07, 7.4e-05},             // 0.057, 0.000739
    {"gpt_neox", "fp16", "cka", 2.1e-05, 0},                      // 1e-05, 0.000203
    {"gpt_neox", "fp16", "spectrum_frac", 0.0022, 0},             // 0.0011, 0.022
    {"gpt_neox", "fp16", "spectrum_mean_log", 2.5e-05, 0.00013},  // 1.2e-05, 0.00122
    {"gpt_neox", "fp16", "spectrum_quantile", 0.026, 0.026},      // 0.025, 0.633
    {"gpt_neox", "fp16", "spectrum_extreme", 0.0039, 0.0039},     // 0.053, 0.0386
    {"gpt_neox", "fp16", "features", 0, 0.0029},                  // 1.1, 0.0281
    {"gpt_neo", "fp32", "cosine", 2.7e-07, 0},                    // 1.3e-07, 0.0013
    {"gpt_neo", "fp32", "cosine_tokens", 3.2e-06, 0},             // 1.6e-06, 0.00159
    {"gpt_neo", "fp32", "dispersion", 1.7e-07, 1.7e-07},          // 1.3e-07, 0.000833
    {"gpt_neo", "fp32", "energy", 1.8e-09, 1.8e-06},              // 0.00016, 0.000875
    {"gpt_neo", "fp32", "cka", 1.5e-05, 0},                       // 7.2e-06, 0.0719
    {"gpt_neo", "fp32", "spectrum_frac", 0.00086, 0},             // 0.00043, 0.427
    {"gpt_neo", "fp32", "spectrum_mean_log", 2.5e-06, 2.5e-05},   // 1.2e-06, 0.0121
    {"gpt_neo", "fp32", "spectrum_quantile", 0.006, 0.006},       // 0.0043, 3
    {"gpt_neo", "fp32", "spectrum_extreme", 0.00071, 0.00071},    // 0.0099, 0.35
    {"gpt_neo", "fp32", "features", 0, 0.00071},                  // 0.28, 0.176
    {"gpt_neo", "bf16", "cosine", 0.00048, 0},                    // 0.00024, 0.00473
    {"gpt_neo", "bf16", "cosine_tokens", 0.0069, 0},              // 0.0034, 0.034
    {"gpt_neo", "bf16", "dispersion", 0.00029, 0.00029},          // 0.00023, 0.00289
    {"gpt_neo", "bf16", "energy", 3.8e-06, 0.0019},               // 0.34, 0.0185
    {"gpt_neo", "bf16", "cka", 0.0005, 0},                        // 0.00025, 0.00497
    {"gpt_neo", "bf16", "spectrum_frac", 0.024, 0},               // 0.012, 0.232
    {"gpt_neo", "bf16", "spectrum_mean_log", 0.0036, 0.018},      // 0.0018, 0.175
    {"gpt_neo", "bf16", "spectrum_quantile", 0.34, 0.34},         // 1.6, 8.3
    {"gpt_neo", "bf16", "spectrum_extreme", 0.72, 0.72},          // 11, 7.15
    {"gpt_neo", "bf16", "features", 0, 0.9},                      // 3.6e+02, 8.94
    {"gpt_neo", "fp16", "cosine", 0.00011, 0},                    // 5e-05, 0.001
    {"gpt_neo", "fp16", "cosine_tokens", 0.0016, 0},              // 0.00078, 0.00783
    {"gpt_neo", "fp16", "dispersion", 6.3e-05, 6.3e-05},          // 5e-05, 0.00063
    {"gpt_neo", "fp16", "energy", 1.8e-06, 0.00086},              // 0.025, 0.0085
    {"gpt_neo", "fp16", "cka", 0.00023, 0},                       // 0.00011, 0.0022
    {"gpt_neo", "fp16", "spectrum_frac", 0.015, 0},               // 0.0071, 0.143
    {"gpt_neo", "fp16", "spectrum_mean_log", 0.0015, 0.0071},     // 0.00071, 0.0703
    {"gpt_neo", "fp16", "spectrum_quantile", 0.18, 0.18},         // 0.55, 4.45
    {"gpt_neo", "fp16", "spectrum_extreme", 0.22, 0.22},          // 3.1, 2.1
    {"gpt_neo", "fp16", "features", 0, 0.27},                     // 1e+02, 2.63
    {"mamba2", "fp32", "cosine", 4.4e-07, 0},                     // 2.2e-07, 2.18e-05
    {"mamba2", "fp32", "cosine_tokens", 2.9e-05, 0},              // 1.4e-05, 0.000478
    {"mamba2", "fp32", "dispersion", 2.3e-07, 2.3e-07},           // 2.2e-07, 1.1e-05
    {"mamba2", "fp32", "energy", 1.3e-08, 3.7e-06},               // 6.4e-07, 6.13e-05
    {"mamba2", "fp32", "cka", 7.9e-06, 0},                        // 3.9e-06, 0.00039
    {"mamba2", "fp32", "spectrum_frac", 0.0012, 0},               // 0.00056, 0.0563
    {"mamba2", "fp32", "spectrum_mean_log", 4.7e-05, 0.00047},    // 0.0032, 0.023
    // 936b396 (the counter-generated dt bias): spectrum_dsf_q01 layer 38 at
    // 2000 tokens at 1.09x (|diff| 1.84 at log -111.9); 2x that, not yet
    // re-run on a GPU.
    {"mamba2", "fp32", "spectrum_quantile", 0.033, 0.033},  // 1.7, 0.721
    {"mamba2", "fp32", "spectrum_extreme", 0.025, 0.025},   // 5.1, 1.23
    {"mamba2", "fp32", "features", 0, 0.0012},              // 0.29, 0.011
    {"mamba2", "bf16", "cosine", 0.0002, 0},                // 9.8e-05, 0.00195
    {"mamba2", "bf16", "cosine_tokens", 0.0035, 0},         // 0.0017, 0.0172
    {"mamba2", "bf16", "dispersion", 0.0001, 0.0001},       // 9.8e-05, 0.001
    {"mamba2", "bf16", "energy", 1.9e-05, 0.0019},          // 0.00049, 0.00937
    {"mamba2", "bf16", "cka", 0.0013, 0},                   // 0.00061, 0.0121
    {"mamba2", "bf16", "spectrum_frac", 0.035, 0},          // 0.017, 0.173
    {"mamba2", "bf16", "spectrum_mean_log", 0.021, 0.21},   // 3.4, 0.201
    {"mamba2", "bf16", "spectrum_quantile", 0.3, 0.6},      // 68, 0.296
    {"mamba2", "bf16", "spectrum_extreme", 0.66, 0.99},     // 1.7e+02, 0.329
    {"mamba2", "bf16", "features", 0, 1.8},                 // 4.4e+02, 0.864
    {"mamba2", "fp16", "cosine", 0.00013, 0},               // 6.4e-05, 0.00128
    {"mamba2", "fp16", "cosine_tokens", 0.0011, 0},         // 0.00054, 0.00536
    {"mamba2", "fp16", "dispersion", 6.6e-05, 6.6e-05},     // 6.4e-05, 0.000654
    {"mamba2", "fp16", "energy", 4.8e-06, 0.00048},         // 0.00032, 0.00238
    {"mamba2", "fp16", "cka", 0.00044, 0},                  // 0.00022, 0.00431
    {"mamba2", "fp16", "spectrum_frac", 0.06, 0},           // 0.03, 0.297
    {"mamba2", "fp16", "spectrum_mean_log", 0.006, 0.06},   // 0.63, 0.0591
    {"mamba2", "fp16", "spectrum_quantile", 0.17, 0.34},    // 31, 0.168
    {"mamba2", "fp16", "spectrum_extreme", 0.49, 0.74},     // 1.1e+02, 0.245
    {"mamba2", "fp16", "features", 0, 0.47},                // 1.2e+02, 0.235
    // 936b396 and 01c367a (Mamba's own parameters from the counter
    // generator: another random model, its residual to 2.9e5 instead of
    // 2.4e5; both runs gave the same bits): adjacent_cos layer 47 |diff|
    // 6.38e-06 of 0.99033 (1.30x the earlier 4.9e-06) and step_energy layer
    // 47 |diff| 1.43e-05 of 0.020044 (1.49x the earlier entry): each entry
    // 2x its measurement. 01c367a passed the energy entry at 0.51x.
    {"mamba", "fp32", "cosine", 1.3e-05, 0},        // 6.4e-06, 1.3
    {"mamba", "fp32", "cosine_tokens", 0.0021, 0},  // 0.001, 0.0341
    // 297a416 (the same rows as 01c367a, whose failing cosine hid these):
    // token_dispersion layer 47 at 1.11x and spectrum_dsf_mean_log layer 47
    // at 1.26x the entries then; each now 2x its measurement.
    {"mamba", "fp32", "dispersion", 4.7e-07, 4.7e-07},         // 4.7e-07, 1.11
    {"mamba", "fp32", "energy", 4.2e-06, 0.0012},              // 1.4e-05 at step_energy, 0.51
    {"mamba", "fp32", "cka", 2.6e-05, 0},                      // 1.3e-05, 0.00129
    {"mamba", "fp32", "spectrum_frac", 1.1e-05, 0},            // 5.3e-06, 0.000533
    {"mamba", "fp32", "spectrum_mean_log", 7.6e-06, 7.6e-05},  // 0.00035, 1.26
    {"mamba", "fp32", "spectrum_quantile", 5.2e-05, 5.2e-05},  // 0.003, 0.00256
    {"mamba", "fp32", "spectrum_extreme", 0.009, 0.009},       // 2.1, 0.448
    {"mamba", "fp32", "features", 0, 0.018},                // 2026-12-02 run (fp32 files): 0.0091
    {"mamba", "bf16", "cosine", 0.0021, 0},                 // 0.001, 0.0201
    {"mamba", "bf16", "cosine_tokens", 0.27, 0},            // 0.13, 1.33
    {"mamba", "bf16", "dispersion", 4.8e-05, 4.8e-05},      // 4.7e-05, 0.000471
    {"mamba", "bf16", "energy", 0.00053, 0.053},            // 1.9e+06, 0.264
    {"mamba", "bf16", "cka", 0.0049, 0},                    // 0.0024, 0.0487
    {"mamba", "bf16", "spectrum_frac", 0.00068, 0},         // 0.00034, 0.00339
    {"mamba", "bf16", "spectrum_mean_log", 0.0012, 0.012},  // 0.048, 0.0111
    {"mamba", "bf16", "spectrum_quantile", 0.0053, 0.011},  // 0.64, 0.0053
    {"mamba", "bf16", "spectrum_extreme", 0.09, 0.14},      // 30, 0.0449
    // 2026-12-02 run (fp32 files): 1.25 with the kernels, 1.23 on the ATen path
    // (LAYERFLOW_SSM_KERNELS=0): the last token of Mamba-1.4B in bf16 at random
    // init leaves float64 in half its layers whichever path runs it, so this
    // entry bounds only the features' magnitude (bench/RESULTS.md, 2026-12-02).
    {"mamba", "bf16", "features", 0, 2.5},
    {"mamba", "fp16", "cosine", 0.05, 0},               // kept: not representable in fp16
    {"mamba", "fp16", "cosine_tokens", 0.1, 0},         // kept: not representable in fp16
    {"mamba", "fp16", "dispersion", 0.05, 0.05},        // kept: not representable in fp16
    {"mamba", "fp16", "energy", 0.001, 0.1},            // kept: not representable in fp16
    {"mamba", "fp16", "cka", 0.05, 0},                  // kept: not representable in fp16
    {"mamba", "fp16", "spectrum_frac", 0.1, 0},         // kept: not representable in fp16
    {"mamba", "fp16", "spectrum_mean_log", 0.05, 0.5},  // kept: not representable in fp16
    {"mamba", "fp16", "spectrum_quantile", 0.5, 1},     // kept: not representable in fp16
    {"mamba", "fp16", "spectrum_extreme", 1, 1.5},      // kept: not representable in fp16
    {"mamba", "fp16", "features", 0, 1},                // kept: not representable in fp16
};
// (a): the half-state analysis vs float64 analysis of the same states. The
// H200 run measured ~1e-16 for every family but CKA (the fused half Gram),
// where it reached 1.44e-5 (gpt-neo-1.3b fp16, a CKA of 0.006): 2x that.
constexpr double kSameStatesAbs = 1e-5;
constexpr double kSameStatesRel = 1e-5;
constexpr double kSameStatesCkaAbs = 3e-5;

bool MatchesField(const char* pattern, const std::string& value) {
  if (std::strcmp(pattern, "*") == 0) return true;
  for (absl::string_view p : absl::StrSplit(pattern, ',')) {
    if (p == value) return true;
  }
  return false;
}

std::pair<double, double> ToleranceFor(const std::string& arch, const std::string& dtype,
                                       const std::string& family) {
  for (const Tolerance& t : kTolerances) {
    if (MatchesField(t.arch, arch) && MatchesField(t.dtype, dtype) &&
        MatchesField(t.family, family)) {
      return {t.abs, t.rel};
    }
  }
  return {0, 0};  // no entry: exact (a missing entry shows up as a FAIL)
}

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string FamilyOf(const std::string& metric) {
  if (StartsWith(metric, "spectrum")) {
    if (metric.find("_frac_") != std::string::npos) return "spectrum_frac";
    if (EndsWith(metric, "_mean_log")) return "spectrum_mean_log";
    if (EndsWith(metric, "_min") || EndsWith(metric, "_max")) return "spectrum_extreme";
    return "spectrum_quantile";
  }
  if (StartsWith(metric, "cka_baseline")) return "cka_baseline";
  if (StartsWith(metric, "cka_")) return "cka";
  if (metric == "adjacent_cos_tokens") return "cosine_tokens";
  if (metric == "token_dispersion") return "dispersion";
  if (metric == "step_energy" || metric == "path_energy") return "energy";
  if (metric == "features") return "features";
  return "cosine";
}

// Every analysis a job can ask for.
const std::vector<std::string> kLayerMetrics = {
    "adjacent_cos",     "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
    "step_energy",      "path_energy",    "cka_unbiased",           "cka_biased",
    "cka_all_unbiased", "cka_all_biased", "adjacent_cos_tokens"};
const std::vector<std::string> kSpectra = {"spectrum", "spectrum_dsf"};

// ---------------------------------------------------------------------------
// Rows and their comparison.

using Key = std::tuple<std::string, int, int, int, int>;  // metric, layer, layer_b, head, position
struct Row {
  double mean = 0;
  int64_t count = 0;
};
using Rows = std::map<Key, Row>;

std::string KeyText(const Key& k) {
  std::string s = absl::StrCat(std::get<0>(k), " layer ", std::get<1>(k));
  if (std::get<2>(k) >= 0) absl::StrAppend(&s, " layer_b ", std::get<2>(k));
  if (std::get<3>(k) >= 0) absl::StrAppend(&s, " head ", std::get<3>(k));
  if (std::get<4>(k) >= 0) absl::StrAppend(&s, " position ", std::get<4>(k));
  return s;
}

json KeyJson(const Key& k) {
  return {{"metric", std::get<0>(k)},
          {"layer", std::get<1>(k)},
          {"layer_b", std::get<2>(k)},
          {"head", std::get<3>(k)},
          {"position", std::get<4>(k)}};
}

Rows RowsOf(const std::vector<lw::MetricStat>& stats) {
  Rows rows;
  for (const lw::MetricStat& s : stats) {
    rows[{s.metric, s.layer, s.layer_b, s.head, s.position}] = {
        s.sum / static_cast<double>(s.count), s.count};
  }
  return rows;
}

// An accumulator's keys and sums ([rows, 3] float64); rows no prompt reached
// are left out, as the job runner leaves them out.
void AddRows(const std::vector<lw::StatKey>& keys, const at::Tensor& sums, Rows* rows) {
  const at::Tensor host = sums.to(at::kCPU, at::kDouble).contiguous();
  const auto acc = host.accessor<double, 2>();
  for (size_t i = 0; i < keys.size(); ++i) {
    const double count = acc[i][lw::LayerMetricAccumulator::kCount];
    if (count == 0) continue;
    const lw::StatKey& k = keys[i];
    (*rows)[{k.metric, k.layer, k.layer_b, k.head, k.position}] = {
        acc[i][lw::LayerMetricAccumulator::kSum] / count, static_cast<int64_t>(count)};
  }
}

struct Cell {
  Key key;
  double want = 0, got = 0, diff = 0, allowed = 0;
  bool log_scale = false;  // want and got are the logs of the row means
  double ratio() const {
    if (!(diff == diff)) return std::numeric_limits<double>::infinity();  // NaN
    if (allowed <= 0) return diff > 0 ? std::numeric_limits<double>::infinity() : 0;
    return diff / allowed;
  }
};

struct FamilyReport {
  double abs = 0, rel = 0;  // the tolerance used
  int64_t cells = 0, failed = 0;
  double max_diff = 0;  // max |got - want|
  double max_rel = 0;   // max |got - want| / |want| over |want| > 1e-12
  bool has_worst = false;
  Cell worst;  // the largest diff / allowed
};

struct Comparison {
  std::map<std::string, FamilyReport> families;
  std::vector<std::string> errors;  // missing / extra rows, count mismatches
  bool pass() const {
    if (!errors.empty()) return false;
    for (const auto& [name, f] : families) {
      if (f.failed > 0) return false;
    }
    return true;
  }
  // The family with the largest ratio, or nullptr.
  const std::pair<const std::string, FamilyReport>* worst() const {
    const std::pair<const std::string, FamilyReport>* w = nullptr;
    for (const auto& entry : families) {
      if (!entry.second.has_worst) continue;
      if (w == nullptr || entry.second.worst.ratio() > w->second.worst.ratio()) w = &entry;
    }
    return w;
  }
};

using ToleranceFn = std::function<std::pair<double, double>(const std::string& family)>;

void AddCell(const std::string& family, const Cell& cell_in, const ToleranceFn& tolerance,
             Comparison* out) {
  FamilyReport& f = out->families[family];
  std::tie(f.abs, f.rel) = tolerance(family);
  Cell cell = cell_in;
  cell.allowed = f.abs + f.rel * std::fabs(cell.want);
  ++f.cells;
  const bool ok = cell.diff <= cell.allowed;  // false for NaN
  if (!ok) ++f.failed;
  if (!(cell.diff == cell.diff)) {
    f.max_diff = std::numeric_limits<double>::quiet_NaN();
  } else if (f.max_diff == f.max_diff) {
    f.max_diff = std::max(f.max_diff, cell.diff);
  }
  if (std::fabs(cell.want) > 1e-12 && cell.diff == cell.diff) {
    f.max_rel = std::max(f.max_rel, cell.diff / std::fabs(cell.want));
  }
  if (!f.has_worst || cell.ratio() > f.worst.ratio()) {
    f.worst = cell;
    f.has_worst = true;
  }
}

// want vs got, row by row. skip_baseline: leave cka_baseline_* out.
void CompareRows(const Rows& want, const Rows& got, const ToleranceFn& tolerance,
                 bool skip_baseline, Comparison* out) {
  auto skipped = [&](const Key& k) {
    return skip_baseline && StartsWith(std::get<0>(k), "cka_baseline");
  };
  int64_t missing = 0, extra = 0;
  for (const auto& [key, w] : want) {
    if (skipped(key)) continue;
    auto it = got.find(key);
    if (it == got.end()) {
      if (missing++ < 5) out->errors.push_back("missing row " + KeyText(key));
      continue;
    }
    if (it->second.count != w.count) {
      out->errors.push_back(
          absl::StrCat("row ", KeyText(key), ": count ", it->second.count, ", float64 ", w.count));
    }
    Cell cell;
    cell.key = key;
    cell.want = w.mean;
    cell.got = it->second.mean;
    const std::string family = FamilyOf(std::get<0>(key));
    // Quantiles of |λ| span many decades (Mamba's min |λ| ~ 1e-12): compared
    // as log|λ|, the scale the spectra's mean_log uses.
    if ((family == "spectrum_quantile" || family == "spectrum_extreme") && cell.want > 0 &&
        cell.got > 0) {
      cell.want = std::log(cell.want);
      cell.got = std::log(cell.got);
      cell.log_scale = true;
    }
    cell.diff = std::fabs(cell.got - cell.want);
    AddCell(family, cell, tolerance, out);
  }
  for (const auto& [key, g] : got) {
    if (!skipped(key) && want.find(key) == want.end() && extra++ < 5) {
      out->errors.push_back("extra row " + KeyText(key));
    }
  }
  if (missing > 5) out->errors.push_back(absl::StrCat(missing, " rows missing in all"));
  if (extra > 5) out->errors.push_back(absl::StrCat(extra, " extra rows in all"));
}

// Features [P, points, d] (float64 on the CPU): one cell per point.
void CompareFeatures(const at::Tensor& want, const at::Tensor& got, const ToleranceFn& tolerance,
                     Comparison* out) {
  if (want.sizes() != got.sizes()) {
    out->errors.push_back(absl::StrCat("features: shape [", absl::StrJoin(got.sizes(), ", "),
                                       "], float64 [", absl::StrJoin(want.sizes(), ", "), "]"));
    return;
  }
  for (int64_t p = 0; p < want.size(1); ++p) {
    const at::Tensor w = want.select(1, p), g = got.select(1, p);
    Cell cell;
    cell.key = {"features", static_cast<int>(p), -1, -1, -1};
    cell.want = w.norm().item<double>();
    cell.got = g.norm().item<double>();
    cell.diff = (g - w).norm().item<double>();
    AddCell("features", cell, tolerance, out);
  }
}

std::string CellText(const Cell& c) {
  return absl::StrCat(KeyText(c.key), c.log_scale ? ": log, want " : ": want ",
                      absl::StrFormat("%.6g", c.want), " got ", absl::StrFormat("%.6g", c.got),
                      " |diff| ", absl::StrFormat("%.3g", c.diff), " tol ",
                      absl::StrFormat("%.3g", c.allowed));
}

json CellJson(const Cell& c) {
  json j = KeyJson(c.key);
  j["want"] = c.want;
  j["got"] = c.got;
  j["diff"] = c.diff;
  j["allowed"] = c.allowed;
  j["ratio"] = std::isfinite(c.ratio()) ? json(c.ratio()) : json("inf");
  j["log_scale"] = c.log_scale;
  return j;
}

json ComparisonJson(const Comparison& c) {
  json families = json::object();
  for (const auto& [name, f] : c.families) {
    families[name] = {{"tol_abs", f.abs},
                      {"tol_rel", f.rel},
                      {"cells", f.cells},
                      {"failed", f.failed},
                      {"max_abs_diff", f.max_diff},
                      {"max_rel_diff", f.max_rel},
                      {"worst", f.has_worst ? CellJson(f.worst) : json()}};
  }
  return {{"pass", c.pass()}, {"errors", c.errors}, {"families", families}};
}

// What a job (or a same-states check) comes to. kNotRepresentable: an fp16
// line whose comparison fails, with no missing or extra rows, while the
// float64 reference of the same model and prompts stays finite and holds
// states beyond 65504, fp16's largest value (BeyondFp16): the dtype cannot
// hold that job. Counted on its own, never as a pass; not a failure of the
// suite. Everything else that fails is kFail.
enum class Verdict { kPass, kFail, kNotRepresentable };

const char* VerdictText(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "PASS";
    case Verdict::kFail:
      return "FAIL";
    case Verdict::kNotRepresentable:
      return "NOT REPRESENTABLE IN FP16";
  }
  return "?";
}
const char* VerdictJson(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "pass";
    case Verdict::kFail:
      return "fail";
    case Verdict::kNotRepresentable:
      return "not_representable_fp16";
  }
  return "?";
}

// One verdict line with the worst cell, then one line per family.
void PrintComparison(const std::string& label, const Comparison& c, Verdict verdict,
                     const std::string& tail) {
  const auto* w = c.worst();
  std::printf("%-44s %s", label.c_str(), VerdictText(verdict));
  if (w != nullptr) {
    std::printf("  worst %s %.3g of tol (%s)", w->first.c_str(), w->second.worst.ratio(),
                CellText(w->second.worst).c_str());
  }
  std::printf("%s\n", tail.c_str());
  for (const std::string& e : c.errors) std::printf("    ERROR %s\n", e.c_str());
  for (const auto& [name, f] : c.families) {
    std::printf(
        "    %-18s %6lld cells %4lld failed  max|diff| %.3g  max rel %.3g  worst %.3g of "
        "tol at %s\n",
        name.c_str(), static_cast<long long>(f.cells), static_cast<long long>(f.failed), f.max_diff,
        f.max_rel, f.worst.ratio(), CellText(f.worst).c_str());
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// Models and forwards.

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The preset in float64: CreateRandomModel(kDouble) (the same float32 draws,
// converted). When it refuses kDouble (older trees), or with force_convert
// (--ref-convert 1, to check that both agree), the float32 model's
// parameters are converted and the model re-bound to them through Replicate
// (its dtype() then still says float32: only GPT-NeoX's rotary tables read
// it, cast to float32 and promoted to float64 by the products).
absl::StatusOr<std::unique_ptr<lw::LanguageModel>> CreateFloat64Model(const lw::ModelConfig& config,
                                                                      const lw::InitScheme& scheme,
                                                                      uint64_t seed,
                                                                      c10::Device device,
                                                                      bool force_convert) {
  if (!force_convert) {
    absl::StatusOr<std::unique_ptr<lw::LanguageModel>> direct =
        lw::CreateRandomModel(config, scheme, seed, device, at::kDouble);
    if (direct.ok() || direct.status().code() != absl::StatusCode::kInvalidArgument) return direct;
  }
  LF_ASSIGN_OR_RETURN(std::unique_ptr<lw::LanguageModel> model,
                      lw::CreateRandomModel(config, scheme, seed, device, at::kFloat));
  try {
    c10::InferenceMode guard;
    for (auto& [name, tensor] : model->mutable_parameters().items())
      tensor = tensor.to(at::kDouble);
    return model->Replicate(device);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(config.architecture, " in float64: ", e.what()));
  }
}

at::Tensor Ids(const std::vector<lw::Prompt>& prompts, int64_t i, int64_t j) {
  const int64_t n = prompts[i].num_tokens;
  at::Tensor ids = at::empty({j - i, n}, at::kLong);
  int64_t* out = ids.data_ptr<int64_t>();
  for (int64_t k = i; k < j; ++k) {
    out = std::copy(prompts[k].token_ids.begin(), prompts[k].token_ids.end(), out);
  }
  return ids;
}

struct Reference {
  Rows rows;
  at::Tensor features;         // [P, L + 2, d] float64 on the CPU
  int64_t float32_points = 0;  // (batch, point)s the model handed over in float32
  // The largest |h| over every state (all points, tokens, prompts) and the
  // point it is at; finite: no NaN / inf anywhere.
  double max_abs = 0;
  int64_t max_abs_point = -1;
  std::string max_abs_point_name;
  bool finite = true;
  double seconds = 0;
};

// A float64 reference that stays finite but whose states exceed fp16's
// largest value: the job in fp16 cannot hold them (Verdict).
bool BeyondFp16(const Reference& ref) { return ref.finite && ref.max_abs > lw::kFp16Max; }

Verdict Judge(const Comparison& c, const std::string& dtype, const Reference* ref) {
  if (c.pass()) return Verdict::kPass;
  if (dtype == "fp16" && c.errors.empty() && ref != nullptr && BeyondFp16(*ref)) {
    return Verdict::kNotRepresentable;
  }
  return Verdict::kFail;
}

// Why a line is kNotRepresentable, for the log and the JSON.
std::string BeyondFp16Text(const Reference& ref, const Comparison& c) {
  int64_t cells = 0, failed = 0;
  for (const auto& [name, f] : c.families) {
    cells += f.cells;
    failed += f.failed;
  }
  return absl::StrFormat(
      "float64 states reach |h| = %.4g at point %lld (%s), beyond fp16's largest value %g; "
      "%lld of %lld cells off; not counted as a failure",
      ref.max_abs, static_cast<long long>(ref.max_abs_point), ref.max_abs_point_name, lw::kFp16Max,
      static_cast<long long>(failed), static_cast<long long>(cells));
}

// The float64 job: every analysis and the last-token states.
Reference RunReference(const lw::LanguageModel& model, const std::vector<lw::Prompt>& prompts,
                       const std::vector<lw::LayerMetric>& metrics, int64_t max_positions,
                       int32_t batch) {
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model.num_layers();
  lw::LayerMetricAccumulator acc(metrics, L, model.device(), max_positions);
  acc.SetModelDtype(model.dtype());
  lw::SpectrumAccumulator spectrum("spectrum", L, model.spectrum_groups(), model.device());
  lw::SpectrumAccumulator dsf("spectrum_dsf", L, model.spectrum_groups(), model.device());
  lw::SpectrumSink sink;
  sink.on_layer = [&](int64_t layer, const at::Tensor& ll) { spectrum.Observe(layer, ll); };
  // SSMs hand both callbacks the same log λ (language_model.h): their dsf
  // rows are the spectrum rows renamed (one sort of Mamba's 2047 x 65536
  // values per layer instead of two).
  const bool ssm = model.architecture() == "mamba" || model.architecture() == "mamba2";
  if (!ssm) {
    sink.on_layer_dsf = [&](int64_t layer, const at::Tensor& ll) { dsf.Observe(layer, ll); };
  }
  std::vector<int64_t> lengths;
  for (const lw::Prompt& p : prompts) lengths.push_back(p.num_tokens);
  std::vector<at::Tensor> feature_rows;
  int64_t ref_float32_points = 0;
  double max_abs = 0;
  int64_t max_abs_point = -1;
  bool finite = true;
  for (const auto& [i, j] :
       lw::PlanBatches(lengths, 0, static_cast<int64_t>(prompts.size()), batch)) {
    const int64_t n = prompts[i].num_tokens;
    acc.SetNextPrompt(prompts[i].index);
    std::vector<at::Tensor> last(L + 2);
    model.Forward(
        Ids(prompts, i, j),
        [&](int64_t point, const at::Tensor& h) {
          // A float64 model's states are float64, except where the
          // model keeps them in float32 whatever its dtype (the
          // SSMs' residual_in_fp32 stream): noted, upcast (float32
          // states are analysed in float64 anyway).
          TORCH_CHECK(h.scalar_type() == at::kDouble || h.scalar_type() == at::kFloat,
                      "float64 reference: point ", point, " is ", h.scalar_type());
          if (h.scalar_type() != at::kDouble) ++ref_float32_points;
          const at::Tensor x = h.to(at::kDouble);
          const double m = x.abs().max().item<double>();  // NaN if any is
          if (!std::isfinite(m)) {
            finite = false;
          } else if (m > max_abs) {
            max_abs = m;
            max_abs_point = point;
          }
          acc.Observe(point, x);
          last[point] = x.select(1, n - 1).clone();
        },
        &sink);
    acc.EndBatch();
    feature_rows.push_back(at::stack(last, 1).cpu());
  }
  Reference ref;
  AddRows(acc.keys(), acc.sums(), &ref.rows);
  AddRows(spectrum.keys(), spectrum.sums(), &ref.rows);
  AddRows(dsf.keys(), ssm ? spectrum.sums() : dsf.sums(), &ref.rows);
  ref.features = at::cat(feature_rows, 0);
  ref.float32_points = ref_float32_points;
  ref.max_abs = max_abs;
  ref.max_abs_point = max_abs_point;
  if (max_abs_point >= 0) ref.max_abs_point_name = model.PointName(max_abs_point);
  ref.finite = finite;
  ref.seconds = Seconds(t0);
  return ref;
}

// (a): one batch of all prompts, every layer metric on the states as they
// are and on the same states in float64.
struct SameStates {
  Rows native, exact;        // exact: CKA rows on the Gram's states (RunSameStates)
  double gram_rounding = 0;  // max |CKA(bf16-rounded) - CKA(float32 states)|
  double seconds = 0;
};
SameStates RunSameStates(const lw::LanguageModel& model, const std::vector<lw::Prompt>& prompts,
                         const std::vector<lw::LayerMetric>& metrics, int64_t max_positions,
                         int32_t batch) {
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model.num_layers();
  lw::LayerMetricAccumulator native(metrics, L, model.device(), max_positions);
  lw::LayerMetricAccumulator exact(metrics, L, model.device(), max_positions);
  // The CKA rows' reference: float64 on the states the Gram is formed from.
  // The accumulator forms a half-precision model's float32 states' Grams
  // (the SSMs' residual_in_fp32 stream) from their bf16 rounding
  // (metric_observers.cc, round_gram), so for them that is the rounding.
  lw::LayerMetricAccumulator gram_exact(metrics, L, model.device(), max_positions);
  native.SetModelDtype(model.dtype());
  const bool half_model = model.dtype() == at::kBFloat16 || model.dtype() == at::kHalf;
  std::vector<int64_t> lengths;
  for (const lw::Prompt& p : prompts) lengths.push_back(p.num_tokens);
  for (const auto& [i, j] :
       lw::PlanBatches(lengths, 0, static_cast<int64_t>(prompts.size()), batch)) {
    native.SetNextPrompt(prompts[i].index);
    exact.SetNextPrompt(prompts[i].index);
    gram_exact.SetNextPrompt(prompts[i].index);
    model.Forward(Ids(prompts, i, j), [&](int64_t point, const at::Tensor& h) {
      native.Observe(point, h);
      exact.Observe(point, h.to(at::kDouble));
      const bool rounded = h.scalar_type() == at::kFloat && half_model;
      gram_exact.Observe(point, (rounded ? h.to(at::kBFloat16) : h).to(at::kDouble));
    });
    native.EndBatch();
    exact.EndBatch();
    gram_exact.EndBatch();
  }
  SameStates out;
  AddRows(native.keys(), native.sums(), &out.native);
  AddRows(exact.keys(), exact.sums(), &out.exact);
  Rows gram_rows;
  AddRows(gram_exact.keys(), gram_exact.sums(), &gram_rows);
  for (const auto& [key, row] : gram_rows) {
    const std::string& metric = std::get<0>(key);
    if (metric.rfind("cka", 0) == 0 && metric.rfind("cka_baseline", 0) != 0) {
      // How far the rounding alone moves the row (reported, not judged).
      const auto e = out.exact.find(key);
      if (e != out.exact.end()) {
        out.gram_rounding = std::max(out.gram_rounding, std::abs(row.mean - e->second.mean));
      }
      out.exact[key] = row;
    }
  }
  out.seconds = Seconds(t0);
  return out;
}

// The job's feature file (worker/runtime/feature_file.h) as float64, and the
// dtype it was stored in.
struct JobFeatures {
  at::Tensor features;  // [P, L + 2, d] float64 on the CPU
  std::string stored_dtype;
};
absl::StatusOr<JobFeatures> ReadFeatures(const std::string& path, int64_t prompts) {
  LF_ASSIGN_OR_RETURN(lw::FeatureFile file, lw::ReadFeatureFile(path));
  if (static_cast<int64_t>(file.prompt_index.size()) != prompts) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", file.prompt_index.size(), " prompts, want ", prompts));
  }
  for (int64_t i = 0; i < prompts; ++i) {
    if (file.prompt_index[i] != i) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": prompt_index[", i, "] = ", file.prompt_index[i]));
    }
  }
  return JobFeatures{file.features.to(at::kDouble), file.stored_dtype};
}

// At most `n` model inits at a time (each holds a float32 CPU copy of the
// model while it draws).
class Gate {
 public:
  explicit Gate(int n) : free_(n) {}
  void Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void Leave() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++free_;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;
};

// f() on its own thread once the gate lets it in (f returns a status; it
// must not throw).
template <typename F>
auto Gated(Gate& gate, F f) {
  return std::async(std::launch::async, [&gate, f]() {
    gate.Enter();
    struct Leave {
      Gate& g;
      ~Leave() { g.Leave(); }
    } leave{gate};
    return f();
  });
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) out.emplace_back(p);
  return out;
}

std::string NowText() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  using ::layerflow::bench::Flag;
  const auto start = std::chrono::steady_clock::now();
  const std::string device_name = Flag(argc, argv, "--device", "cuda");
  const bool small = Flag(argc, argv, "--small", "0") == std::string("1");
  const std::vector<std::string> models =
      SplitList(Flag(argc, argv, "--models",
                     small ? "pythia-tiny,gpt-neo-tiny,mamba-tiny,mamba2-tiny"
                           : "pythia-1.4b,gpt-neo-1.3b,mamba2-1.3b,mamba-1.4b"));
  const std::vector<std::string> dtypes = SplitList(
      Flag(argc, argv, "--dtypes", device_name == "cpu" ? "fp32,bf16" : "fp32,bf16,fp16"));
  std::vector<int32_t> batches;
  for (const std::string& b : SplitList(Flag(argc, argv, "--batches", "1,8"))) {
    batches.push_back(std::atoi(b.c_str()));
  }
  const int32_t prompts = std::atoi(Flag(argc, argv, "--prompts", "8").c_str());
  const int32_t tokens = std::atoi(Flag(argc, argv, "--tokens", small ? "64" : "2048").c_str());
  const int32_t odd_tokens =
      std::atoi(Flag(argc, argv, "--odd-tokens", small ? "50" : "2000").c_str());
  const std::string dataset = Flag(argc, argv, "--dataset", "mqar");
  const int64_t seed = std::atoll(Flag(argc, argv, "--seed", "0").c_str());
  const std::string init = Flag(argc, argv, "--init", "reference");
  const std::string feature_dtype = Flag(argc, argv, "--feature-dtype", "fp16");
  const int32_t ref_batch = std::atoi(Flag(argc, argv, "--ref-batch", "1").c_str());
  const bool ref_convert = Flag(argc, argv, "--ref-convert", "0") == std::string("1");
  const int init_threads = std::max(1, std::atoi(Flag(argc, argv, "--init-threads", "8").c_str()));
  const std::string json_path = Flag(argc, argv, "--json", "");

  std::string command;
  for (int i = 0; i < argc; ++i) absl::StrAppend(&command, i ? " " : "", argv[i]);

  if (device_name != "cuda" && device_name != "cpu") {
    std::fprintf(stderr, "error: --device must be cuda or cpu\n");
    return 2;
  }
  if (device_name == "cuda" && !at::hasCUDA()) {
    std::fprintf(stderr, "error: --device cuda but no CUDA device (use --device cpu)\n");
    return 2;
  }
  const c10::Device device =
      device_name == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  const lw::DeviceConfig device_config{device_name, device_name == "cuda" ? 1 : 0};
  absl::StatusOr<lw::InitScheme> scheme = lw::ParseInitScheme(init);
  absl::StatusOr<std::vector<lw::LayerMetric>> metrics = lw::ParseLayerMetrics(kLayerMetrics);
  if (!scheme.ok() || !metrics.ok()) {
    std::fprintf(stderr, "error: %s\n",
                 (!scheme.ok() ? scheme.status() : metrics.status()).ToString().c_str());
    return 2;
  }
  std::vector<std::string> analyses = kLayerMetrics;
  analyses.insert(analyses.end(), kSpectra.begin(), kSpectra.end());

  std::printf(
      "GPU conformance: %s, %s, %d prompts x %d tokens (%s, seed %lld, init %s), "
      "dtypes %s, batches %s, features %s; float64 reference %d prompt(s) per forward\n",
      absl::StrJoin(models, ",").c_str(), device.str().c_str(), prompts, tokens, dataset.c_str(),
      static_cast<long long>(seed), init.c_str(), absl::StrJoin(dtypes, ",").c_str(),
      absl::StrJoin(batches, ",").c_str(), feature_dtype.c_str(), ref_batch);
  std::fflush(stdout);

  json report = {
      {"command", command},
      {"device", device.str()},
      {"gpu", Flag(argc, argv, "--gpu-name", "")},
      {"date", Flag(argc, argv, "--date", NowText().c_str())},
      {"git_commit", Flag(argc, argv, "--commit", "")},
      {"dataset", dataset},
      {"prompts", prompts},
      {"tokens", tokens},
      {"seed", seed},
      {"init", init},
      {"feature_dtype", feature_dtype},
      {"analyses", analyses},
      {"same_states_tolerance",
       {{"abs", kSameStatesAbs}, {"rel", kSameStatesRel}, {"cka_abs", kSameStatesCkaAbs}}},
      {"fp16_max", lw::kFp16Max}};
  json tolerances = json::array();
  for (const Tolerance& t : kTolerances) {
    tolerances.push_back({{"arch", t.arch},
                          {"dtype", t.dtype},
                          {"family", t.family},
                          {"abs", t.abs},
                          {"rel", t.rel}});
  }
  report["tolerances"] = tolerances;
  report["jobs"] = json::array();
  report["same_states"] = json::array();
  report["references"] = json::array();

  int setup_errors = 0;
  std::map<Verdict, int> counts;               // lines (jobs and same-states checks) per verdict
  std::vector<std::string> not_representable;  // their labels
  const auto count = [&](Verdict v, const std::string& label) {
    ++counts[v];
    if (v == Verdict::kNotRepresentable) not_representable.push_back(label);
  };
  // Written after every model, so that a run cut short keeps what it did.
  auto write_json = [&](bool done) {
    report["pass"] = done && counts[Verdict::kFail] == 0 && setup_errors == 0;
    report["counts"] = {{"pass", counts[Verdict::kPass]},
                        {"fail", counts[Verdict::kFail]},
                        {"not_representable_fp16", counts[Verdict::kNotRepresentable]},
                        {"setup_errors", setup_errors}};
    report["not_representable_fp16"] = not_representable;
    report["complete"] = done;
    report["setup_errors"] = setup_errors;
    report["seconds"] = Seconds(start);
    if (json_path.empty()) return true;
    std::ofstream out(json_path);
    out << report.dump(1) << "\n";
    return static_cast<bool>(out);
  };
  Gate gate(init_threads);
  for (const std::string& model_name : models) {
    absl::StatusOr<lw::ModelPreset> preset = lw::FindModelPreset(model_name);
    if (!preset.ok()) {
      std::fprintf(stderr, "error: %s\n", preset.status().ToString().c_str());
      return 2;
    }
    const lw::ModelConfig& config = preset->config;
    const std::string& arch = config.architecture;
    std::vector<int32_t> lengths = {tokens};
    if (arch == "mamba2" && odd_tokens > 0) {
      if (odd_tokens % config.mamba2.chunk_size == 0) {
        std::printf("note: --odd-tokens %d is a multiple of %s's chunk size %lld\n", odd_tokens,
                    model_name.c_str(), static_cast<long long>(config.mamba2.chunk_size));
      }
      lengths.push_back(odd_tokens);
    }
    const auto model_start = std::chrono::steady_clock::now();

    // Every model of this preset is built at once, at most init_threads at
    // a time (the seeded init runs on one CPU core each), while the GPU
    // works through those already built.
    using ModelOr = absl::StatusOr<std::unique_ptr<lw::LanguageModel>>;
    using RunnerOr = absl::StatusOr<std::unique_ptr<lw::JobRunner>>;
    std::future<ModelOr> ref_model =
        Gated(gate, [&] { return CreateFloat64Model(config, *scheme, seed, device, ref_convert); });
    struct JobSpec {
      std::string dtype;
      int32_t batch, tokens;
      std::future<RunnerOr> runner;
    };
    std::vector<JobSpec> jobs;
    for (const int32_t n : lengths) {
      for (const std::string& dtype : dtypes) {
        for (const int32_t b : batches) {
          lw::JobConfig c;
          c.model = model_name;
          c.init_scheme = init;
          c.seed = seed;
          c.dataset = dataset;
          c.context_length = n;
          c.analyses = analyses;
          c.num_prompts = prompts;
          c.prompts_per_chunk = prompts;
          c.batch_prompts = b;
          c.dtype = dtype;
          c.has_probe = true;
          c.probe.feature_dtype = feature_dtype;
          jobs.push_back({dtype, b, n, Gated(gate, [c, device_config] {
                            return lw::CreateJobRunner(c, device_config);
                          })});
        }
      }
    }
    std::vector<std::pair<std::string, std::future<ModelOr>>> same_models;
    for (const std::string& dtype : dtypes) {
      if (dtype == "fp32") continue;  // float32 states are analysed in float64 already
      const c10::ScalarType st = *lw::ParseDtype(dtype);
      same_models.emplace_back(dtype, Gated(gate, [&config, &scheme, seed, device, st] {
                                 return lw::CreateRandomModel(
                                     config, *scheme, static_cast<uint64_t>(seed), device, st);
                               }));
    }

    // The prompts: the job's data set, made the way the runner makes it.
    std::map<int32_t, std::vector<lw::Prompt>> prompt_sets;
    for (const int32_t n : lengths) {
      absl::StatusOr<lw::PromptSource> source =
          lw::CreateJobDataset({.name = dataset,
                                .seed = seed,
                                .num_classes = 11,
                                .context_length = n,
                                .model_vocab_size = config.vocab_size()},
                               std::make_shared<lw::ByteTokenizer>());
      absl::StatusOr<std::vector<lw::Prompt>> got =
          source.ok() ? (*source)(0, prompts)
                      : absl::StatusOr<std::vector<lw::Prompt>>(source.status());
      if (!got.ok()) {
        std::fprintf(stderr, "error: %s data set: %s\n", model_name.c_str(),
                     got.status().ToString().c_str());
        return 2;
      }
      prompt_sets[n] = *std::move(got);
    }

    // 1. The float64 job, per length.
    std::map<int32_t, Reference> refs;
    {
      const auto t0 = std::chrono::steady_clock::now();
      ModelOr model = ref_model.get();
      const double init_s = Seconds(t0);
      if (!model.ok()) {
        std::printf("%s float64 model: ERROR %s\n", model_name.c_str(),
                    model.status().ToString().c_str());
        ++setup_errors;
        continue;
      }
      for (const int32_t n : lengths) {
        try {
          refs[n] = RunReference(**model, prompt_sets[n], *metrics, n, ref_batch);
        } catch (const std::exception& e) {
          std::printf("%s float64 x %d: ERROR %s\n", model_name.c_str(), n, e.what());
          ++setup_errors;
          continue;
        }
        // What the float64 model does not compute in float64 (the model
        // code's own choices, worker/model): the SSMs' residual_in_fp32
        // rounds the residual stream to float32 before every block.
        std::string states = "float64";
        if ((arch == "mamba" && config.mamba.residual_in_fp32) ||
            (arch == "mamba2" && config.mamba2.residual_in_fp32)) {
          states = "float64, residual rounded to float32 per block (residual_in_fp32)";
        }
        if (refs[n].float32_points > 0) {
          absl::StrAppend(&states, "; ", refs[n].float32_points, " of ",
                          (prompts + ref_batch - 1) / ref_batch * ((*model)->num_layers() + 2),
                          " points handed over as float32");
        }
        std::printf(
            "%s float64 x %d tokens: %zu rows, states %s, %.1f s (waited %.1f s for the "
            "model)\n",
            model_name.c_str(), prompt_sets[n][0].num_tokens, refs[n].rows.size(), states.c_str(),
            refs[n].seconds, init_s);
        if (BeyondFp16(refs[n])) {
          std::printf(
              "%s float64 x %d tokens: states reach |h| = %.4g at point %lld (%s), beyond "
              "fp16's largest value %g: its fp16 lines can only be NOT REPRESENTABLE IN "
              "FP16 or PASS\n",
              model_name.c_str(), prompt_sets[n][0].num_tokens, refs[n].max_abs,
              static_cast<long long>(refs[n].max_abs_point), refs[n].max_abs_point_name.c_str(),
              lw::kFp16Max);
        }
        report["references"].push_back({{"model", model_name},
                                        {"tokens", prompt_sets[n][0].num_tokens},
                                        {"rows", refs[n].rows.size()},
                                        {"states", states},
                                        {"max_abs", refs[n].max_abs},
                                        {"max_abs_point", refs[n].max_abs_point},
                                        {"max_abs_point_name", refs[n].max_abs_point_name},
                                        {"finite", refs[n].finite},
                                        {"beyond_fp16", BeyondFp16(refs[n])},
                                        {"seconds", refs[n].seconds}});
      }
      std::fflush(stdout);
    }  // the float64 model is freed here

    // 2. (a) same states, bf16 / fp16, batch max(batches) at the first length.
    std::map<std::string, Rows> own_native;
    const int32_t same_batch = *std::max_element(batches.begin(), batches.end());
    for (auto& [dtype, future] : same_models) {
      ModelOr model = future.get();
      if (!model.ok()) {
        std::printf("%s %s model: ERROR %s\n", model_name.c_str(), dtype.c_str(),
                    model.status().ToString().c_str());
        ++setup_errors;
        continue;
      }
      SameStates same;
      try {
        same = RunSameStates(**model, prompt_sets[tokens], *metrics, tokens, same_batch);
      } catch (const std::exception& e) {
        std::printf("%s %s same states: ERROR %s\n", model_name.c_str(), dtype.c_str(), e.what());
        ++setup_errors;
        continue;
      }
      Comparison c;
      CompareRows(
          same.exact, same.native,
          [](const std::string& family) {
            return std::make_pair(family == "cka" ? kSameStatesCkaAbs : kSameStatesAbs,
                                  kSameStatesRel);
          },
          /*skip_baseline=*/true, &c);
      auto same_ref = refs.find(tokens);
      const Reference* ref = same_ref == refs.end() ? nullptr : &same_ref->second;
      const Verdict verdict = Judge(c, dtype, ref);
      const std::string label =
          absl::StrCat(model_name, " ", dtype, " same states, batch ", same_batch);
      count(verdict, label);
      PrintComparison(label, c, verdict, absl::StrFormat("  %.1f s", same.seconds));
      json j = ComparisonJson(c);
      j["status"] = VerdictJson(verdict);
      if (verdict == Verdict::kNotRepresentable) {
        const std::string why = BeyondFp16Text(*ref, c);
        std::printf("    %s\n", why.c_str());
        j["status_reason"] = why;
      }
      j["model"] = model_name;
      j["arch"] = arch;
      j["dtype"] = dtype;
      j["batch"] = same_batch;
      j["tokens"] = tokens;
      j["seconds"] = same.seconds;
      j["cka_gram_rounding"] = same.gram_rounding;
      if (same.gram_rounding > 0) {
        std::printf(
            "    CKA of the bf16-rounded float32 states against the float32 states: "
            "%.2e at most (the Gram's precision choice, reported)\n",
            same.gram_rounding);
      }
      report["same_states"].push_back(j);
      own_native[dtype] = std::move(same.native);
    }

    // 3. The jobs, each against the float64 job of its length.
    for (JobSpec& spec : jobs) {
      const std::string label =
          absl::StrCat(model_name, " ", spec.dtype, " batch ", spec.batch, " x ", spec.tokens);
      const auto t0 = std::chrono::steady_clock::now();
      RunnerOr runner = spec.runner.get();
      const double wait_s = Seconds(t0);
      if (!runner.ok()) {
        std::printf("%-44s ERROR %s\n", label.c_str(), runner.status().ToString().c_str());
        ++setup_errors;
        continue;
      }
      const auto t1 = std::chrono::steady_clock::now();
      absl::StatusOr<lw::ChunkResult> chunk = (*runner)->RunChunk(0);
      const double run_s = Seconds(t1);
      runner->reset();  // free the model before the next job
      if (!chunk.ok()) {
        std::printf("%-44s ERROR %s\n", label.c_str(), chunk.status().ToString().c_str());
        ++setup_errors;
        continue;
      }
      auto ref = refs.find(spec.tokens);
      if (ref == refs.end()) {
        if (!chunk->features_path.empty()) std::remove(chunk->features_path.c_str());
        continue;  // its reference failed (counted above)
      }
      const Rows got = RowsOf(chunk->stats);
      const std::string dtype = spec.dtype;
      const ToleranceFn tolerance = [&arch, dtype](const std::string& family) {
        return ToleranceFor(arch, dtype, family);
      };
      Comparison c;
      CompareRows(ref->second.rows, got, tolerance, /*skip_baseline=*/false, &c);
      absl::StatusOr<JobFeatures> features = ReadFeatures(chunk->features_path, prompts);
      std::remove(chunk->features_path.c_str());
      if (features.ok()) {
        CompareFeatures(ref->second.features, features->features, tolerance, &c);
      } else {
        c.errors.push_back(std::string(features.status().message()));
      }
      // The job against this program's own forward in its dtype (same
      // model, prompts and batch): what ties (a) to the job. Reported only.
      double job_vs_own = -1;
      auto own = own_native.find(spec.dtype);
      if (own != own_native.end() && spec.batch == same_batch && spec.tokens == tokens) {
        job_vs_own = 0;
        for (const auto& [key, row] : own->second) {
          auto it = got.find(key);
          if (it != got.end())
            job_vs_own = std::max(job_vs_own, std::fabs(it->second.mean - row.mean));
        }
      }
      const Verdict verdict = Judge(c, spec.dtype, &ref->second);
      count(verdict, label);
      std::string tail =
          absl::StrFormat("  %zu rows, run %.1f s (waited %.1f s)", got.size(), run_s, wait_s);
      if (job_vs_own >= 0)
        absl::StrAppend(&tail, absl::StrFormat("; vs own forward %.3g", job_vs_own));
      if (features.ok()) absl::StrAppend(&tail, "; features stored ", features->stored_dtype);
      PrintComparison(label, c, verdict, tail);
      json j = ComparisonJson(c);
      j["status"] = VerdictJson(verdict);
      if (verdict == Verdict::kNotRepresentable) {
        const std::string why = BeyondFp16Text(ref->second, c);
        std::printf("    %s\n", why.c_str());
        j["status_reason"] = why;
      }
      if (features.ok()) j["feature_file_dtype"] = features->stored_dtype;
      j["model"] = model_name;
      j["arch"] = arch;
      j["dtype"] = spec.dtype;
      j["batch"] = spec.batch;
      j["tokens"] = chunk->prompt_tokens.empty() ? spec.tokens : chunk->prompt_tokens[0];
      j["rows"] = got.size();
      j["run_seconds"] = run_s;
      j["wait_seconds"] = wait_s;
      if (job_vs_own >= 0) j["max_abs_diff_vs_own_forward"] = job_vs_own;
      report["jobs"].push_back(j);
    }
    std::printf("%s: %.1f s\n", model_name.c_str(), Seconds(model_start));
    std::fflush(stdout);
    write_json(false);
  }

  const bool failed = counts[Verdict::kFail] > 0;
  const bool pass = !failed && setup_errors == 0;
  if (!write_json(true)) {
    std::fprintf(stderr, "error: cannot write %s\n", json_path.c_str());
    return 2;
  }
  std::printf(
      "%s: %d pass, %d fail, %d not representable in fp16%s%s, %d setup errors; %.1f s\n",
      pass ? (counts[Verdict::kNotRepresentable] > 0 ? "PASS" : "ALL PASS") : "FAIL",
      counts[Verdict::kPass], counts[Verdict::kFail], counts[Verdict::kNotRepresentable],
      not_representable.empty() ? "" : " (",
      not_representable.empty() ? "" : (absl::StrJoin(not_representable, "; ") + ")").c_str(),
      setup_errors, Seconds(start));
  return pass ? 0 : (setup_errors > 0 && !failed ? 2 : 1);
}

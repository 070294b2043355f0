// The JobRunner end to end on the CPU: config validation, chunk
// independence, and a full job's merged means against a float64
// re-computation (naive forward + naive metric loops).
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <algorithm>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <utility>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/naive_metrics.h"
#include "tests/worker/testing/naive_reference.h"
#include "tests/worker/testing/torch_export.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/analysis/spectrum.h"
#include "worker/data/kvpr.h"
#include "worker/data/text.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/runtime/job_runner.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

JobConfig TinyJob() {
  JobConfig c;
  c.model = "pythia-tiny";
  c.init_scheme = "xavier_normal";
  c.seed = 17;
  c.dataset = "kvpr";
  c.num_classes = 3;
  c.context_length = 600;
  c.analyses = {"adjacent_cos", "intertoken_cos"};
  c.num_prompts = 5;
  c.prompts_per_chunk = 2;
  c.dtype = "fp32";
  return c;
}

std::unique_ptr<JobRunner> MakeRunner(const JobConfig& config) {
  auto runner = CreateJobRunner(config, DeviceConfig{});
  EXPECT_TRUE(runner.ok()) << runner.status();
  return *std::move(runner);
}

// The job's seeded weights, exported into the float64 reference.
testing::NaiveGptNeoX NaiveModelOf(const JobConfig& config) {
  const ModelPreset preset = *FindModelPreset(config.model);
  auto model =
      CreateRandomModel(preset.config, *ParseInitScheme(config.init_scheme),
                        static_cast<uint64_t>(config.seed), c10::Device(c10::kCPU), c10::kFloat);
  EXPECT_TRUE(model.ok()) << model.status();
  return testing::ExportToNaive(**model);
}

// The job's own KVPR prompts.
KvprDataset DatasetOf(const JobConfig& config) {
  auto dataset = KvprDataset::Create({.seed = config.seed,
                                      .num_classes = config.num_classes,
                                      .context_length = config.context_length},
                                     std::make_shared<ByteTokenizer>());
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

using StatMap = std::map<std::pair<std::string, int32_t>, MetricStat>;

void Merge(StatMap& into, const ChunkResult& chunk) {
  for (const MetricStat& s : chunk.stats) {
    MetricStat& m = into[{s.metric, s.layer}];
    m.metric = s.metric;
    m.layer = s.layer;
    m.sum += s.sum;
    m.sum_sq += s.sum_sq;
    m.count += s.count;
  }
}

TEST(JobRunnerTest, DeviceAndArchitectures) {
  EXPECT_EQ(SupportedArchitectures(),
            (std::vector<std::string>{"gpt_neox", "gpt_neo", "mamba", "mamba2"}));
  const DeviceConfig device = DetectDevices();  // no GPU on CI machines
  EXPECT_TRUE(device.device_type == "cpu" || device.gpu_count >= 1);
}

TEST(JobRunnerTest, ChunkAloneEqualsChunkAfterOthers) {
  auto fresh = MakeRunner(TinyJob());
  auto used = MakeRunner(TinyJob());
  ASSERT_EQ(fresh->num_chunks(), 3);
  ASSERT_TRUE(used->RunChunk(0).ok());
  ASSERT_TRUE(used->RunChunk(2).ok());
  auto after = used->RunChunk(1);
  auto alone = fresh->RunChunk(1);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->sequence, 1);
  EXPECT_EQ(alone->prompt_tokens, after->prompt_tokens);
  ASSERT_EQ(alone->stats.size(), after->stats.size());
  for (size_t i = 0; i < alone->stats.size(); ++i) {
    EXPECT_EQ(alone->stats[i].metric, after->stats[i].metric);
    EXPECT_EQ(alone->stats[i].layer, after->stats[i].layer);
    EXPECT_EQ(alone->stats[i].sum, after->stats[i].sum);  // bitwise
    EXPECT_EQ(alone->stats[i].sum_sq, after->stats[i].sum_sq);
    EXPECT_EQ(alone->stats[i].count, 2);
  }
  // The last chunk is short: 5 prompts in chunks of 2.
  auto last = fresh->RunChunk(2);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->prompt_tokens.size(), 1u);
  EXPECT_EQ(last->stats[0].count, 1);
  EXPECT_EQ(fresh->RunChunk(3).status().code(), absl::StatusCode::kOutOfRange);
}

// A chunk's prompts are made on their own thread ahead of its RunChunk
// (PrefetchData, and each RunChunk for the chunk after it): a prefetch of
// another chunk is set aside, never used, and the rows do not depend on
// whether the prompts were ready.
TEST(JobRunnerTest, PrefetchedPromptsGiveTheSameRows) {
  auto fresh = MakeRunner(TinyJob());
  auto prefetched = MakeRunner(TinyJob());
  auto stale = MakeRunner(TinyJob());
  prefetched->PrefetchData(1);
  stale->PrefetchData(2);
  prefetched->PrefetchData(99);  // outside the job: ignored, 1 stays
  auto want = fresh->RunChunk(1);
  auto got = prefetched->RunChunk(1);
  auto other = stale->RunChunk(1);
  for (const auto* chunk : {&want, &got, &other}) ASSERT_TRUE(chunk->ok()) << chunk->status();
  for (const auto* chunk : {&got, &other}) {
    EXPECT_EQ((*chunk)->prompt_tokens, want->prompt_tokens);
    ASSERT_EQ((*chunk)->stats.size(), want->stats.size());
    for (size_t i = 0; i < want->stats.size(); ++i) {
      EXPECT_EQ((*chunk)->stats[i].sum, want->stats[i].sum);  // bitwise
      EXPECT_EQ((*chunk)->stats[i].sum_sq, want->stats[i].sum_sq);
      EXPECT_EQ((*chunk)->stats[i].count, want->stats[i].count);
    }
  }
  // Chunk 2 was prefetched by chunk 1's RunChunk: the same as made alone.
  auto next = prefetched->RunChunk(2);
  auto alone = MakeRunner(TinyJob())->RunChunk(2);
  ASSERT_TRUE(next.ok() && alone.ok());
  EXPECT_EQ(next->prompt_tokens, alone->prompt_tokens);
  ASSERT_EQ(next->stats.size(), alone->stats.size());
  for (size_t i = 0; i < alone->stats.size(); ++i) {
    EXPECT_EQ(next->stats[i].sum, alone->stats[i].sum);
  }
}

// Merged chunk sums == one chunk holding every prompt.
TEST(JobRunnerTest, MergedChunksEqualOneBigChunk) {
  JobConfig big = TinyJob();
  big.prompts_per_chunk = big.num_prompts;
  auto one = MakeRunner(big)->RunChunk(0);
  ASSERT_TRUE(one.ok()) << one.status();
  auto runner = MakeRunner(TinyJob());
  StatMap merged;
  for (int64_t k = 0; k < runner->num_chunks(); ++k) {
    auto chunk = runner->RunChunk(k);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    Merge(merged, *chunk);
  }
  for (const MetricStat& s : one->stats) {
    const MetricStat& m = merged.at({s.metric, s.layer});
    EXPECT_EQ(m.count, s.count);
    EXPECT_NEAR(m.sum, s.sum, 1e-12 * std::max(1.0, std::abs(s.sum)));
    EXPECT_NEAR(m.sum_sq, s.sum_sq, 1e-12 * std::max(1.0, s.sum_sq));
  }
}

// Sharded vs unsharded through the runner: every analysis (the keyed ones
// included) as chunks of 2 prompts, merged by the full key, equals one
// chunk holding every prompt to 1e-6 relative; adjacent_cos_tokens counts
// the job's first kTokenExamplePrompts prompts whichever chunk they are in.
// (The multi-replica path needs CUDA; AnalysisSuiteTest.
// ShardedEqualsUnshardedForEveryAnalysis splits batches over two
// accumulators.)
TEST(JobRunnerTest, EveryAnalysisChunkedEqualsOneChunk) {
  JobConfig config = TinyJob();
  config.analyses = {"adjacent_cos",     "intertoken_cos",     "intertoken_cos_nofirst",
                     "token_dispersion", "step_energy",        "path_energy",
                     "cka_unbiased",     "cka_biased",         "cka_all_unbiased",
                     "cka_all_biased",   "adjacent_cos_tokens"};
  JobConfig big = config;
  big.prompts_per_chunk = big.num_prompts;
  auto one = MakeRunner(big)->RunChunk(0);
  ASSERT_TRUE(one.ok()) << one.status();
  using Key = std::tuple<std::string, int32_t, int32_t, int32_t, int32_t>;
  auto key = [](const MetricStat& s) {
    return Key{s.metric, s.layer, s.layer_b, s.head, s.position};
  };
  auto runner = MakeRunner(config);
  std::map<Key, MetricStat> merged;
  std::vector<int32_t> tokens;
  for (int64_t k = 0; k < runner->num_chunks(); ++k) {
    auto chunk = runner->RunChunk(k);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    // Rows no prompt of the chunk reached are left out (count 0).
    EXPECT_LE(chunk->stats.size(), one->stats.size());
    if (k == 2) {  // prompt 4 only: no example prompt, no heat-map rows
      for (const MetricStat& s : chunk->stats) {
        EXPECT_NE(s.metric, "adjacent_cos_tokens");
      }
    }
    tokens.insert(tokens.end(), chunk->prompt_tokens.begin(), chunk->prompt_tokens.end());
    for (const MetricStat& s : chunk->stats) {
      MetricStat& m = merged[key(s)];
      m.sum += s.sum;
      m.sum_sq += s.sum_sq;
      m.count += s.count;
    }
  }
  ASSERT_EQ(merged.size(), one->stats.size());  // keys are unique
  std::set<std::string> seen;
  for (const MetricStat& s : one->stats) {
    const MetricStat& m = merged.at(key(s));
    EXPECT_EQ(m.count, s.count) << s.metric;
    EXPECT_NEAR(m.sum, s.sum, 1e-6 * std::abs(s.sum) + 1e-300) << s.metric;
    EXPECT_NEAR(m.sum_sq, s.sum_sq, 1e-6 * std::abs(s.sum_sq) + 1e-300) << s.metric;
    EXPECT_TRUE(std::isfinite(s.sum)) << s.metric;
    seen.insert(s.metric);
  }
  // Every analysis, and the two cka_baseline rows the CKA analyses bring.
  EXPECT_EQ(seen.size(), config.analyses.size() + 2);
  EXPECT_EQ(seen.count(kCkaBaselineBiased), 1u);
  EXPECT_EQ(seen.count(kCkaBaselineUnbiased), 1u);
  const int64_t L = FindModelPreset(config.model)->config.num_layers();
  const int32_t shortest = *std::min_element(tokens.begin(), tokens.begin() + 4);
  for (const MetricStat& s : one->stats) {
    if (s.metric == "cka_all_biased") {
      EXPECT_LT(s.layer, s.layer_b);
      EXPECT_LE(s.layer_b, L);
      EXPECT_EQ(s.count, config.num_prompts);
    }
    if (s.metric == "adjacent_cos_tokens" && s.position < shortest) {
      EXPECT_EQ(s.count, kTokenExamplePrompts) << s.position;
    }
    EXPECT_GE(s.count, 1) << s.metric;  // no empty rows
    if (s.metric == "adjacent_cos_tokens") {
      EXPECT_LT(s.position, *std::max_element(tokens.begin(), tokens.begin() + 4));
    }
  }
}

// The runner's rows, declared up front from the shapes alone, are the keys
// of the accumulators that fill them, in their order: a chunk's stats are
// those keys less the rows no prompt of it reached (here only heat-map
// positions past the example prompts' lengths).
TEST(JobRunnerTest, RowsAreTheAccumulatorsKeys) {
  JobConfig config = TinyJob();
  config.analyses = {"adjacent_cos_tokens", "cka_biased",       "spectrum",
                     "token_dispersion",    "cka_all_unbiased", "path_energy"};
  config.prompts_per_chunk = config.num_prompts;
  auto chunk = MakeRunner(config)->RunChunk(0);
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  const ModelPreset preset = *FindModelPreset(config.model);
  auto model =
      CreateRandomModel(preset.config, *ParseInitScheme(config.init_scheme),
                        static_cast<uint64_t>(config.seed), c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t L = (*model)->num_layers();
  const LayerMetricAccumulator metrics(
      *ParseLayerMetrics({"adjacent_cos_tokens", "cka_biased", "token_dispersion",
                          "cka_all_unbiased", "path_energy"}),
      L, c10::Device(c10::kCPU), config.context_length);
  const SpectrumAccumulator spectrum("spectrum", L, (*model)->spectrum_groups(),
                                     c10::Device(c10::kCPU));
  std::vector<StatKey> want = metrics.keys();
  want.insert(want.end(), spectrum.keys().begin(), spectrum.keys().end());
  auto same = [](const StatKey& k, const MetricStat& s) {
    return k.metric == s.metric && k.layer == s.layer && k.layer_b == s.layer_b &&
           k.head == s.head && k.position == s.position;
  };
  size_t next = 0, heat_map = 0;
  for (const MetricStat& s : chunk->stats) {
    for (; next < want.size() && !same(want[next], s); ++next) {
      EXPECT_EQ(want[next].metric, "adjacent_cos_tokens") << "row " << next << " left out";
    }
    ASSERT_LT(next, want.size()) << s.metric << " layer " << s.layer
                                 << ": not a key, or out of order";
    heat_map += s.metric == "adjacent_cos_tokens";
    ++next;
  }
  for (; next < want.size(); ++next) EXPECT_EQ(want[next].metric, "adjacent_cos_tokens");
  EXPECT_GT(heat_map, 0u);
}

// Every architecture runs as a job: a row per metric and point (L + 2 of
// them), finite, and the merged chunks equal one chunk holding every prompt.
TEST(JobRunnerTest, EveryArchitectureRunsAsAJob) {
  for (const char* model : {"gpt-neo-tiny", "mamba-tiny", "mamba2-tiny"}) {
    JobConfig config = TinyJob();
    config.model = model;
    JobConfig big = config;
    big.prompts_per_chunk = big.num_prompts;
    auto one = MakeRunner(big)->RunChunk(0);
    ASSERT_TRUE(one.ok()) << model << ": " << one.status();
    auto runner = MakeRunner(config);
    StatMap merged;
    for (int64_t k = 0; k < runner->num_chunks(); ++k) {
      auto chunk = runner->RunChunk(k);
      ASSERT_TRUE(chunk.ok()) << model << ": " << chunk.status();
      Merge(merged, *chunk);
    }
    const int64_t points = FindModelPreset(model)->config.num_layers() + 2;
    std::set<int64_t> layers;
    for (const MetricStat& s : one->stats) {
      layers.insert(s.layer);
      EXPECT_TRUE(std::isfinite(s.sum) && std::isfinite(s.sum_sq)) << model << " " << s.metric;
      EXPECT_EQ(s.count, config.num_prompts) << model << " " << s.metric;
      const MetricStat& m = merged.at({s.metric, s.layer});
      EXPECT_NEAR(m.sum, s.sum, 1e-9 * std::max(1.0, std::abs(s.sum))) << model;
    }
    EXPECT_GE(static_cast<int64_t>(layers.size()), points - 1) << model;
  }
}

// The full job against an independent float64 re-computation: the same
// seeded weights (exported from a model built by the same factory), the same
// KVPR prompts, then the naive forward and the naive metric loops.
// Tolerance: the worker runs the model in fp32 (relative error ~1e-6 on the
// hidden states), which moves cosines by about that much; metric arithmetic
// itself is float64. So means and variances must agree to 1e-6 absolute
// (the values are in [-1, 1]; measured worst mean error 2.5e-8); the
// measured error is printed.
TEST(JobRunnerTest, FullJobMatchesFloat64Recomputation) {
  const JobConfig config = TinyJob();
  auto runner = MakeRunner(config);
  StatMap merged;
  std::vector<int32_t> tokens;
  for (int64_t k = 0; k < runner->num_chunks(); ++k) {
    auto chunk = runner->RunChunk(k);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    Merge(merged, *chunk);
    tokens.insert(tokens.end(), chunk->prompt_tokens.begin(), chunk->prompt_tokens.end());
  }

  const ModelPreset preset = *FindModelPreset(config.model);
  const testing::NaiveGptNeoX naive = NaiveModelOf(config);
  const KvprDataset dataset = DatasetOf(config);

  const int64_t L = preset.config.num_layers();
  const int64_t d = preset.config.hidden_size();
  StatMap expected;
  for (int64_t i = 0; i < config.num_prompts; ++i) {
    const KvprExample example = *dataset.Generate(i);
    EXPECT_EQ(example.num_tokens, tokens[i]);
    const int64_t n = example.num_tokens;
    const auto points = testing::NaiveForward(naive, example.token_ids);
    auto add = [&](const std::string& metric, int32_t layer, double v) {
      MetricStat& s = expected[{metric, layer}];
      s.sum += v;
      s.sum_sq += v * v;
      ++s.count;
    };
    for (int64_t l = 0; l < L; ++l) {
      add("adjacent_cos", l, testing::NaiveAdjacentCos(points[l], points[l + 1], n, d));
    }
    for (int64_t l = 0; l <= L + 1; ++l) {
      add("intertoken_cos", l, testing::NaiveIntertokenCos(points[l], n, d));
    }
  }

  ASSERT_EQ(merged.size(), expected.size());
  double worst = 0;
  for (const auto& [key, want] : expected) {
    const MetricStat& got = merged.at(key);
    ASSERT_EQ(got.count, want.count);
    const double mean_got = got.sum / got.count, mean_want = want.sum / want.count;
    const double var_got = got.sum_sq / got.count - mean_got * mean_got;
    const double var_want = want.sum_sq / want.count - mean_want * mean_want;
    EXPECT_NEAR(mean_got, mean_want, 1e-6) << key.first << " " << key.second;
    EXPECT_NEAR(var_got, var_want, 1e-6) << key.first << " " << key.second;
    worst = std::max(worst, std::abs(mean_got - mean_want));
    std::printf("  %-15s layer %d: mean %.9f (float64 ref %.9f)\n", key.first.c_str(), key.second,
                mean_got, mean_want);
  }
  std::printf("  worst |mean - ref| = %.3g\n", worst);
}

// Every analysis of the suite in one job (two chunks, merged) against the
// naive forward + naive metric loops (LinearCka on the float64 states for
// the CKA metrics: the naive O(n^3) CKA is too slow at ~600 tokens).
// Tolerance as above, relative for step/path energy (not bounded by 1).
TEST(JobRunnerTest, AnalysisSuiteJobMatchesFloat64Recomputation) {
  JobConfig config = TinyJob();
  config.analyses = {"intertoken_cos_nofirst", "token_dispersion", "step_energy", "path_energy",
                     "cka_unbiased",           "cka_biased"};
  config.num_prompts = 3;
  auto runner = MakeRunner(config);
  StatMap merged;
  std::vector<int32_t> tokens;
  for (int64_t k = 0; k < runner->num_chunks(); ++k) {
    auto chunk = runner->RunChunk(k);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    for (const MetricStat& s : chunk->stats) EXPECT_GE(s.layer, 0) << s.metric;
    Merge(merged, *chunk);
  }

  const ModelPreset preset = *FindModelPreset(config.model);
  const testing::NaiveGptNeoX naive = NaiveModelOf(config);
  const KvprDataset dataset = DatasetOf(config);

  const int64_t L = preset.config.num_layers();
  const int64_t d = preset.config.hidden_size();
  StatMap expected;
  for (int64_t i = 0; i < config.num_prompts; ++i) {
    const KvprExample example = *dataset.Generate(i);
    const int64_t n = example.num_tokens;
    const auto points = testing::NaiveForward(naive, example.token_ids);
    auto add = [&](const std::string& metric, int32_t layer, double v) {
      MetricStat& s = expected[{metric, layer}];
      s.sum += v;
      s.sum_sq += v * v;
      ++s.count;
    };
    auto states = [&](int64_t l) { return at::tensor(points[l], at::kDouble).view({n, d}); };
    // cka_baseline: the estimators on the Gaussian draws of the prompt's
    // job index (the runner's chunks must pass it on).
    const at::Tensor draws = CkaBaselineStates(i, n, d, at::TensorOptions().dtype(at::kDouble));
    add(kCkaBaselineBiased, 0, LinearCka(draws[0], draws[1], CkaEstimator::kBiased));
    add(kCkaBaselineUnbiased, 0, LinearCka(draws[0], draws[1], CkaEstimator::kUnbiased));
    double path = 0;
    for (int64_t l = 0; l < L; ++l) {
      const double step = testing::NaiveStepEnergy(points[l], points[l + 1], n, d);
      add("step_energy", l, step);
      path += step;
      add("cka_biased", l, LinearCka(states(l), states(l + 1), CkaEstimator::kBiased));
      add("cka_unbiased", l, LinearCka(states(l), states(l + 1), CkaEstimator::kUnbiased));
    }
    add("path_energy", 0, path);
    for (int64_t l = 0; l <= L + 1; ++l) {
      add("intertoken_cos_nofirst", l, testing::NaiveIntertokenCosNoFirst(points[l], n, d));
      add("token_dispersion", l, testing::NaiveTokenDispersion(points[l], n, d));
    }
  }

  ASSERT_EQ(merged.size(), expected.size());
  for (const auto& [key, want] : expected) {
    const MetricStat& got = merged.at(key);
    ASSERT_EQ(got.count, want.count);
    const double mean_got = got.sum / got.count, mean_want = want.sum / want.count;
    const double scale = std::max(1.0, std::abs(mean_want));
    EXPECT_NEAR(mean_got, mean_want, 1e-6 * scale) << key.first << " " << key.second;
    EXPECT_NEAR(got.sum_sq, want.sum_sq, 1e-6 * std::max(1.0, want.sum_sq))
        << key.first << " " << key.second;
    std::printf("  %-22s layer %d: mean %.9f (float64 ref %.9f)\n", key.first.c_str(), key.second,
                mean_got, mean_want);
  }
}

TEST(JobRunnerTest, LowPrecisionRunsStayClose) {
  JobConfig config = TinyJob();
  config.num_prompts = 2;
  auto ref = MakeRunner(config)->RunChunk(0);
  ASSERT_TRUE(ref.ok());
  config.dtype = "bf16";
  auto low = MakeRunner(config)->RunChunk(0);
  ASSERT_TRUE(low.ok()) << low.status();
  for (size_t i = 0; i < ref->stats.size(); ++i) {
    EXPECT_NEAR(low->stats[i].sum, ref->stats[i].sum, 0.05)
        << ref->stats[i].metric << " " << ref->stats[i].layer;
  }
}

// Regression (issue 11): bf16 Mamba and Mamba-2 jobs with adjacent_cos,
// intertoken_cos and cka_unbiased FAILED on an H200 with "INTERNAL: chunk 0:
// model mamba-1.4b, layer 1 (backbone.layers.0), prompt 0: stack expects a
// non-empty TensorList". Their residual stream is float32 (residual_in_fp32)
// but the embedding was handed to the analysis in bf16, so one batch took
// the half-precision path at point 0 and the float64 path after it. Every
// point of a forward now has one dtype, and the half-precision jobs agree
// with the float32 job to their precision.
TEST(JobRunnerTest, HalfPrecisionSsmJobsWithCkaMatchFloat32) {
  for (const char* model : {"mamba-tiny", "mamba2-tiny"}) {
    const ModelConfig arch = FindModelPreset(model)->config;
    auto built = CreateRandomModel(arch, InitScheme{}, 0, c10::Device(c10::kCPU), c10::kBFloat16);
    ASSERT_TRUE(built.ok()) << built.status();
    std::vector<at::ScalarType> dtypes;
    (*built)->Forward(at::zeros({1, 8}, at::kLong),
                      [&](int64_t, const at::Tensor& h) { dtypes.push_back(h.scalar_type()); });
    for (at::ScalarType t : dtypes) EXPECT_EQ(t, at::kFloat) << model;

    JobConfig config = TinyJob();
    config.model = model;
    config.num_prompts = 2;
    config.analyses = {"adjacent_cos", "intertoken_cos", "cka_unbiased"};
    auto ref = MakeRunner(config)->RunChunk(0);
    ASSERT_TRUE(ref.ok()) << model << ": " << ref.status();
    for (const char* dtype : {"bf16", "fp16"}) {
      config.dtype = dtype;
      auto low = MakeRunner(config)->RunChunk(0);
      ASSERT_TRUE(low.ok()) << model << " " << dtype << ": " << low.status();
      ASSERT_EQ(low->stats.size(), ref->stats.size()) << model << " " << dtype;
      for (size_t i = 0; i < ref->stats.size(); ++i) {
        EXPECT_EQ(low->stats[i].metric, ref->stats[i].metric);
        EXPECT_NEAR(low->stats[i].sum, ref->stats[i].sum, 0.05)
            << model << " " << dtype << " " << ref->stats[i].metric << " " << ref->stats[i].layer;
      }
    }
  }
}

struct BadConfig {
  const char* field;
  JobConfig config;
  DeviceConfig device;
};

// The bug this pins: on GPUs a prompt's numbers depended on the GPU count
// (bench/RESULTS.md, 2026-11-30: Mamba rows 3.7e-4 apart between 1 and 2
// GPUs), because one GPU ran a chunk's prompts as one batch and two GPUs as
// two, and cuBLAS picks its reduction by batch size. With batch_prompts = k
// every rank count runs exactly the same batches; with 0 it does not.
std::vector<std::pair<int64_t, int64_t>> AllBatches(const std::vector<int64_t>& tokens,
                                                    int64_t ranks, int32_t k) {
  std::vector<std::pair<int64_t, int64_t>> all;
  const int64_t count = static_cast<int64_t>(tokens.size());
  int64_t next = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    const auto [lo, hi] = PlanRankPrompts(count, ranks, r, k);
    EXPECT_EQ(lo, next) << "ranks cover the chunk in order";
    next = hi;
    for (const auto& batch : PlanBatches(tokens, lo, hi, k)) all.push_back(batch);
  }
  EXPECT_EQ(next, count);
  return all;
}

TEST(JobRunnerTest, FixedBatchesDoNotDependOnTheRankCount) {
  using Batches = std::vector<std::pair<int64_t, int64_t>>;
  // Equal lengths; 8192-token prompts (2 per 16384-token batch); a length
  // change inside a group.
  const std::vector<std::vector<int64_t>> chunks = {std::vector<int64_t>(7, 512),
                                                    std::vector<int64_t>(6, 8192),
                                                    {512, 512, 300, 300, 300, 300, 300}};
  for (const auto& tokens : chunks) {
    for (int32_t k : {1, 2, 3, 4}) {
      const Batches one = AllBatches(tokens, 1, k);
      for (int64_t ranks : {2, 3, 4}) {
        EXPECT_EQ(AllBatches(tokens, ranks, k), one)
            << "k " << k << ", " << ranks << " ranks, " << tokens.size() << " prompts";
      }
    }
  }
  // Worked cases.
  EXPECT_EQ(AllBatches(std::vector<int64_t>(7, 512), 2, 2),
            (Batches{{0, 2}, {2, 4}, {4, 6}, {6, 7}}));
  EXPECT_EQ(PlanRankPrompts(7, 2, 0, 2), (std::pair<int64_t, int64_t>{0, 4}));
  EXPECT_EQ(AllBatches(std::vector<int64_t>(6, 8192), 1, 4),
            (Batches{{0, 2}, {2, 4}, {4, 6}}));  // the token cap inside a group
  EXPECT_EQ(AllBatches({512, 512, 300, 300, 300, 300, 300}, 1, 3),
            (Batches{{0, 2}, {2, 3}, {3, 6}, {6, 7}}));  // a length change in a group
  // batch_prompts 0: one batch per rank's share, so 1 and 2 ranks differ.
  EXPECT_EQ(AllBatches(std::vector<int64_t>(4, 512), 1, 0), (Batches{{0, 4}}));
  EXPECT_EQ(AllBatches(std::vector<int64_t>(4, 512), 2, 0), (Batches{{0, 2}, {2, 4}}));
}

// batch_prompts changes how prompts are batched, not what is computed: a
// job with batches of 1 and of 2 prompts gives the default's statistics.
TEST(JobRunnerTest, FixedBatchesGiveTheSameStatistics) {
  JobConfig config = TinyJob();
  config.prompts_per_chunk = config.num_prompts;
  auto want = MakeRunner(config)->RunChunk(0);
  ASSERT_TRUE(want.ok()) << want.status();
  for (int32_t k : {1, 2}) {
    config.batch_prompts = k;
    auto got = MakeRunner(config)->RunChunk(0);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->stats.size(), want->stats.size());
    for (size_t i = 0; i < want->stats.size(); ++i) {
      EXPECT_EQ(got->stats[i].count, want->stats[i].count);
      EXPECT_NEAR(got->stats[i].sum, want->stats[i].sum,
                  1e-9 * std::max(1.0, std::abs(want->stats[i].sum)))
          << want->stats[i].metric;
    }
  }
}

// Jobs that differ only in data set, context length and analyses reuse the
// model the first one built (the worker's ModelCache), and their rows are
// those of jobs that build their own.
TEST(JobRunnerTest, ResidentModelIsReusedAndGivesTheSameRows) {
  std::shared_ptr<ModelCache> models = CreateModelCache(int64_t{1} << 30);
  JobConfig first = TinyJob();
  JobConfig second = TinyJob();
  second.dataset = "mqar";
  second.context_length = 256;
  second.analyses = {"token_dispersion", "cka_unbiased"};
  JobConfig other_seed = TinyJob();
  other_seed.seed = 18;
  for (const JobConfig& config : {first, second, other_seed}) {
    auto cached = CreateJobRunner(config, DeviceConfig{}, ModelFilePolicy{}, models.get());
    ASSERT_TRUE(cached.ok()) << cached.status();
    std::unique_ptr<JobRunner> fresh = MakeRunner(config);
    for (int64_t seq = 0; seq < fresh->num_chunks(); ++seq) {
      auto got = (*cached)->RunChunk(seq);
      auto want = fresh->RunChunk(seq);
      ASSERT_TRUE(got.ok() && want.ok());
      ASSERT_EQ(got->stats.size(), want->stats.size());
      for (size_t i = 0; i < got->stats.size(); ++i) {
        EXPECT_EQ(got->stats[i].metric, want->stats[i].metric);
        EXPECT_EQ(got->stats[i].sum, want->stats[i].sum) << got->stats[i].metric;
        EXPECT_EQ(got->stats[i].sum_sq, want->stats[i].sum_sq) << got->stats[i].metric;
      }
    }
  }
  const ModelCacheStats stats = StatsOf(*models);
  EXPECT_EQ(stats.builds, 2);  // seed 17 once, seed 18 once
  EXPECT_EQ(stats.hits, 1);    // the second job
  EXPECT_EQ(stats.models, 2);
}

// The user's own corpus (DatasetSpec.path, issue 15): a JSONL file under a
// model root, read through the confined opener. The job's rows equal the
// float64 recomputation on the TextDataset's own examples of the same file.
class TextJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // POSIX, not std::filesystem: LibTorch's own copy of it is the one this
    // binary would bind to (it crashed here).
    char tmpl[] = "/tmp/lf_text_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_EQ(mkdir((root_ + "/corpora").c_str(), 0755), 0);
    std::ofstream out(root_ + "/corpora/notes.jsonl");
    for (int i = 0; i < 12; ++i) {
      out << "{\"body\": \"Record " << i << ": the quick brown fox jumps over the lazy dog, "
          << "and the state of layer " << (i * 7) % 5 << " drifts.\"}\n";
    }
    files_.roots = {root_};
    files_.hf_cache = false;
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }

  JobConfig TextJob() const {
    JobConfig c = TinyJob();
    c.dataset = "text";
    c.dataset_path = "corpora/notes.jsonl";
    c.dataset_field = "body";
    c.context_length = 96;
    c.num_prompts = 5;
    return c;
  }

  std::string root_;
  ModelFilePolicy files_;
};

TEST_F(TextJobTest, JobOnTheUsersFileMatchesFloat64Recomputation) {
  const JobConfig config = TextJob();
  auto runner = CreateJobRunner(config, DeviceConfig{}, files_);
  ASSERT_TRUE(runner.ok()) << runner.status();
  StatMap merged;
  for (int64_t k = 0; k < (*runner)->num_chunks(); ++k) {
    auto chunk = (*runner)->RunChunk(k);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    Merge(merged, *chunk);
  }
  TextOptions options;
  options.path = root_ + "/corpora/notes.jsonl";
  options.json_key = "body";
  options.context_length = config.context_length;
  auto dataset = TextDataset::Create(options, std::make_shared<ByteTokenizer>());
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const testing::NaiveGptNeoX naive = NaiveModelOf(config);
  const ModelPreset preset = *FindModelPreset(config.model);
  const int64_t L = preset.config.num_layers(), d = preset.config.hidden_size();
  StatMap expected;
  for (int64_t i = 0; i < config.num_prompts; ++i) {
    const TextExample example = *dataset->Generate(i);
    const auto points = testing::NaiveForward(naive, example.token_ids);
    auto add = [&](const std::string& metric, int32_t layer, double v) {
      MetricStat& st = expected[{metric, layer}];
      st.sum += v;
      ++st.count;
    };
    for (int64_t l = 0; l < L; ++l) {
      add("adjacent_cos", l,
          testing::NaiveAdjacentCos(points[l], points[l + 1], example.num_tokens, d));
    }
    for (int64_t l = 0; l <= L + 1; ++l) {
      add("intertoken_cos", l, testing::NaiveIntertokenCos(points[l], example.num_tokens, d));
    }
  }
  ASSERT_EQ(merged.size(), expected.size());
  for (const auto& [key, want] : expected) {
    const MetricStat& got = merged.at(key);
    ASSERT_EQ(got.count, want.count);
    EXPECT_NEAR(got.sum / got.count, want.sum / want.count, 1e-6) << key.first << " " << key.second;
  }
}

TEST_F(TextJobTest, BadFilesNameTheFieldNotTheWorkersPath) {
  struct Case {
    std::string path, field;
    int64_t prompts;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"corpora/missing.jsonl", "body", 5, absl::StatusCode::kInvalidArgument,
       "dataset_path: 'corpora/missing.jsonl' is not a file under the worker's model roots"},
      {"../etc/passwd", "body", 5, absl::StatusCode::kPermissionDenied,
       "dataset_path: '../etc/passwd' is outside the worker's model roots"},
      {"/etc/passwd", "body", 5, absl::StatusCode::kPermissionDenied,
       "dataset_path: '/etc/passwd' is outside the worker's model roots"},
      {"corpora/notes.jsonl", "text", 5, absl::StatusCode::kInvalidArgument,
       "corpora/notes.jsonl:1: missing key \"text\""},
      {"corpora/notes.jsonl", "body", 40, absl::StatusCode::kInvalidArgument,
       "num_prompts: 40 prompts of 96 tokens asked, but corpora/notes.jsonl holds"},
  };
  for (const Case& c : cases) {
    JobConfig config = TextJob();
    config.dataset_path = c.path;
    config.dataset_field = c.field;
    config.num_prompts = c.prompts;
    auto runner = CreateJobRunner(config, DeviceConfig{}, files_);
    ASSERT_FALSE(runner.ok()) << c.path;
    EXPECT_EQ(runner.status().code(), c.code) << runner.status();
    EXPECT_EQ(std::string(runner.status().message()).rfind(c.message, 0), 0u) << runner.status();
    EXPECT_EQ(std::string(runner.status().message()).find(root_), std::string::npos)
        << "no worker path in " << runner.status();
  }
}

TEST(JobRunnerTest, BadConfigNamesTheField) {
  std::vector<BadConfig> cases;
  auto with = [&](const char* field, auto mutate) {
    BadConfig bad{field, TinyJob(), DeviceConfig{}};
    mutate(bad.config, bad.device);
    cases.push_back(bad);
  };
  with("model", [](JobConfig& c, DeviceConfig&) { c.model = "pythia-7t"; });
  with("init_scheme", [](JobConfig& c, DeviceConfig&) { c.init_scheme = "normal(-1)"; });
  with("init_scheme", [](JobConfig& c, DeviceConfig&) { c.init_scheme = "orthogonal"; });
  with("dataset", [](JobConfig& c, DeviceConfig&) { c.dataset = "squad"; });
  with("num_classes", [](JobConfig& c, DeviceConfig&) { c.num_classes = 0; });
  with("context_length", [](JobConfig& c, DeviceConfig&) { c.context_length = 0; });
  with("context_length", [](JobConfig& c, DeviceConfig&) { c.context_length = 256; });
  with("analyses", [](JobConfig& c, DeviceConfig&) { c.analyses = {"cka"}; });
  with("analyses", [](JobConfig& c, DeviceConfig&) { c.analyses.clear(); });
  with("num_prompts", [](JobConfig& c, DeviceConfig&) { c.num_prompts = 0; });
  with("prompts_per_chunk", [](JobConfig& c, DeviceConfig&) { c.prompts_per_chunk = -1; });
  with("batch_prompts", [](JobConfig& c, DeviceConfig&) { c.batch_prompts = -1; });
  with("dtype", [](JobConfig& c, DeviceConfig&) { c.dtype = "fp64"; });
  with("seed", [](JobConfig& c, DeviceConfig&) { c.seed = -3; });
  with("device_type", [](JobConfig&, DeviceConfig& d) { d.device_type = "tpu"; });
  with("gpu_count", [](JobConfig&, DeviceConfig& d) {
    d.device_type = "cuda";
    d.gpu_count = 1000;
  });
  for (const BadConfig& bad : cases) {
    auto runner = CreateJobRunner(bad.config, bad.device);
    ASSERT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument)
        << bad.field << ": " << runner.status();
    EXPECT_EQ(runner.status().message().rfind(bad.field, 0), 0u)
        << "message should start with the field: " << runner.status();
  }
}

}  // namespace
}  // namespace layerflow::worker

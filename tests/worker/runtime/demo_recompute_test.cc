// The README's main job prints numbers for the default sweep
// (client/default_sweep.h). This test recomputes the first job of that sweep
// — pythia-160m, reference init, seed 0, MQAR at 128 tokens, with all four
// of its analyses (adjacent_cos, intertoken_cos, path_energy and the
// per-token adjacent_cos_tokens) — with the independent float64 reference
// (naive forward in plain loops, naive metric loops) and checks that the
// worker's numbers equal it. The job's first prompt keeps the naive forward
// within seconds; it is the job's own (prompt i depends only on the seed and
// i). tests/client/sweep_file_test.cc pins the default sweep to these
// settings.
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>

#include "catalog/datasets.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/naive_reference.h"
#include "tests/worker/testing/torch_export.h"
#include "worker/data/mqar.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/runtime/job_runner.h"

namespace layerflow::worker {
namespace {

// ||a_t||^2 and a_t . b_t of token t of [n, d] row-major states.
double Dot(const testing::NaiveStates& a, const testing::NaiveStates& b, int64_t t, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) s += a[t * d + k] * b[t * d + k];
  return s;
}

TEST(DemoSweepTest, FirstJobEqualsFloat64Recomputation) {
  JobConfig config;
  config.model = "pythia-160m";
  config.init_scheme = "reference";
  config.seed = 0;
  config.dataset = "mqar";
  config.context_length = 128;
  config.analyses = {"adjacent_cos", "intertoken_cos", "path_energy", "adjacent_cos_tokens"};
  config.num_prompts = 1;
  config.prompts_per_chunk = 1;
  config.dtype = "fp32";

  auto runner = CreateJobRunner(config, DeviceConfig{});
  ASSERT_TRUE(runner.ok()) << runner.status();
  ASSERT_EQ((*runner)->num_chunks(), 1);
  auto chunk = (*runner)->RunChunk(0);
  ASSERT_TRUE(chunk.ok()) << chunk.status();

  const ModelPreset preset = *FindModelPreset(config.model);
  auto model = CreateRandomModel(preset.config, *ParseInitScheme(config.init_scheme), 0,
                                 c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  const testing::NaiveGptNeoX naive = testing::ExportToNaive(**model);
  // The job's data set: MQAR ids from the first min(8192, vocab) of the
  // model's vocabulary, context/4 = 32 pairs capped at 16 (catalog).
  auto dataset =
      MqarDataset::Create({.seed = 0,
                           .vocab_size = catalog::MqarVocabSize(preset.config.vocab_size()),
                           .seq_len = 128,
                           .num_kv_pairs = catalog::MqarKvPairs(128)});
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  const int64_t L = preset.config.num_layers();
  const int64_t d = preset.config.hidden_size();
  // (metric, layer, position) -> (sum over prompts, prompts)
  std::map<std::tuple<std::string, int32_t, int32_t>, std::pair<double, int64_t>> expected;
  auto add = [&](const std::string& metric, int64_t layer, int64_t position, double v) {
    auto& e = expected[{metric, static_cast<int32_t>(layer), static_cast<int32_t>(position)}];
    e.first += v;
    ++e.second;
  };
  for (int64_t i = 0; i < config.num_prompts; ++i) {
    const MqarExample example = *dataset->Generate(i);
    ASSERT_EQ(example.num_tokens, chunk->prompt_tokens[i]);
    const auto points = testing::NaiveForward(naive, example.token_ids);
    const int64_t n = example.num_tokens;
    double path_energy = 0;
    for (int64_t l = 0; l < L; ++l) {
      add("adjacent_cos", l, -1, testing::NaiveAdjacentCos(points[l], points[l + 1], n, d));
      double step = 0;
      for (int64_t t = 0; t < n; ++t) {
        const double aa = Dot(points[l], points[l], t, d);
        const double bb = Dot(points[l + 1], points[l + 1], t, d);
        const double ab = Dot(points[l], points[l + 1], t, d);
        add("adjacent_cos_tokens", l, t, ab / std::sqrt(aa * bb));
        double diff = 0;
        for (int64_t k = 0; k < d; ++k) {
          const double x = points[l + 1][t * d + k] - points[l][t * d + k];
          diff += x * x;
        }
        step += aa > 0 ? diff / aa : 0.0;
      }
      path_energy += step / n;
    }
    add("path_energy", 0, -1, path_energy);
    for (int64_t l = 0; l <= L + 1; ++l) {
      add("intertoken_cos", l, -1, testing::NaiveIntertokenCos(points[l], n, d));
    }
  }

  ASSERT_EQ(chunk->stats.size(), expected.size());
  double worst = 0;
  for (const MetricStat& got : chunk->stats) {
    auto it = expected.find({got.metric, got.layer, got.position});
    ASSERT_NE(it, expected.end()) << got.metric << " layer " << got.layer << " position "
                                  << got.position;
    ASSERT_EQ(got.count, it->second.second);
    const double mean = got.sum / got.count, want = it->second.first / it->second.second;
    // fp32 model vs float64 reference: see runtime_test.cc for the budget;
    // path_energy is a sum of 12 relative steps (the first ~330: Pythia's
    // embedding is small next to its first block's update), so relative.
    const double tolerance = got.metric == "path_energy" ? 1e-6 * std::abs(want) : 1e-6;
    EXPECT_NEAR(mean, want, tolerance)
        << got.metric << " layer " << got.layer << " position " << got.position;
    if (got.metric != "path_energy") worst = std::max(worst, std::abs(mean - want));
  }
  std::printf("  demo job: worst |mean - float64 ref| = %.3g over %zu rows\n", worst,
              chunk->stats.size());
}

}  // namespace
}  // namespace layerflow::worker

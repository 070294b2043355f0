// The README's main job prints numbers for the default sweep
// (client/default_sweep.h). This test recomputes the first job of that sweep
// — pythia-14m, reference init, seed 0, KVPR with 11 classes at 1536 tokens —
// with the independent float64 reference (naive forward in plain loops, naive
// metric loops) and checks that the worker's numbers equal it. Two of the
// job's eight prompts keep the naive forward within seconds; the prompts are
// the job's own (prompt i depends only on the seed and i).
// tests/client/sweep_file_test.cc pins the default sweep to these settings.
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

#include "gtest/gtest.h"
#include "tests/worker/naive_reference.h"
#include "tests/worker/torch_export.h"
#include "worker/data/kvpr.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/runtime/job_runner.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

TEST(DemoSweepTest, FirstJobEqualsFloat64Recomputation) {
  JobConfig config;
  config.model = "pythia-14m";
  config.init_scheme = "reference";
  config.seed = 0;
  config.dataset = "kvpr";
  config.num_classes = 11;
  config.context_length = 1536;
  config.analyses = {"adjacent_cos", "intertoken_cos"};
  config.num_prompts = 2;
  config.prompts_per_chunk = 2;
  config.dtype = "fp32";

  auto runner = CreateJobRunner(config, DeviceConfig{});
  ASSERT_TRUE(runner.ok()) << runner.status();
  ASSERT_EQ((*runner)->num_chunks(), 1);
  auto chunk = (*runner)->RunChunk(0);
  ASSERT_TRUE(chunk.ok()) << chunk.status();

  const ModelPreset preset = *FindModelPreset(config.model);
  auto model = CreateRandomModel(preset.config, *ParseInitScheme(config.init_scheme),
                                          0, c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  const testing::NaiveGptNeoX naive = testing::ExportToNaive(**model);
  auto dataset = KvprDataset::Create(
      {.seed = 0, .num_classes = 11, .context_length = 1536},
      std::make_shared<ByteTokenizer>());
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  const int64_t L = preset.config.num_layers();
  const int64_t d = preset.config.hidden_size();
  std::map<std::pair<std::string, int32_t>, std::pair<double, int64_t>> expected;
  for (int64_t i = 0; i < config.num_prompts; ++i) {
    const KvprExample example = *dataset->Generate(i);
    ASSERT_EQ(example.num_tokens, chunk->prompt_tokens[i]);
    const auto points = testing::NaiveForward(naive, example.token_ids);
    const int64_t n = example.num_tokens;
    for (int64_t l = 0; l < L; ++l) {
      auto& e = expected[{"adjacent_cos", static_cast<int32_t>(l)}];
      e.first += testing::NaiveAdjacentCos(points[l], points[l + 1], n, d);
      ++e.second;
    }
    for (int64_t l = 0; l <= L + 1; ++l) {
      auto& e = expected[{"intertoken_cos", static_cast<int32_t>(l)}];
      e.first += testing::NaiveIntertokenCos(points[l], n, d);
      ++e.second;
    }
  }

  ASSERT_EQ(chunk->stats.size(), expected.size());
  double worst = 0;
  for (const MetricStat& got : chunk->stats) {
    auto it = expected.find({got.metric, got.layer});
    ASSERT_NE(it, expected.end()) << got.metric << " layer " << got.layer;
    ASSERT_EQ(got.count, it->second.second);
    const double mean = got.sum / got.count, want = it->second.first / it->second.second;
    // fp32 model vs float64 reference: see runtime_test.cc for the budget.
    EXPECT_NEAR(mean, want, 1e-6) << got.metric << " layer " << got.layer;
    worst = std::max(worst, std::abs(mean - want));
  }
  std::printf("  demo job: worst |mean - float64 ref| = %.3g over %zu rows\n", worst,
              chunk->stats.size());
}

}  // namespace
}  // namespace layerflow::worker

// The worker's cache of built models (worker/runtime/model_cache.h): the
// same key hands out the same weights without a second build, the least
// recently used model leaves first, a model larger than the budget is
// never kept, and a failed build keeps nothing.
#include "worker/runtime/model_cache.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "tests/testing/status_matchers.h"
#include "worker/model/model_config.h"
#include "worker/runtime/job_runner.h"

namespace layerflow::worker {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::Eq;

ModelKey KeyOf(int64_t seed) { return {"pythia-tiny", "reference", seed, "fp32", "cpu"}; }

class ModelCacheTest : public ::testing::Test {
 protected:
  // Builds pythia-tiny with `seed`, counting the builds.
  ModelCache::Build Builder(int64_t seed) {
    return [this, seed]() -> absl::StatusOr<std::unique_ptr<LanguageModel>> {
      ++builds_;
      auto preset = FindModelPreset("pythia-tiny");
      if (!preset.ok()) return preset.status();
      return CreateRandomModel(preset->config, InitScheme{}, static_cast<uint64_t>(seed),
                               c10::Device(c10::kCPU), at::kFloat);
    };
  }
  int64_t OneModelBytes() {
    auto model = Builder(0)();
    --builds_;
    return ModelCache::ParameterBytes(**model);
  }
  int builds_ = 0;
};

TEST_F(ModelCacheTest, SameKeySameWeightsOneBuild) {
  ModelCache cache(/*budget_bytes=*/1 << 30);
  auto first = cache.GetOrBuild(KeyOf(7), Builder(7));
  auto second = cache.GetOrBuild(KeyOf(7), Builder(7));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(builds_, 1);
  EXPECT_EQ(first->get(), second->get());
  // And they are the seed's weights: equal to a fresh build of that seed.
  auto fresh = Builder(7)();
  ASSERT_TRUE(fresh.ok());
  const auto& want = (*fresh)->parameters().items();
  const auto& got = (*first)->parameters().items();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(at::equal(want[i].second, got[i].second)) << want[i].first;
  }
  const ModelCache::Stats s = cache.stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.builds, 1);
  EXPECT_EQ(s.models, 1);
  EXPECT_EQ(s.bytes, ModelCache::ParameterBytes(**first));
}

TEST_F(ModelCacheTest, EveryFieldOfTheKeyTellsModelsApart) {
  ModelCache cache(1 << 30);
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  for (ModelKey other : {ModelKey{"pythia-14m", "reference", 1, "fp32", "cpu"},
                         ModelKey{"pythia-tiny", "xavier_normal", 1, "fp32", "cpu"},
                         ModelKey{"pythia-tiny", "reference", 2, "fp32", "cpu"},
                         ModelKey{"pythia-tiny", "reference", 1, "bf16", "cpu"},
                         ModelKey{"pythia-tiny", "reference", 1, "fp32", "cuda:0"}}) {
    const int before = builds_;
    ASSERT_TRUE(cache.GetOrBuild(other, Builder(1)).ok()) << other.DebugString();
    EXPECT_EQ(builds_, before + 1) << other.DebugString();
  }
}

TEST_F(ModelCacheTest, LeastRecentlyUsedLeavesFirst) {
  const int64_t one = OneModelBytes();
  ModelCache cache(2 * one);  // room for two
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(2), Builder(2)).ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());  // 1 is now the newest
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(3), Builder(3)).ok());  // evicts 2
  EXPECT_EQ(builds_, 3);
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  EXPECT_EQ(builds_, 3) << "1 was kept";
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(2), Builder(2)).ok());
  EXPECT_EQ(builds_, 4) << "2 was evicted";
  const ModelCache::Stats s = cache.stats();
  EXPECT_EQ(s.models, 2);
  EXPECT_EQ(s.bytes, 2 * one);
  EXPECT_EQ(s.evictions, 2);
}

TEST_F(ModelCacheTest, ModelLargerThanTheBudgetIsServedNotKept) {
  ModelCache cache(OneModelBytes() - 1);
  auto model = cache.GetOrBuild(KeyOf(1), Builder(1));
  ASSERT_TRUE(model.ok());
  EXPECT_NE(*model, nullptr);
  EXPECT_EQ(cache.stats().models, 0);
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  EXPECT_EQ(builds_, 2);
}

TEST_F(ModelCacheTest, EvictedModelStaysAliveForItsHolder) {
  ModelCache cache(OneModelBytes());
  auto held = cache.GetOrBuild(KeyOf(1), Builder(1));
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(2), Builder(2)).ok());  // evicts 1
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_GT((*held)->parameters().numel(), 0);  // still usable
}

TEST_F(ModelCacheTest, FailedBuildKeepsNothing) {
  ModelCache cache(1 << 30);
  auto failed = cache.GetOrBuild(KeyOf(1), []() -> absl::StatusOr<std::unique_ptr<LanguageModel>> {
    return absl::ResourceExhaustedError("model pythia-tiny: out of memory");
  });
  EXPECT_THAT(failed.status(), StatusIs(absl::StatusCode::kResourceExhausted,
                                        Eq("model pythia-tiny: out of memory")));
  EXPECT_EQ(cache.stats().models, 0);
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  EXPECT_EQ(builds_, 1);
}

TEST_F(ModelCacheTest, ResidentModelsListsKeptModelsOnceMostRecentFirst) {
  ModelCache cache(1 << 30);
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(1), Builder(1)).ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(2), Builder(2)).ok());
  // Seed 1's replica on a second device: one model to the scheduler.
  ModelKey replica = KeyOf(1);
  replica.device = "cuda:1";
  ASSERT_TRUE(cache.GetOrBuild(replica, Builder(1)).ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(3), Builder(3)).ok());
  ASSERT_TRUE(cache.GetOrBuild(KeyOf(2), Builder(2)).ok());  // a hit: 2 is now the newest
  ASSERT_EQ(cache.Keys().size(), 4u);
  EXPECT_EQ(cache.Keys().front(), KeyOf(2));
  const std::vector<ResidentModelKey> want = {{"pythia-tiny", "reference", 2, "fp32"},
                                              {"pythia-tiny", "reference", 3, "fp32"},
                                              {"pythia-tiny", "reference", 1, "fp32"}};
  EXPECT_EQ(ResidentModels(cache, 10), want);
  EXPECT_EQ(ResidentModels(cache, 2),
            std::vector<ResidentModelKey>(want.begin(), want.begin() + 2));
  EXPECT_TRUE(ResidentModels(ModelCache(0), 10).empty());
}

}  // namespace
}  // namespace layerflow::worker

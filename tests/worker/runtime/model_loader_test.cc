// The worker's one model loader (worker/runtime/model_loader.h), used by the
// job runner and layerflow-inspect: a preset's plan and weights, and the
// errors naming the request's field.
#include "tests/testing/status_matchers.h"
#include "worker/runtime/model_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

namespace layerflow::worker {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ModelLoaderTest, PresetPlanAndItsSeededWeights) {
  absl::StatusOr<ModelPlan> plan = PlanModel({"pythia-tiny", "xavier_normal", 5}, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->from_checkpoint());
  EXPECT_EQ(plan->config.num_layers(), FindModelPreset("pythia-tiny")->config.num_layers());
  EXPECT_EQ(plan->tokenizer->name(), "byte");
  using Meta = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(plan->metadata, (Meta{{"source", "preset pythia-tiny"},
                                  {"init", "xavier_normal"},
                                  {"seed", "5"},
                                  {"tokenizer", "byte"}}));
  auto built = BuildModel(*plan, at::kFloat, c10::Device(c10::kCPU), {});
  ASSERT_TRUE(built.ok()) << built.status();
  auto want = CreateRandomModel(plan->config, *ParseInitScheme("xavier_normal"), 5,
                                c10::Device(c10::kCPU), at::kFloat);
  ASSERT_TRUE(want.ok());
  const auto& got_items = (*built)->parameters().items();
  const auto& want_items = (*want)->parameters().items();
  ASSERT_EQ(got_items.size(), want_items.size());
  for (size_t i = 0; i < got_items.size(); ++i) {
    EXPECT_EQ(got_items[i].first, want_items[i].first);
    EXPECT_TRUE(at::equal(got_items[i].second, want_items[i].second)) << got_items[i].first;
  }
}

TEST(ModelLoaderTest, ErrorsNameTheRequestField) {
  absl::StatusOr<ModelPlan> unknown = PlanModel({"pythia-nope", "reference", 0}, {});
  EXPECT_THAT(unknown.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         StartsWith("model: model 'pythia-nope': not a preset")));
  absl::StatusOr<ModelPlan> bad_init = PlanModel({"pythia-tiny", "normal(-1)", 0}, {});
  EXPECT_THAT(bad_init.status(),
              StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("init_scheme: ")));
  // A path outside every root (none configured): PERMISSION_DENIED, kept.
  absl::StatusOr<ModelPlan> outside = PlanModel({"/etc", "reference", 0}, {});
  EXPECT_THAT(outside.status(),
              StatusIs(absl::StatusCode::kPermissionDenied, StartsWith("model: ")));
  EXPECT_THAT(std::string(outside.status().message()), ::testing::Not(HasSubstr("passwd")));
}

}  // namespace
}  // namespace layerflow::worker

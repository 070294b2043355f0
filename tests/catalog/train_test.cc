// TRAIN settings: defaults, ranges (errors name the field), the small
// models they describe, chunk arithmetic and the learning-rate schedule
// (values worked by hand).
#include "catalog/train.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerflow::catalog {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string MessageOf(const absl::Status& status) { return std::string(status.message()); }

TEST(TrainSettingsTest, DefaultsAreTheIssues) {
  const TrainSettings d = WithTrainDefaults({});
  EXPECT_EQ(d.task, "mqar");
  EXPECT_EQ(d.vocab, 8192);
  EXPECT_EQ(d.length, 512);
  EXPECT_EQ(d.pairs, 64);
  EXPECT_DOUBLE_EQ(d.alpha, 0.01);
  EXPECT_EQ(d.layers, 2);
  EXPECT_EQ(d.width, 128);
  EXPECT_EQ(d.steps, 20000);
  EXPECT_EQ(d.warmup, 1000);  // 5% of the steps
  EXPECT_EQ(d.eval_every, 500);
  EXPECT_EQ(d.save_every, 1000);
  EXPECT_EQ(d.heads, 0);  // the architecture's own, resolved per model
  // Relative defaults follow a short run.
  TrainSettings short_run;
  short_run.steps = 40;
  const TrainSettings s = WithTrainDefaults(short_run);
  EXPECT_EQ(s.warmup, 2);
  EXPECT_EQ(s.eval_every, 40);
  EXPECT_EQ(s.save_every, 80);
  EXPECT_EQ(WithTrainDefaults(s).save_every, 80);  // idempotent
  EXPECT_TRUE(ValidateTrainSettings(short_run).ok());
}

TEST(TrainSegmentsTest, NoneIsTheTaskEveryStep) {
  TrainSettings s;
  EXPECT_EQ(WithTrainDefaults(s).curriculum, "none");
  EXPECT_EQ(TrainSegments(s), (std::vector<TrainSegment>{{512, 64, 1}}));
  for (int64_t step : {1, 2, 9, 10, 20000}) EXPECT_EQ(TrainSegmentOfStep(s, step), 0u);
}

TEST(TrainSegmentsTest, ZoologyAtTheDefaultsIsZoologysMixtureWithTheTask) {
  TrainSettings s;
  s.curriculum = "zoology";
  ASSERT_TRUE(ValidateTrainSettings(s).ok());
  // zoology/experiments: (64, 4) 100k examples, (128, 8), (256, 16),
  // (256, 32), (256, 64) 20k each; the last here is the task, (512, 64).
  EXPECT_EQ(TrainSegments(s), (std::vector<TrainSegment>{
                                  {64, 4, 5}, {128, 8, 1}, {256, 16, 1}, {256, 32, 1}, {512, 64, 1}}));
  // A cycle of 9 steps: 5 of (64, 4), then one of each.
  const size_t want[] = {0, 0, 0, 0, 0, 1, 2, 3, 4};
  for (int64_t step = 1; step <= 27; ++step) {
    EXPECT_EQ(TrainSegmentOfStep(s, step), want[(step - 1) % 9]) << "step " << step;
  }
}

TEST(TrainSegmentsTest, SmallTasksKeepAPairAndRoomForIt) {
  TrainSettings s;
  s.curriculum = "zoology";
  s.length = 32;
  s.pairs = 4;
  ASSERT_TRUE(ValidateTrainSettings(s).ok());
  // pairs / 16 and / 8 round to 0: one pair, 4 tokens at least.
  EXPECT_EQ(TrainSegments(s), (std::vector<TrainSegment>{
                                  {4, 1, 5}, {8, 1, 1}, {16, 1, 1}, {16, 2, 1}, {32, 4, 1}}));
}

TEST(TrainSettingsTest, ErrorsNameTheField) {
  auto error_of = [](auto edit) {
    TrainSettings s;
    edit(s);
    const absl::Status status = ValidateTrainSettings(s);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    return std::string(status.message());
  };
  EXPECT_THAT(error_of([](TrainSettings& s) { s.task = "kvpr"; }), StartsWith("task: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.curriculum = "easy"; }),
              AllOf(StartsWith("curriculum: "), HasSubstr("'easy'"), HasSubstr("none, zoology")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.steps = -5; }), StartsWith("steps: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.lr = 2; }), StartsWith("lr: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.lr = NAN; }), StartsWith("lr: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.target_accuracy = 1.5; }),
              StartsWith("target_accuracy: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.batch = 5000; }), StartsWith("batch: "));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.steps = 100;
                s.warmup = 100;
              }),
              StartsWith("warmup: "));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.eval_every = 300;
                s.save_every = 500;
              }),
              AllOf(StartsWith("save_every: "), HasSubstr("multiple of eval_every 300")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.steps = 10;
                s.eval_every = 20;
              }),
              StartsWith("eval_every: "));
  // 64 pairs need 256 tokens; 8 keys need 18 ids.
  EXPECT_THAT(error_of([](TrainSettings& s) { s.length = 255; }),
              AllOf(StartsWith("pairs: "), HasSubstr("length >= 4 * pairs = 256")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.pairs = 8;
                s.vocab = 17;
              }),
              AllOf(StartsWith("pairs: "), HasSubstr("vocab >= 18")));
}

TEST(TrainSettingsTest, PenaltyErrorsNameTheField) {
  auto error_of = [](auto edit) {
    TrainSettings s;
    s.penalty = "intertoken_cos";
    s.penalty_weight = 0.1;
    s.penalty_layers = {2};
    edit(s);
    const absl::Status status = ValidateTrainSettings(s);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    return std::string(status.message());
  };
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty = "cka"; }),
              AllOf(StartsWith("penalty: "), HasSubstr("'cka'"),
                    HasSubstr("none, intertoken_cos, v_loc")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_weight = 0; }),
              AllOf(StartsWith("penalty_weight: "), HasSubstr("outside (0, 1000]")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_weight = NAN; }),
              StartsWith("penalty_weight: "));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_layers.clear(); }),
              AllOf(StartsWith("penalty_layers: "), HasSubstr("at least one point")));
  // 2 layers: points 0..3, -1..-4.
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_layers = {4}; }),
              AllOf(StartsWith("penalty_layers: "), HasSubstr("4 is outside [-4, 3] for 2 layers")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_layers = {-5}; }),
              StartsWith("penalty_layers: -5 is outside"));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_layers = {3, -1}; }),
              AllOf(StartsWith("penalty_layers: "), HasSubstr("point 3 named twice")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty_series = "adjacent_cos"; }),
              AllOf(StartsWith("penalty_series: "), HasSubstr("v_loc only")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.penalty = "v_loc";
                s.penalty_layers.clear();
              }),
              AllOf(StartsWith("penalty_series: "), HasSubstr("at least 5 points"),
                    HasSubstr("2 layers give 3 (layers >= 4)")));
  EXPECT_THAT(error_of([](TrainSettings& s) { s.penalty = "v_loc"; }),
              AllOf(StartsWith("penalty_layers: "), HasSubstr("intertoken_cos only")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.penalty = "v_loc";
                s.penalty_layers.clear();
                s.layers = 4;
                s.penalty_series = "adjacent_cos";
              }),
              AllOf(StartsWith("penalty_series: "), HasSubstr("4 layers give 4 (layers >= 5)")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.penalty = "v_loc";
                s.penalty_layers.clear();
                s.layers = 8;
                s.penalty_series = "cka";
              }),
              AllOf(StartsWith("penalty_series: "), HasSubstr("'cka'")));
  EXPECT_THAT(error_of([](TrainSettings& s) {
                s.penalty.clear();
                s.penalty_layers.clear();
              }),
              StartsWith("penalty_weight: set without a penalty"));
}

TEST(TrainSettingsTest, PenaltyPointsResolveFromTheEnd) {
  TrainSettings s;
  s.layers = 3;  // points 0..4
  s.penalty = "intertoken_cos";
  s.penalty_weight = 1;
  s.penalty_layers = {-1, -2, 0};
  ASSERT_TRUE(ValidateTrainSettings(s).ok());
  EXPECT_EQ(PenaltyPointsOf(s).points, (std::vector<int32_t>{4, 3, 0}));
  EXPECT_FALSE(PenaltyPointsOf(s).adjacent);
  s.penalty = "v_loc";
  s.penalty_layers.clear();
  s.layers = 5;
  ASSERT_TRUE(ValidateTrainSettings(s).ok());
  EXPECT_EQ(WithTrainDefaults(s).penalty_series, "intertoken_cos");
  EXPECT_EQ(PenaltyPointsOf(s).points, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  s.penalty_series = "adjacent_cos";
  ASSERT_TRUE(ValidateTrainSettings(s).ok());
  EXPECT_TRUE(PenaltyPointsOf(s).adjacent);
  EXPECT_TRUE(PenaltyPointsOf(TrainSettings{}).points.empty());
  EXPECT_FALSE(WithTrainDefaults(TrainSettings{}).has_penalty());
}

TEST(TrainModelConfigTest, SmallModelsOfEachArchitecture) {
  TrainSettings s;
  s.vocab = 64;
  s.length = 32;
  s.pairs = 4;
  absl::StatusOr<ModelConfig> neox = TrainModelConfig("gpt_neox", s);
  ASSERT_TRUE(neox.ok()) << neox.status();
  EXPECT_EQ(neox->gpt_neox.vocab_size, 64);
  EXPECT_EQ(neox->gpt_neox.hidden_size, 128);
  EXPECT_EQ(neox->gpt_neox.num_hidden_layers, 2);
  EXPECT_EQ(neox->gpt_neox.num_attention_heads, 2);
  EXPECT_EQ(neox->gpt_neox.intermediate_size, 512);
  EXPECT_EQ(neox->gpt_neox.max_position_embeddings, 32);
  absl::StatusOr<ModelConfig> neo = TrainModelConfig("gpt_neo", s);
  ASSERT_TRUE(neo.ok()) << neo.status();
  EXPECT_EQ(neo->gpt_neo.attention_layers, std::vector<std::string>({"global", "global"}));
  absl::StatusOr<ModelConfig> mamba = TrainModelConfig("mamba", s);
  ASSERT_TRUE(mamba.ok()) << mamba.status();
  EXPECT_EQ(mamba->mamba.state_size, 16);
  absl::StatusOr<ModelConfig> mamba2 = TrainModelConfig("mamba2", s);
  ASSERT_TRUE(mamba2.ok()) << mamba2.status();
  EXPECT_EQ(mamba2->mamba2.num_heads, 4);  // 2 * 128 / 64
  EXPECT_EQ(mamba2->mamba2.head_dim, 64);
  EXPECT_EQ(mamba2->mamba2.state_size, 64);
  EXPECT_EQ(mamba2->mamba2.chunk_size, 32);

  s.heads = 3;
  EXPECT_THAT(MessageOf(TrainModelConfig("gpt_neox", s).status()), StartsWith("heads: "));
  EXPECT_THAT(MessageOf(TrainModelConfig("mamba", s).status()), StartsWith("heads: "));
  s.heads = 0;
  s.state_size = 8;
  EXPECT_THAT(MessageOf(TrainModelConfig("gpt_neo", s).status()), StartsWith("state_size: "));
  s.state_size = 0;
  s.width = 48;  // 96 is not a multiple of Mamba-2's head_dim 64
  EXPECT_THAT(MessageOf(TrainModelConfig("mamba2", s).status()), StartsWith("width: "));
  EXPECT_THAT(MessageOf(TrainModelConfig("pythia-70m", s).status()), StartsWith("model: "));
}

TEST(TrainScheduleTest, ChunksAndLearningRateByHand) {
  TrainSettings s;
  s.steps = 1050;
  s.eval_every = 100;
  s.warmup = 50;
  s.lr = 1e-3;
  EXPECT_EQ(TrainChunkCount(s), 11);
  EXPECT_EQ(TrainChunkEndStep(s, 0), 100);
  EXPECT_EQ(TrainChunkEndStep(s, 10), 1050);
  EXPECT_DOUBLE_EQ(TrainLearningRate(s, 1), 1e-3 / 50);
  EXPECT_DOUBLE_EQ(TrainLearningRate(s, 25), 5e-4);
  EXPECT_DOUBLE_EQ(TrainLearningRate(s, 50), 1e-3);
  // Halfway through the decay (step 550 of 50..1050): cos(pi / 2) = 0.
  EXPECT_NEAR(TrainLearningRate(s, 550), 5e-4, 1e-15);
  // A quarter: (1 + cos(pi / 4)) / 2 = 0.853553...
  EXPECT_NEAR(TrainLearningRate(s, 300), 1e-3 * 0.8535533905932737, 1e-15);
  EXPECT_NEAR(TrainLearningRate(s, 1050), 0.0, 1e-18);
}

}  // namespace
}  // namespace layerflow::catalog

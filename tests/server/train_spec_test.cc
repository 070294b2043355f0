// TRAIN sweeps at the coordinator: validation (INVALID_ARGUMENT naming the
// field), defaults, expansion into TRAIN jobs and their chunk count, and
// the shape checks of a TRAIN job's result chunks.
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catalog/train.h"
#include "server/core/chunk_validation.h"
#include "server/spec/sweep_spec.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::testing::StatusIs;
using ::layerflow::v1::SweepSpec;

SweepSpec TrainSweep() {
  SweepSpec spec;
  spec.set_name("mqar");
  spec.add_models("gpt_neox");
  spec.add_models("mamba2");
  spec.mutable_train();  // `kind: train`, every train field defaulted
  return spec;
}

TEST(TrainSweep, DefaultsExpandToOneTrainJobPerModelAndSeed) {
  SweepSpec spec = TrainSweep();
  spec.add_seeds(0);
  spec.add_seeds(1);
  ASSERT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  const SweepSpec d = WithDefaults(spec);
  EXPECT_EQ(d.train().task(), "mqar");
  EXPECT_EQ(d.train().vocab(), 8192);
  EXPECT_EQ(d.train().length(), 512);
  EXPECT_EQ(d.train().pairs(), 64);
  EXPECT_EQ(d.train().steps(), 20000);
  EXPECT_EQ(d.train().eval_every(), 500);
  EXPECT_EQ(d.train().save_every(), 1000);
  EXPECT_EQ(d.train().warmup(), 1000);
  EXPECT_TRUE(d.datasets().empty());  // the extract axes stay unset
  EXPECT_EQ(d.dtype(), "fp32");
  EXPECT_EQ(CountSweepJobs(d), 4);
  const std::vector<ExpandedJob> jobs = ExpandSweepJobs(d);
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(jobs[0].spec.model(), "gpt_neox");
  EXPECT_EQ(jobs[1].spec.seed(), 1);
  EXPECT_EQ(jobs[2].spec.model(), "mamba2");
  for (const ExpandedJob& job : jobs) {
    EXPECT_EQ(job.spec.kind(), layerflow::v1::JOB_KIND_TRAIN);
    EXPECT_EQ(job.depends_on, -1);
    EXPECT_EQ(job.spec.dataset().name(), "mqar");
    EXPECT_EQ(job.spec.context_length(), 512);
    EXPECT_EQ(job.spec.train().steps(), 20000);
    EXPECT_EQ(ChunksTotal(job.spec), 40);  // 20000 / 500
  }
}

TEST(TrainSweep, BadFieldsAreInvalidArgumentNamingTheField) {
  auto error_of = [](const std::function<void(SweepSpec&)>& edit) {
    SweepSpec spec = TrainSweep();
    edit(spec);
    return ValidateSweepSpec(spec);
  };
  using absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_steps(-1); }),
              StatusIs(kInvalidArgument, "spec.train.steps: -1 is outside"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_lr(5); }),
              StatusIs(kInvalidArgument, "spec.train.lr: "));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_task("kvpr"); }),
              StatusIs(kInvalidArgument, "spec.train.task: unknown task 'kvpr'"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_target_accuracy(1.01); }),
              StatusIs(kInvalidArgument, "spec.train.target_accuracy: "));
  EXPECT_THAT(error_of([](SweepSpec& s) {
                s.mutable_train()->set_penalty("intertoken_cos");
                s.mutable_train()->set_penalty_weight(0.1);
                s.mutable_train()->add_penalty_layers(7);
              }),
              StatusIs(kInvalidArgument,
                       "spec.train.penalty_layers: 7 is outside [-4, 3] for 2 layers"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_penalty("v_loc"); }),
              StatusIs(kInvalidArgument, "spec.train.penalty_weight: 0 is outside (0, 1000]"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_length(200); }),
              StatusIs(kInvalidArgument, "spec.train.pairs: 64 pairs need length >= 4"));
  EXPECT_THAT(error_of([](SweepSpec& s) {
                s.mutable_train()->set_eval_every(300);
                s.mutable_train()->set_save_every(1000);
              }),
              StatusIs(kInvalidArgument, "spec.train.save_every: 1000 is not a multiple"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_heads(3); }),
              StatusIs(kInvalidArgument, "spec.train.heads: "));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_train()->set_weight_decay(-0.1); }),
              StatusIs(kInvalidArgument, "spec.train.weight_decay: "));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_models(0, "pythia-70m"); }),
              StatusIs(kInvalidArgument, "spec.models[0]: 'pythia-70m' is not an architecture"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.add_datasets()->set_name("kvpr"); }),
              StatusIs(kInvalidArgument,
                       "spec.datasets: applies to a TRAIN sweep only with spec.analyses"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_num_prompts(4); }),
              StatusIs(kInvalidArgument, "spec.num_prompts: applies to a TRAIN sweep only with"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.add_layers(-1); }),
              StatusIs(kInvalidArgument, "spec.layers: applies to a TRAIN sweep only with"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_example_cka(true); }),
              StatusIs(kInvalidArgument, "spec.example_cka: does not apply"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_probe()->set_task("kvpr"); }),
              StatusIs(kInvalidArgument, "spec.probe: does not apply"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_dtype("bf16"); }),
              StatusIs(kInvalidArgument, "spec.dtype: 'bf16': TRAIN jobs train in fp32"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.add_models("gpt_neox"); }),
              StatusIs(kInvalidArgument, "spec.models[2]: duplicate value"));
}

// A TRAIN sweep with analyses: after the TRAIN jobs, each one's init model
// and trained model analysed on every data set and length (by default the
// trained task at its length), depending on it and seeded like it.
TEST(TrainSweep, AnalysesAddExtractJobsOnEachInitAndTrainedModel) {
  SweepSpec spec = TrainSweep();
  spec.add_seeds(0);
  spec.add_seeds(7);
  spec.add_analyses("intertoken_cos");
  spec.add_analyses("spectrum");
  spec.mutable_train()->set_length(256);
  spec.mutable_train()->set_pairs(16);
  ASSERT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  const SweepSpec d = WithDefaults(spec);
  ASSERT_EQ(d.datasets_size(), 1);
  EXPECT_EQ(d.datasets(0).name(), "mqar");
  ASSERT_EQ(d.context_lengths_size(), 1);
  EXPECT_EQ(d.context_lengths(0), 256);
  EXPECT_EQ(d.num_prompts(), 8);
  EXPECT_EQ(d.prompts_per_chunk(), 2);
  // 4 TRAIN jobs (2 models x 2 seeds), then 2 EXTRACT jobs each.
  EXPECT_EQ(CountSweepJobs(spec), 12);
  EXPECT_EQ(CountSweepJobs(d), 12);
  const std::vector<ExpandedJob> jobs = ExpandSweepJobs(d);
  ASSERT_EQ(jobs.size(), 12u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(jobs[i].spec.kind(), layerflow::v1::JOB_KIND_TRAIN);
  }
  for (int k = 0; k < 8; ++k) {
    const ExpandedJob& job = jobs[4 + k];
    const int train = k / 2;
    EXPECT_EQ(job.spec.kind(), layerflow::v1::JOB_KIND_EXTRACT);
    EXPECT_EQ(job.depends_on, train);
    EXPECT_EQ(job.spec.model(), catalog::TrainedModelName(absl::StrCat("<job ", train, ">"),
                                                          /*init=*/k % 2 == 0));
    EXPECT_EQ(job.spec.seed(), jobs[train].spec.seed());
    EXPECT_EQ(job.spec.init_scheme(), "reference");
    EXPECT_EQ(job.spec.dataset().name(), "mqar");
    EXPECT_EQ(job.spec.context_length(), 256);
    EXPECT_EQ(job.spec.num_prompts(), 8);
    ASSERT_EQ(job.spec.analyses_size(), 2);
    EXPECT_EQ(job.spec.analyses(1), "spectrum");
    EXPECT_FALSE(job.spec.has_train());
    EXPECT_EQ(ChunksTotal(job.spec), 4);  // 8 prompts, 2 a chunk
  }
  EXPECT_EQ(jobs[7].spec.seed(), 7);
  EXPECT_EQ(catalog::TrainedModelName("sw-a-3", /*init=*/true), "artifact:sw-a-3/init_model");
  EXPECT_EQ(catalog::TrainedModelName("sw-a-3", /*init=*/false), "artifact:sw-a-3/model");
  std::string train_job;
  bool init = false;
  ASSERT_TRUE(catalog::ParseTrainedModelName("artifact:sw-a-3/init_model", &train_job, &init));
  EXPECT_EQ(train_job, "sw-a-3");
  EXPECT_TRUE(init);
  ASSERT_TRUE(catalog::ParseTrainedModelName("artifact:sw-a-3/model", &train_job, &init));
  EXPECT_FALSE(init);
  for (const char* other : {"sw-a-3/model", "artifact:/model", "artifact:sw-a-3/weights",
                            "artifact:model", "mamba2"}) {
    EXPECT_FALSE(catalog::ParseTrainedModelName(other, &train_job, &init)) << other;
  }

  // Two data sets and two lengths: 4 per model, the init model's first.
  spec.add_datasets()->set_name("mqar");
  spec.add_datasets()->set_name("kvpr");
  spec.add_context_lengths(1082);
  spec.add_context_lengths(2048);
  ASSERT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  EXPECT_EQ(CountSweepJobs(spec), 4 * (1 + 8));
  const std::vector<ExpandedJob> wide = ExpandSweepJobs(WithDefaults(spec));
  ASSERT_EQ(wide.size(), 36u);
  EXPECT_EQ(wide[4 + 3].spec.dataset().name(), "kvpr");
  EXPECT_EQ(wide[4 + 3].spec.context_length(), 2048);
  EXPECT_EQ(wide[4 + 3].spec.model(), "artifact:<job 0>/init_model");
  EXPECT_EQ(wide[4 + 4].spec.model(), "artifact:<job 0>/model");
  EXPECT_EQ(wide[4 + 8].depends_on, 1);
}

// The analyses' fields are checked as an EXTRACT sweep's, named as in one.
TEST(TrainSweep, AnalysesFieldsAreCheckedLikeAnExtractSweeps) {
  auto error_of = [](const std::function<void(SweepSpec&)>& edit) {
    SweepSpec spec = TrainSweep();
    spec.add_analyses("intertoken_cos");
    edit(spec);
    return ValidateSweepSpec(spec);
  };
  using absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_analyses(0, "intertoken"); }),
              StatusIs(kInvalidArgument, "spec.analyses[0]: unknown analysis 'intertoken'"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.set_num_prompts(-2); }),
              StatusIs(kInvalidArgument, "spec.num_prompts: -2 is outside"));
  EXPECT_THAT(error_of([](SweepSpec& s) {
                s.add_datasets()->set_name("kvpr");
                s.add_context_lengths(512);
              }),
              StatusIs(kInvalidArgument, "spec.context_lengths[0]: too short for spec.datasets[0]"));
  // By default the analyses run on the trained task at its length (512),
  // which a KVPR data set of 11 classes does not fit.
  EXPECT_THAT(error_of([](SweepSpec& s) { s.add_datasets()->set_name("kvpr"); }),
              StatusIs(kInvalidArgument, "spec.context_lengths[0]: too short"));
  EXPECT_THAT(error_of([](SweepSpec& s) { s.mutable_probe()->set_task("kvpr"); }),
              StatusIs(kInvalidArgument, "spec.probe: does not apply"));
  EXPECT_TRUE(error_of([](SweepSpec& s) { s.add_layers(-1); }).ok());
}

layerflow::v1::Job TrainJob() {
  SweepSpec spec = TrainSweep();
  spec.mutable_train()->set_steps(1000);
  spec.mutable_train()->set_eval_every(100);
  layerflow::v1::Job job;
  job.set_job_id("sw-1-0");
  *job.mutable_spec() = ExpandSweep(WithDefaults(spec))[0];
  job.set_chunks_total(ChunksTotal(job.spec()));
  return job;
}

layerflow::v1::ResultChunk ChunkWith(int64_t sequence, const std::string& metric, int32_t step,
                                     int64_t count = 1) {
  layerflow::v1::ResultChunk chunk;
  chunk.set_job_id("sw-1-0");
  chunk.set_lease_id("lease");
  chunk.set_sequence(sequence);
  layerflow::v1::MetricStat* stat = chunk.add_stats();
  stat->set_metric(metric);
  stat->set_layer(0);
  stat->set_position(step);
  stat->set_sum(1.0);
  stat->set_sum_sq(1.0);
  stat->set_count(count);
  return chunk;
}

TEST(TrainChunks, RowsAtTheirStepWithinTheChunk) {
  const layerflow::v1::Job job = TrainJob();
  ASSERT_EQ(job.chunks_total(), 10);
  EXPECT_TRUE(ValidateChunkForJob(ChunkWith(2, "eval_acc", 300, 256), job).ok());
  EXPECT_TRUE(ValidateChunkForJob(ChunkWith(2, "train_loss", 300, 100), job).ok());
  // An early-stopped job's later chunks are empty.
  layerflow::v1::ResultChunk empty = ChunkWith(9, "lr", 1);
  empty.clear_stats();
  EXPECT_TRUE(ValidateChunkForJob(empty, job).ok());
  using absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(ValidateChunkForJob(ChunkWith(2, "adjacent_cos", 300), job),
              StatusIs(kInvalidArgument,
                       "chunk.stats[0].metric: 'adjacent_cos' is not a "
                       "result of job sw-1-0 (a TRAIN job"));
  EXPECT_THAT(ValidateChunkForJob(ChunkWith(2, "eval_acc", 301), job),
              StatusIs(kInvalidArgument,
                       "chunk.stats[0].position: 301 is not a step in [1, "
                       "300]"));
  EXPECT_THAT(ValidateChunkForJob(ChunkWith(2, "train_loss", 300, 5000), job),
              StatusIs(kInvalidArgument, "chunk.stats[0].count: 5000 values"));
  EXPECT_THAT(ValidateChunkForJob(ChunkWith(10, "eval_acc", 300), job),
              StatusIs(kInvalidArgument, "chunk.sequence: 10 is outside [0, 10)"));
}

}  // namespace
}  // namespace layerflow::server

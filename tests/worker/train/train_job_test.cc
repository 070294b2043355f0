// RunTrainJob (worker/runtime/train_job.h): the chunks and their rows, the
// early stop, and a killed job resumed from its last saved state giving
// the chunks and the checkpoint of the job that never stopped; the choice
// of the state a resumed lease starts from.
#include "worker/runtime/train_job.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "gtest/gtest.h"
#include "worker/train/trainer.h"

namespace layerflow::worker {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TrainJobConfig TinyJob() {
  TrainJobConfig config;
  config.architecture = "gpt_neox";
  config.seed = 3;
  catalog::TrainSettings& s = config.settings;
  s.vocab = 32;
  s.length = 32;
  s.pairs = 4;
  s.width = 32;
  s.steps = 20;
  s.batch = 8;
  s.eval_every = 5;
  s.save_every = 10;
  s.eval_examples = 16;
  s.warmup = 2;
  s.lr = 3e-3;
  s.target_accuracy = 1.0;  // not reached in 20 steps
  config.settings = catalog::WithTrainDefaults(s);
  return config;
}

// What a run hands its hooks, kept.
struct Recorded {
  std::vector<ChunkResult> chunks;
  std::map<int64_t, std::string> states;  // step -> file bytes
  std::vector<std::string> init_models;    // model.safetensors bytes, a call each
  TrainJobHooks Hooks(const std::string& dir) {
    TrainJobHooks hooks;
    hooks.save_init_model = [this](const std::string& model_dir) {
      init_models.push_back(ReadFile(model_dir + "/model.safetensors"));
      return absl::OkStatus();
    };
    hooks.stream = [this](const ChunkResult& c) {
      chunks.push_back(c);
      return absl::OkStatus();
    };
    hooks.save_state = [this, dir](int64_t step, const std::string& path) {
      states[step] = ReadFile(path);
      return absl::OkStatus();
    };
    return hooks;
  }
};

const MetricStat* Row(const ChunkResult& chunk, const std::string& metric) {
  for (const MetricStat& s : chunk.stats) {
    if (s.metric == metric) return &s;
  }
  return nullptr;
}

TEST(TrainJobTest, ChunksRowsStatesAndTheLastChunkHeldBack) {
  Recorded rec;
  absl::StatusOr<TrainJobOutcome> outcome =
      RunTrainJob(TinyJob(), DeviceConfig{}, "", rec.Hooks("/tmp"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  // Chunks 0..2 streamed, chunk 3 (steps 16..20) held back with the model.
  ASSERT_EQ(rec.chunks.size(), 3u);
  EXPECT_EQ(outcome->final_chunk.sequence, 3);
  EXPECT_EQ(outcome->steps, 20);
  EXPECT_FALSE(outcome->early_stopped);
  // States at the chunk ends that are multiples of save_every, the last
  // step's excepted (the checkpoint stands for it).
  ASSERT_EQ(rec.states.size(), 1u);
  EXPECT_EQ(rec.states.begin()->first, 10);
  const ChunkResult& c1 = rec.chunks[1];
  const MetricStat* loss = Row(c1, "train_loss");
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->position, 10);  // chunk 1 ends at step 10
  EXPECT_EQ(loss->count, 5);      // steps 6..10
  EXPECT_EQ(loss->layer, 0);
  const MetricStat* eval = Row(c1, "eval_acc");
  ASSERT_NE(eval, nullptr);
  EXPECT_EQ(eval->count, 16);
  EXPECT_GE(eval->sum, 0);
  EXPECT_LE(eval->sum, 16);
  const MetricStat* lr = Row(c1, "lr");
  ASSERT_NE(lr, nullptr);
  EXPECT_DOUBLE_EQ(lr->sum, catalog::TrainLearningRate(TinyJob().settings, 10));
  EXPECT_EQ(Row(c1, "train_stopped"), nullptr);
  EXPECT_NE(ReadFile(outcome->model_dir + "/config.json").find("\"model_type\": \"gpt_neox\""),
            std::string::npos);
  EXPECT_FALSE(ReadFile(outcome->model_dir + "/model.safetensors").empty());
}

TEST(TrainJobTest, StopsAtTheTargetAccuracy) {
  TrainJobConfig config = TinyJob();
  config.settings.target_accuracy = 1e-9;  // any evaluation reaches it
  Recorded rec;
  absl::StatusOr<TrainJobOutcome> outcome =
      RunTrainJob(config, DeviceConfig{}, "", rec.Hooks("/tmp"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(rec.chunks.empty());
  EXPECT_TRUE(outcome->early_stopped);
  EXPECT_EQ(outcome->steps, 5);
  EXPECT_EQ(outcome->final_chunk.sequence, 0);
  const MetricStat* stopped = Row(outcome->final_chunk, "train_stopped");
  ASSERT_NE(stopped, nullptr);
  EXPECT_EQ(stopped->sum, 5);
}

// A job killed after its chunk 2 (steps 11..15) was streamed: the coordinator
// resumes it at chunk 3, whose lease starts from the state at step 10 and
// recomputes chunk 2. Every chunk and the checkpoint equal the run that was
// never killed (the same data from the seed, the moments from the state).
TEST(TrainJobTest, KilledJobResumesFromItsLastSavedState) {
  Recorded straight;
  absl::StatusOr<TrainJobOutcome> whole =
      RunTrainJob(TinyJob(), DeviceConfig{}, "", straight.Hooks("/tmp"));
  ASSERT_TRUE(whole.ok()) << whole.status();

  Recorded killed;
  TrainJobHooks hooks = killed.Hooks("/tmp");
  hooks.stopped = [&killed] { return killed.chunks.size() == 3; };
  absl::StatusOr<TrainJobOutcome> cut = RunTrainJob(TinyJob(), DeviceConfig{}, "", hooks);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kAborted);
  ASSERT_EQ(killed.chunks.size(), 3u);
  ASSERT_EQ(killed.states.count(10), 1u);

  const std::string job = "sw-1-0";
  const std::string chosen =
      SelectTrainState({TrainStateArtifactName(job, 10), TrainStateArtifactName(job, 20)}, job,
                       TinyJob().settings, /*resume_from_sequence=*/3);
  ASSERT_EQ(chosen, TrainStateArtifactName(job, 10));
  const std::string state = "/tmp/lf_train_job_test_state.safetensors";
  std::ofstream(state, std::ios::binary) << killed.states[10];

  Recorded resumed;
  absl::StatusOr<TrainJobOutcome> rest =
      RunTrainJob(TinyJob(), DeviceConfig{}, state, resumed.Hooks("/tmp"));
  std::remove(state.c_str());
  ASSERT_TRUE(rest.ok()) << rest.status();
  ASSERT_EQ(resumed.chunks.size(), 1u);  // chunk 2 again; chunk 3 is the final one
  EXPECT_EQ(resumed.chunks[0].sequence, 2);
  auto same_rows = [](const ChunkResult& a, const ChunkResult& b) {
    ASSERT_EQ(a.stats.size(), b.stats.size());
    for (size_t i = 0; i < a.stats.size(); ++i) {
      EXPECT_EQ(a.stats[i].metric, b.stats[i].metric);
      EXPECT_EQ(a.stats[i].sum, b.stats[i].sum) << a.stats[i].metric;
      EXPECT_EQ(a.stats[i].count, b.stats[i].count);
    }
  };
  same_rows(resumed.chunks[0], straight.chunks[2]);
  same_rows(rest->final_chunk, whole->final_chunk);
  EXPECT_EQ(ReadFile(rest->model_dir + "/model.safetensors"),
            ReadFile(whole->model_dir + "/model.safetensors"));
}

// The before-training side of a trained-vs-random comparison: a run from
// scratch stores the model it starts from (the trainer's own step-0 export,
// not the trained one), once; a resumed run, whose first attempt stored it,
// stores none.
TEST(TrainJobTest, StoresTheInitModelOnceBeforeTraining) {
  Recorded fresh;
  absl::StatusOr<TrainJobOutcome> whole =
      RunTrainJob(TinyJob(), DeviceConfig{}, "", fresh.Hooks("/tmp"));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(fresh.init_models.size(), 1u);

  train::TrainRun run;
  run.architecture = TinyJob().architecture;
  run.seed = TinyJob().seed;
  run.settings = TinyJob().settings;
  absl::StatusOr<std::unique_ptr<train::Trainer>> untrained = train::Trainer::Create(run);
  ASSERT_TRUE(untrained.ok()) << untrained.status();
  absl::StatusOr<std::string> dir = MakeTempPath("lf_init_model_test", true);
  ASSERT_TRUE(dir.ok()) << dir.status();
  ASSERT_TRUE((*untrained)->ExportHuggingFace(*dir).ok());
  EXPECT_EQ(fresh.init_models[0], ReadFile(*dir + "/model.safetensors"));
  RemoveTree(*dir);
  EXPECT_NE(fresh.init_models[0], ReadFile(whole->model_dir + "/model.safetensors"));

  const std::string state = "/tmp/lf_train_job_test_init_state.safetensors";
  std::ofstream(state, std::ios::binary) << fresh.states[10];
  Recorded resumed;
  absl::StatusOr<TrainJobOutcome> rest =
      RunTrainJob(TinyJob(), DeviceConfig{}, state, resumed.Hooks("/tmp"));
  std::remove(state.c_str());
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_TRUE(resumed.init_models.empty());
}

// A failed init upload fails the job before any step or chunk, naming what
// was being stored.
TEST(TrainJobTest, AFailedInitModelUploadFailsTheJobFirst) {
  Recorded rec;
  TrainJobHooks hooks = rec.Hooks("/tmp");
  hooks.save_init_model = [](const std::string&) {
    return absl::ResourceExhaustedError("artifact quota");
  };
  absl::StatusOr<TrainJobOutcome> outcome = RunTrainJob(TinyJob(), DeviceConfig{}, "", hooks);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(outcome.status().message().find("init model"), std::string::npos)
      << outcome.status();
  EXPECT_TRUE(rec.chunks.empty());
  EXPECT_TRUE(rec.states.empty());
}

TEST(TrainJobTest, SelectTrainStateTakesTheLatestCommittedChunkEnd) {
  const catalog::TrainSettings s = TinyJob().settings;  // eval 5, save 10, 20 steps
  const std::string job = "sw-9-1";
  const std::vector<std::string> names = {TrainStateArtifactName(job, 10),
                                          TrainStateArtifactName(job, 20),
                                          TrainStateArtifactName("sw-9-10", 10),  // another job's
                                          job + "/train_state/junk", job + "/model/config.json"};
  EXPECT_EQ(SelectTrainState(names, job, s, 0), "");  // nothing committed: from scratch
  EXPECT_EQ(SelectTrainState(names, job, s, 1), "");  // chunk 0 ends at step 5
  EXPECT_EQ(SelectTrainState(names, job, s, 2), TrainStateArtifactName(job, 10));
  EXPECT_EQ(SelectTrainState(names, job, s, 3), TrainStateArtifactName(job, 10));
  // A state uploaded before its chunk's commit is not used until the commit.
  EXPECT_EQ(SelectTrainState(names, job, s, 4), TrainStateArtifactName(job, 20));
  EXPECT_EQ(TrainStateArtifactName(job, 10), "sw-9-1/train_state/000000000010");
}

}  // namespace
}  // namespace layerflow::worker

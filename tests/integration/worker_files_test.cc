// Regression (issue 14, item 2), end to end: a coordinator and a real
// layerflow-worker process started with --model-root. Jobs naming a model
// outside the root, a checkpoint whose index climbs out of its folder, and
// one whose shard is a FIFO all fail at once with the reason, and no job
// error shows the worker's own folders.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/worker_process.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"
#include "tests/server/test_util.h"

namespace layerflow {
namespace {

namespace v1 = ::layerflow::v1;
using ::testing::HasSubstr;
using ::testing::Not;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A GPT-NeoX config.json that parses and validates (the loader gets as far
// as the weights).
constexpr char kConfig[] = R"({"model_type": "gpt_neox", "vocab_size": 512, "hidden_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
  "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true,
  "layer_norm_eps": 1e-5})";

TEST(WorkerFiles, JobsNamingFilesOutsideTheirFolderFailWithoutLeakingPaths) {
  const server::testing::TempDir dir;
  const std::string root = dir.File("root");
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  // ./climb: its index names a shard one folder up, where a file waits.
  ASSERT_EQ(mkdir((root + "/climb").c_str(), 0755), 0);
  WriteText(root + "/climb/config.json", kConfig);
  WriteText(root + "/climb/model.safetensors.index.json",
            R"({"weight_map": {"gpt_neox.embed_in.weight": "../secret.safetensors"}})");
  WriteText(root + "/secret.safetensors", "secret");
  // ./fifo: its only shard is a FIFO (reading it would block for ever).
  ASSERT_EQ(mkdir((root + "/fifo").c_str(), 0755), 0);
  WriteText(root + "/fifo/config.json", kConfig);
  WriteText(root + "/fifo/pytorch_model.bin.index.json",
            R"({"weight_map": {"gpt_neox.embed_in.weight": "shard.bin"}})");
  ASSERT_EQ(mkfifo((root + "/fifo/shard.bin").c_str(), 0644), 0);
  // Outside the root: a real checkpoint folder the worker must not touch.
  const std::string outside = dir.File("outside");
  ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
  WriteText(outside + "/config.json", kConfig);

  auto server = server::CoordinatorServer::Start(integration::LoopbackOptions(dir.File("lf.db")));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());
  auto stub =
      v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));

  v1::SubmitSweepRequest submit;
  v1::SweepSpec* spec = submit.mutable_spec();
  spec->set_name("files");
  spec->add_models(outside);       // absolute, outside the root
  spec->add_models("../outside");  // climbing out of the root
  spec->add_models("./climb");
  spec->add_models("./fifo");
  spec->set_num_prompts(1);
  v1::SubmitSweepResponse submitted;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->SubmitSweep(&context, submit, &submitted).ok());
  }

  auto worker = WorkerProcess::Spawn({.coordinator_address = address,
                                      .name = "files",
                                      .device = "cpu",
                                      .binary = LAYERFLOW_WORKER_BINARY,
                                      .model_roots = {root}});
  ASSERT_TRUE(worker.ok()) << worker.status();

  // Every job fails at once (nothing blocks on the FIFO).
  v1::Sweep sweep;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext context;
    v1::GetSweepRequest get;
    get.set_sweep_id(submitted.sweep_id());
    ASSERT_TRUE(stub->GetSweep(&context, get, &sweep).ok());
    if (sweep.state() != v1::SWEEP_STATE_ACTIVE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(sweep.state(), v1::SWEEP_STATE_FAILED);
  EXPECT_EQ(sweep.jobs_failed(), 4);

  v1::ListJobsRequest list;
  list.set_sweep_id(submitted.sweep_id());
  v1::ListJobsResponse jobs;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->ListJobs(&context, list, &jobs).ok());
  }
  ASSERT_EQ(jobs.jobs_size(), 4);
  const std::string not_under =
      "': outside this worker's model folders (--model-root, the Hugging Face cache); "
      "nothing outside them is read";
  EXPECT_THAT(jobs.jobs(0).error(),
              HasSubstr("PERMISSION_DENIED: model: model '" + outside + not_under));
  EXPECT_THAT(jobs.jobs(1).error(),
              HasSubstr("PERMISSION_DENIED: model: model '../outside" + not_under));
  EXPECT_THAT(jobs.jobs(2).error(),
              HasSubstr("INVALID_ARGUMENT: model ./climb: model.safetensors.index.json: "
                        "weight_map['gpt_neox.embed_in.weight']: must be a file name in the "
                        "folder, without '/'"));
  EXPECT_THAT(jobs.jobs(3).error(),
              HasSubstr("INVALID_ARGUMENT: model ./fifo: pytorch_model.bin.index.json: "
                        "weight_map['gpt_neox.embed_in.weight']: shard.bin: a FIFO, not a "
                        "regular file"));
  for (const v1::Job& job : jobs.jobs()) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
    EXPECT_THAT(job.error(), Not(HasSubstr(root))) << "a worker folder in a job error";
  }
  (*worker)->Stop();
  (*server)->Shutdown();
}

}  // namespace
}  // namespace layerflow

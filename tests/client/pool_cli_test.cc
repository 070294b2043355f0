// `layerflow workers` and `layerflow watch` (its queue) against a real
// in-process coordinator, with workers speaking the real protocol.
#include <atomic>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "report/output.h"
#include "server/auth/token_store.h"
#include "server/coordinator_server.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::client {
namespace {

using ::layerflow::server::testing::OneStatChunk;
using ::layerflow::server::testing::TempDir;
using ::testing::HasSubstr;

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
};

CliResult RunCommand(std::vector<std::string> args) {
  std::ostringstream out, err;
  CliEnvironment env;
  env.out = &out;
  env.err = &err;
  std::vector<const char*> argv = {"layerflow"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  CliResult r;
  r.code = RunCli(static_cast<int>(argv.size()), argv.data(), env);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// A coordinator on loopback and raw worker-protocol calls.
class PoolCliTest : public ::testing::Test {
 protected:
  void Start(const std::string& auth_db = "") {
    server::CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "";
    options.db_path = dir_.File("lf.db");
    options.auth_db_path = auth_db;
    options.quarantine_after = 1;
    options.retry_backoff_ms = 0;
    auto server = server::CoordinatorServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    coordinator_ = v1::Coordinator::NewStub(channel);
    worker_ = v1::WorkerProtocol::NewStub(channel);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  void Auth(grpc::ClientContext* context) {
    if (!worker_token_.empty()) context->AddMetadata("authorization", "Bearer " + worker_token_);
  }

  std::string Register(const std::string& name, int gpus) {
    v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.mutable_capabilities()->set_device_type("cuda");
    request.mutable_capabilities()->set_gpu_count(gpus);
    v1::RegisterWorkerResponse response;
    grpc::ClientContext context;
    Auth(&context);
    const grpc::Status status = worker_->RegisterWorker(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    // The listing is in registration order, by the millisecond: one apart.
    absl::SleepFor(absl::Milliseconds(2));
    return response.worker_id();
  }

  std::string Submit(int jobs, const std::string& token = "") {
    v1::SubmitSweepRequest request;
    request.mutable_spec()->set_name("pool-cli");
    request.mutable_spec()->add_models("pythia-tiny");
    for (int s = 0; s < jobs; ++s) request.mutable_spec()->add_seeds(s);
    request.mutable_spec()->set_num_prompts(2);
    request.mutable_spec()->set_prompts_per_chunk(2);
    v1::SubmitSweepResponse response;
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    const grpc::Status status = coordinator_->SubmitSweep(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.sweep_id();
  }

  v1::LeaseJobResponse Lease(const std::string& worker) {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker);
    v1::LeaseJobResponse response;
    grpc::ClientContext context;
    Auth(&context);
    const grpc::Status status = worker_->LeaseJob(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.leased());
    return response;
  }

  void Complete(const v1::LeaseJobResponse& lease) {
    const v1::ResultChunk chunk = OneStatChunk(lease);
    {
      v1::StreamResultsResponse response;
      grpc::ClientContext context;
      Auth(&context);
      auto writer = worker_->StreamResults(&context, &response);
      writer->Write(chunk);
      writer->WritesDone();
      const grpc::Status status = writer->Finish();
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
    v1::CompleteJobRequest request;
    request.set_job_id(lease.job().job_id());
    request.set_lease_id(lease.lease_id());
    v1::CompleteJobResponse response;
    grpc::ClientContext context;
    Auth(&context);
    const grpc::Status status = worker_->CompleteJob(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  void FailWithHostError(const v1::LeaseJobResponse& lease) {
    v1::FailJobRequest request;
    request.set_job_id(lease.job().job_id());
    request.set_lease_id(lease.lease_id());
    request.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
    request.set_error("CUDA out of memory");
    v1::FailJobResponse response;
    grpc::ClientContext context;
    Auth(&context);
    const grpc::Status status = worker_->FailJob(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  v1::Sweep GetSweep(const std::string& sweep_id) {
    v1::GetSweepRequest request;
    request.set_sweep_id(sweep_id);
    v1::Sweep sweep;
    grpc::ClientContext context;
    EXPECT_TRUE(coordinator_->GetSweep(&context, request, &sweep).ok());
    return sweep;
  }

  TempDir dir_;
  std::unique_ptr<server::CoordinatorServer> server_;
  std::string address_;
  std::unique_ptr<v1::Coordinator::Stub> coordinator_;
  std::unique_ptr<v1::WorkerProtocol::Stub> worker_;
  std::string worker_token_;
};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST_F(PoolCliTest, WorkersListsHostsGpusRunningAndQuarantined) {
  Start();
  const std::string a = Register("gpu-a:11", 2);
  const std::string b = Register("gpu-b:12", 4);
  const std::string c = Register("gpu-c", 2);
  const std::string sweep = Submit(4);
  Complete(Lease(a));                          // job 0 succeeds on A
  const v1::LeaseJobResponse on_b = Lease(b);  // job 1 runs on B
  FailWithHostError(Lease(c));                 // job 2: C quarantined

  const CliResult r = RunCommand({"--coordinator", address_, "workers"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;
  EXPECT_THAT(lines[0],
              ::testing::MatchesRegex("WORKER +HOST +DEVICE +GPUS +STATE +JOB +LAST SEEN"));
  EXPECT_THAT(lines[1], ::testing::MatchesRegex(a + " +gpu-a +cuda +2 +idle +- +[0-9]+ s ago"));
  EXPECT_THAT(lines[2], ::testing::MatchesRegex(b + " +gpu-b +cuda +4 +running +" +
                                                on_b.job().job_id() + " +[0-9]+ s ago"));
  EXPECT_THAT(lines[3],
              ::testing::MatchesRegex(c + " +gpu-c +cuda +2 +quarantined +- +[0-9]+ s ago"));
  // The embedded default acts as admin: the reason is shown.
  EXPECT_THAT(lines[4], ::testing::StartsWith("    reason: "));
  EXPECT_THAT(lines[4], HasSubstr("CUDA out of memory"));
  EXPECT_EQ(lines[5],
            "3 workers on 3 hosts: 1 running, 1 idle, 1 quarantined, 0 gone; GPUs 4 of 8 busy");
  (void)sweep;
}

TEST_F(PoolCliTest, WatchShowsQueuePositionsAndExpectedStarts) {
  Start();
  const std::string a = Register("gpu-a:11", 2);
  const std::string b = Register("gpu-b:12", 4);
  const std::string sweep = Submit(4);
  Complete(Lease(a));                          // job 0 done: one recent duration
  const v1::LeaseJobResponse on_b = Lease(b);  // job 1 running

  // --once: the progress line and the queue: jobs 2 and 3 at positions 0
  // and 1; A is idle, so job 2 starts now.
  CliResult r = RunCommand({"--coordinator", address_, "watch", sweep, "--once"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  EXPECT_EQ(lines[0], report::FormatProgressLine(GetSweep(sweep)));
  EXPECT_THAT(lines[1], ::testing::StartsWith(
                            "queue: 2 jobs of this sweep queued; the pool: 2 queued, 1 running, "
                            "2 workers; recent jobs "));
  EXPECT_THAT(lines[1], ::testing::EndsWith(" (1)"));
  EXPECT_THAT(lines[2], ::testing::MatchesRegex("  JOB +POSITION +EXPECTED START"));
  EXPECT_THAT(lines[3], ::testing::MatchesRegex("  " + sweep + "-2 +0 +now"));
  // p = 1 with one idle worker: after (1 - 1 + 1) * D / 2, D a few ms.
  EXPECT_THAT(lines[4], ::testing::MatchesRegex("  " + sweep + "-3 +1 +(now|in ~[0-9]+ s)"));

  // The streaming watch prints the queue at once, and again when it
  // empties; the jobs finish meanwhile.
  CliResult streamed;
  std::thread watcher([&] { streamed = RunCommand({"--coordinator", address_, "watch", sweep}); });
  absl::SleepFor(absl::Milliseconds(300));
  Complete(on_b);
  Complete(Lease(a));
  Complete(Lease(a));
  watcher.join();
  EXPECT_EQ(streamed.code, kExitOk) << streamed.err;
  EXPECT_THAT(streamed.err, HasSubstr("queue: 2 jobs of this sweep queued; the pool: 2 queued"));
  EXPECT_THAT(streamed.err, HasSubstr("  " + sweep + "-2  "));
  EXPECT_THAT(streamed.err, HasSubstr("queue: none of this sweep's jobs queued\n"));
  EXPECT_THAT(streamed.err, HasSubstr("sweep " + sweep + " succeeded: 4/4 jobs succeeded"));

  // Errors keep their code and message.
  r = RunCommand({"--coordinator", address_, "watch", "sw-nope", "--once"});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_EQ(r.err, "error: NOT_FOUND: unknown sweep 'sw-nope'\n");
}

TEST_F(PoolCliTest, WithTokensUsersSeeThePoolButNotWhyAndWorkersNothing) {
  std::string alice;
  {
    auto tokens = server::auth::OpenSqliteTokenStore(dir_.File("auth.db"));
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    auto user = (*tokens)->CreateToken("alice", server::auth::Role::kUser);
    auto worker = (*tokens)->CreateToken("pool-worker", server::auth::Role::kWorker);
    ASSERT_TRUE(user.ok() && worker.ok());
    alice = user->token;
    worker_token_ = worker->token;
  }
  Start(dir_.File("auth.db"));
  const std::string a = Register("gpu-a:11", 2);
  const std::string b = Register("gpu-b:12", 4);
  const std::string sweep = Submit(2, alice);
  FailWithHostError(Lease(a));  // A quarantined (B live)

  CliResult r = RunCommand({"--coordinator", address_, "--token", alice, "workers"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("quarantined"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("reason:")));
  EXPECT_THAT(r.out, HasSubstr("2 workers on 2 hosts: 0 running, 1 idle, 1 quarantined, 0 gone"));

  r = RunCommand({"--coordinator", address_, "--token", worker_token_, "workers"});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_THAT(r.err, ::testing::MatchesRegex(
                         "error: PERMISSION_DENIED: ListWorkers needs role user or admin; "
                         "token [0-9a-f]+ of 'pool-worker' has role worker\n"));

  r = RunCommand({"--coordinator", address_, "workers"});
  EXPECT_EQ(r.code, kExitError);
  EXPECT_THAT(r.err, ::testing::StartsWith("error: UNAUTHENTICATED: ListWorkers: no token"));

  r = RunCommand({"--coordinator", address_, "--token", alice, "watch", sweep, "--once"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("queue: 2 jobs of this sweep queued"));
  (void)b;
}

}  // namespace
}  // namespace layerflow::client

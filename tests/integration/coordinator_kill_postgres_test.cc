// kill -9 of the coordinator with a PostgreSQL store (issue 14): a
// layerflow-coordinator PROCESS on a PostgreSQL database that the test
// starts on loopback, and a real worker process, run a sweep; the
// coordinator is killed with SIGKILL in the middle of a job and started
// again on the same port and database. Every job must succeed with every
// chunk counted once, and the results must equal a failure-free run.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "tests/server/postgres_harness.h"

extern char** environ;

namespace layerflow {
namespace {

using namespace std::chrono_literals;

// A child process with stdout and stderr appended to `log`; SIGKILLed at
// destruction unless it was waited for.
class Process {
 public:
  Process(std::vector<std::string> args, const std::string& log) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "spawning " << argv[0];
  }
  ~Process() { Kill(SIGKILL); }
  // Sends `signal` and waits; returns the wait status.
  int Kill(int signal) {
    if (pid_ <= 0) return 0;
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

class CoordinatorKillPostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerflow_coordinator_kill_", getpid());
    std::filesystem::create_directories(dir_);
    auto url = server::testing::PostgresUrlFor(dir_.string());
    ASSERT_TRUE(url.ok()) << url.status();
    url_ = *url;
    port_ = FreeLoopbackPort();
    ASSERT_GT(port_, 0);
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                                         grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    worker_.reset();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Starts layerflow-coordinator and waits until it answers.
  void StartCoordinator() {
    coordinator_ = std::make_unique<Process>(
        std::vector<std::string>{
            LAYERFLOW_COORDINATOR_BINARY, "--listen", absl::StrCat("127.0.0.1:", port_),
            "--db", url_, "--metrics", "", "--artifact-dir", (dir_ / "artifacts").string(),
            // Leases outlive the restart: the job resumes under its lease.
            "--lease-ttl-ms", "10000", "--heartbeat-interval-ms", "200",
            "--reaper-interval-ms", "100", "--retry-backoff-ms", "50"},
        (dir_ / "coordinator.log").string());
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 1s);
      v1::GetSweepRequest request;
      request.set_sweep_id("probe");
      v1::Sweep sweep;
      if (stub_->GetSweep(&ctx, request, &sweep).error_code() == grpc::StatusCode::NOT_FOUND) {
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
    FAIL() << "coordinator did not come up";
  }

  v1::SweepSpec Spec(const std::string& name) {
    v1::SweepSpec spec;
    spec.set_name(name);
    spec.add_models("pythia-tiny");
    for (int seed = 0; seed < 3; ++seed) spec.add_seeds(seed);
    v1::DatasetSpec* kvpr = spec.add_datasets();
    kvpr->set_name("kvpr");
    kvpr->set_num_classes(2);
    spec.add_context_lengths(512);
    spec.set_num_prompts(6);
    spec.set_prompts_per_chunk(1);
    return spec;
  }

  std::string Submit(const v1::SweepSpec& spec) {
    grpc::ClientContext ctx;
    v1::SubmitSweepRequest request;
    *request.mutable_spec() = spec;
    v1::SubmitSweepResponse response;
    grpc::Status status = stub_->SubmitSweep(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.jobs(), 3);
    return response.sweep_id();
  }

  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    grpc::ClientContext ctx;
    v1::ListJobsRequest request;
    request.set_sweep_id(sweep_id);
    v1::ListJobsResponse response;
    grpc::Status status = stub_->ListJobs(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.jobs().begin(), response.jobs().end()};
  }

  v1::Sweep WaitForSweep(const std::string& sweep_id) {
    const auto deadline = std::chrono::steady_clock::now() + 300s;
    v1::Sweep sweep;
    while (std::chrono::steady_clock::now() < deadline) {
      grpc::ClientContext ctx;
      v1::GetSweepRequest request;
      request.set_sweep_id(sweep_id);
      if (stub_->GetSweep(&ctx, request, &sweep).ok() &&
          sweep.state() != v1::SWEEP_STATE_ACTIVE) {
        return sweep;
      }
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "sweep " << sweep_id << " did not finish";
    return sweep;
  }

  // (seed, metric, layer) -> row
  std::map<std::tuple<int64_t, std::string, int>, v1::ResultRow> Results(
      const std::string& sweep_id) {
    std::map<std::tuple<int64_t, std::string, int>, v1::ResultRow> rows;
    std::string token;
    do {
      grpc::ClientContext ctx;
      v1::QueryResultsRequest request;
      request.set_sweep_id(sweep_id);
      request.set_page_token(token);
      v1::QueryResultsResponse response;
      grpc::Status status = stub_->QueryResults(&ctx, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      for (const auto& row : response.rows()) rows[{row.seed(), row.metric(), row.layer()}] = row;
      token = response.next_page_token();
    } while (!token.empty());
    return rows;
  }

  std::filesystem::path dir_;
  std::string url_;
  int port_ = 0;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> worker_;
};

TEST_F(CoordinatorKillPostgresTest, KilledCoordinatorMidJobLosesNothingAndCountsNothingTwice) {
  StartCoordinator();
  const std::string sweep_id = Submit(Spec("killed"));
  worker_ = std::make_unique<Process>(
      std::vector<std::string>{LAYERFLOW_WORKER_BINARY, "--coordinator",
                               absl::StrCat("127.0.0.1:", port_), "--name", "w", "--device",
                               "cpu", "--idle-poll-ms", "50", "--pause-after-chunk-ms", "150"},
      (dir_ / "worker.log").string());

  // Kill the coordinator while a job is half done.
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    for (const v1::Job& job : Jobs(sweep_id)) {
      if (job.state() == v1::JOB_STATE_RUNNING && job.chunks_committed() >= 2 &&
          job.chunks_committed() < job.chunks_total()) {
        const int status = coordinator_->Kill(SIGKILL);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
        killed = true;
        break;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(killed) << "never saw a job half done";
  std::this_thread::sleep_for(1s);  // the worker finds nobody there
  StartCoordinator();

  v1::Sweep sweep = WaitForSweep(sweep_id);
  ASSERT_EQ(sweep.state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(sweep.jobs_succeeded(), 3);
  EXPECT_EQ(sweep.chunks_committed(), 3 * 6);
  for (const v1::Job& job : Jobs(sweep_id)) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.chunks_committed(), job.chunks_total());
  }

  // A failure-free run of the same sweep on the same coordinator.
  const std::string clean_id = Submit(Spec("failure-free"));
  ASSERT_EQ(WaitForSweep(clean_id).state(), v1::SWEEP_STATE_SUCCEEDED);
  auto with_kill = Results(sweep_id);
  auto failure_free = Results(clean_id);
  ASSERT_FALSE(failure_free.empty());
  ASSERT_EQ(with_kill.size(), failure_free.size());
  for (const auto& [key, expected] : failure_free) {
    auto it = with_kill.find(key);
    ASSERT_NE(it, with_kill.end()) << std::get<1>(key) << " layer " << std::get<2>(key);
    const v1::ResultRow& got = it->second;
    // Exactly once: every prompt counted once, none lost, none twice.
    EXPECT_EQ(got.count(), 6) << got.metric() << " layer " << got.layer();
    EXPECT_EQ(expected.count(), 6);
    EXPECT_NEAR(got.value(), expected.value(), 1e-9 * (1 + std::abs(expected.value())))
        << got.metric() << " layer " << got.layer() << " seed " << got.seed();
    EXPECT_NEAR(got.std(), expected.std(), 1e-9 * (1 + std::abs(expected.std())));
  }
}

}  // namespace
}  // namespace layerflow

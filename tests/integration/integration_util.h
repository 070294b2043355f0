// Helpers of the end-to-end tests: child processes (the real worker and
// coordinator binaries), a coordinator's options on loopback, and the
// Coordinator calls the tests poll with. Header-only: each test's
// LAYERFLOW_WORKER_BINARY (a compile definition) is the worker it starts.
#ifndef LAYERFLOW_TESTS_INTEGRATION_INTEGRATION_UTIL_H_
#define LAYERFLOW_TESTS_INTEGRATION_INTEGRATION_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/coordinator_server.h"

extern char** environ;

namespace layerflow::integration {

// A child process, sent `stop_signal` and waited for at destruction unless
// Kill() already did.
class ChildProcess {
 public:
  struct Options {
    // Where its output goes; empty: the test's own stdout and stderr.
    std::filesystem::path log;
    // Only stderr goes to `log`, truncated first; otherwise stdout and
    // stderr are appended to it.
    bool stderr_only = false;
    // "NAME=value" entries added to the test's environment.
    std::vector<std::string> env;
    int stop_signal = SIGTERM;
  };

  ChildProcess(std::vector<std::string> args, Options options) : stop_signal_(options.stop_signal) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> environment;
    std::vector<char*> envp;
    if (!options.env.empty()) {
      for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
      for (auto& e : options.env) environment.push_back(e);
      for (auto& e : environment) envp.push_back(e.data());
      envp.push_back(nullptr);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!options.log.empty()) {
      if (options.stderr_only) {
        posix_spawn_file_actions_addopen(&actions, 2, options.log.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
      } else {
        posix_spawn_file_actions_addopen(&actions, 1, options.log.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
      }
    }
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(),
                               envp.empty() ? environ : envp.data());
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "spawning " << argv[0];
  }
  ~ChildProcess() { Kill(stop_signal_); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Sends `signal` and waits; the wait status (0 when it was already gone).
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
  int stop_signal_;
};

#ifdef LAYERFLOW_WORKER_BINARY
// The command line of a layerflow-worker on the CPU polling the
// coordinator at 127.0.0.1:`port` every 50 ms, then `extra_args`.
inline std::vector<std::string> WorkerCommand(int port, const std::string& name,
                                              std::vector<std::string> extra_args = {}) {
  std::vector<std::string> args = {LAYERFLOW_WORKER_BINARY,
                                   "--coordinator",
                                   absl::StrCat("127.0.0.1:", port),
                                   "--name",
                                   name,
                                   "--device",
                                   "cpu",
                                   "--idle-poll-ms",
                                   "50"};
  for (auto& a : extra_args) args.push_back(std::move(a));
  return args;
}
#endif

// An in-process coordinator on a free loopback port with its store at
// `db_path` and no metrics endpoint.
inline server::CoordinatorOptions LoopbackOptions(const std::string& db_path) {
  server::CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.db_path = db_path;
  options.metrics_address = "";
  return options;
}

inline std::unique_ptr<v1::Coordinator::Stub> CoordinatorStub(int port) {
  return v1::Coordinator::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
}

// A coordinator on a free loopback port, its store in a fresh temporary
// folder named after `name` and the process; a fixture derives from it and
// shortens the timings it needs in Configure, which runs before the start.
class LoopbackCoordinatorTest : public ::testing::Test {
 protected:
  explicit LoopbackCoordinatorTest(const std::string& name)
      : dir_(std::filesystem::temp_directory_path() /
             absl::StrCat("layerflow_", name, "_", getpid())) {}
  virtual void Configure(server::CoordinatorOptions& options) = 0;
  void SetUp() override {
    std::filesystem::create_directories(dir_);
    options_ = LoopbackOptions((dir_ / "store.db").string());
    Configure(options_);
    auto started = server::CoordinatorServer::Start(options_);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    stub_ = CoordinatorStub(server_->port());
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  server::CoordinatorOptions options_;
  std::unique_ptr<server::CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

// pythia-tiny over KVPR at context 512, one job a seed 0..seeds-1 (none:
// one job of the default seed), one prompt a chunk.
inline v1::SweepSpec KvprSweep(const std::string& name, int seeds, int num_prompts) {
  v1::SweepSpec spec;
  spec.set_name(name);
  spec.add_models("pythia-tiny");
  for (int seed = 0; seed < seeds; ++seed) spec.add_seeds(seed);
  // 2 classes keep prompts short (a KVPR prompt holds one pair per class).
  v1::DatasetSpec* kvpr = spec.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(2);
  spec.add_context_lengths(512);
  spec.set_num_prompts(num_prompts);
  spec.set_prompts_per_chunk(1);
  return spec;
}

inline v1::SubmitSweepResponse SubmitSweep(v1::Coordinator::Stub& stub, const v1::SweepSpec& spec) {
  grpc::ClientContext ctx;
  v1::SubmitSweepRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitSweepResponse response;
  grpc::Status status = stub.SubmitSweep(&ctx, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

inline std::vector<v1::Job> ListJobs(v1::Coordinator::Stub& stub, const std::string& sweep_id) {
  grpc::ClientContext ctx;
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep_id);
  v1::ListJobsResponse response;
  grpc::Status status = stub.ListJobs(&ctx, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return {response.jobs().begin(), response.jobs().end()};
}

// How WaitForSweep takes a failed GetSweep.
enum class OnCallError {
  kFail,   // a test failure (the coordinator must stay up)
  kRetry,  // polled again (the coordinator may be restarting)
};

// Polls GetSweep every 100 ms until the sweep is no longer ACTIVE; a test
// failure after `timeout`.
inline v1::Sweep WaitForSweep(v1::Coordinator::Stub& stub, const std::string& sweep_id,
                              std::chrono::seconds timeout,
                              OnCallError on_error = OnCallError::kFail) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  v1::Sweep sweep;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    v1::GetSweepRequest request;
    request.set_sweep_id(sweep_id);
    const bool ok = stub.GetSweep(&ctx, request, &sweep).ok();
    if (on_error == OnCallError::kFail) {
      EXPECT_TRUE(ok);
    }
    if (ok && sweep.state() != v1::SWEEP_STATE_ACTIVE) return sweep;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "sweep " << sweep_id << " did not finish";
  return sweep;
}

// Whether a coordinator answers (NOT_FOUND for an unknown sweep) within
// `timeout`, asked every `poll`.
inline bool WaitUntilServing(v1::Coordinator::Stub& stub, std::chrono::seconds timeout,
                             std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    v1::GetSweepRequest request;
    request.set_sweep_id("probe");
    v1::Sweep sweep;
    if (stub.GetSweep(&ctx, request, &sweep).error_code() == grpc::StatusCode::NOT_FOUND) {
      return true;
    }
    std::this_thread::sleep_for(poll);
  }
  return false;
}

// A sweep's result rows by (seed, metric, layer), every page.
using RowsBySeed = std::map<std::tuple<int64_t, std::string, int>, v1::ResultRow>;
inline RowsBySeed ResultsBySeed(v1::Coordinator::Stub& stub, const std::string& sweep_id) {
  RowsBySeed rows;
  std::string token;
  do {
    grpc::ClientContext ctx;
    v1::QueryResultsRequest request;
    request.set_sweep_id(sweep_id);
    request.set_page_token(token);
    v1::QueryResultsResponse response;
    grpc::Status status = stub.QueryResults(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) break;
    for (const auto& row : response.rows()) rows[{row.seed(), row.metric(), row.layer()}] = row;
    token = response.next_page_token();
  } while (!token.empty());
  return rows;
}

// The rows of a run with a failure equal a failure-free run's, key for key,
// and both counted every one of the `prompts` prompts exactly once.
inline void ExpectSameRowsCountedOnce(const RowsBySeed& got_rows, const RowsBySeed& failure_free,
                                      int64_t prompts) {
  ASSERT_FALSE(failure_free.empty());
  ASSERT_EQ(got_rows.size(), failure_free.size());
  for (const auto& [key, expected] : failure_free) {
    auto it = got_rows.find(key);
    ASSERT_NE(it, got_rows.end()) << std::get<1>(key) << " layer " << std::get<2>(key);
    const v1::ResultRow& got = it->second;
    // Exactly once: every prompt counted once, none lost, none twice.
    EXPECT_EQ(got.count(), prompts) << got.metric() << " layer " << got.layer();
    EXPECT_EQ(expected.count(), prompts);
    EXPECT_NEAR(got.value(), expected.value(), 1e-9 * (1 + std::abs(expected.value())))
        << got.metric() << " layer " << got.layer() << " seed " << got.seed();
    EXPECT_NEAR(got.std(), expected.std(), 1e-9 * (1 + std::abs(expected.std())));
  }
}

}  // namespace layerflow::integration

#endif  // LAYERFLOW_TESTS_INTEGRATION_INTEGRATION_UTIL_H_

// The commands of the `layerflow` CLI, run in-process against a fake
// coordinator: argument handling, exit codes, error printing and what each
// command sends and prints.
#include "client/cli.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "report/output.h"

namespace layerflow::client {
namespace {

using report::FormatJobsTable;
using report::FormatProbeTable;
using report::FormatProgressLine;
using report::FormatResultsCsv;
using report::FormatResultsJson;
using report::FormatResultsSummary;
using report::FormatResultsTable;
using report::OutputFormat;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Records requests and answers from canned state.
class FakeCoordinator final : public v1::Coordinator::Service {
 public:
  grpc::Status SubmitSweep(grpc::ServerContext*, const v1::SubmitSweepRequest* request,
                           v1::SubmitSweepResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    submitted = request->spec();
    if (!submit_error.ok()) return submit_error;
    response->set_sweep_id("sw-1");
    response->set_jobs(4);
    return grpc::Status::OK;
  }
  grpc::Status GetSweep(grpc::ServerContext*, const v1::GetSweepRequest*,
                        v1::Sweep* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    *response = updates.back();
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    list_request = *request;
    for (const v1::Job& job : jobs) {
      if (request->state() == v1::JOB_STATE_UNSPECIFIED || job.state() == request->state()) {
        *response->add_jobs() = job;
      }
    }
    return grpc::Status::OK;
  }
  grpc::Status CancelSweep(grpc::ServerContext*, const v1::CancelSweepRequest* request,
                           v1::Sweep* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    if (request->sweep_id() != "sw-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no sweep '" + request->sweep_id() + "'");
    }
    *response = updates.back();
    response->set_state(v1::SWEEP_STATE_CANCELLED);
    return grpc::Status::OK;
  }
  grpc::Status RetrySweep(grpc::ServerContext*, const v1::RetrySweepRequest* request,
                          v1::Sweep* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    if (request->sweep_id() != "sw-1") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "sweep " + request->sweep_id() + " has no failed or cancelled jobs");
    }
    *response = updates.back();
    response->set_state(v1::SWEEP_STATE_ACTIVE);
    response->set_jobs_succeeded(3);
    response->set_jobs_queued(1);
    return grpc::Status::OK;
  }
  grpc::Status WatchSweep(grpc::ServerContext* context, const v1::WatchSweepRequest*,
                          grpc::ServerWriter<v1::Sweep>* writer) override {
    std::vector<v1::Sweep> to_send;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++calls;
      to_send = updates;
    }
    for (const v1::Sweep& sweep : to_send) writer->Write(sweep);
    if (watch_blocks) {
      // Like a sweep that never progresses: only the client can end it.
      while (!context->IsCancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    return grpc::Status::OK;
  }
  grpc::Status QueryResults(grpc::ServerContext*, const v1::QueryResultsRequest* request,
                            v1::QueryResultsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    query_request = *request;
    for (const v1::ResultRow& row : rows) *response->add_rows() = row;
    return grpc::Status::OK;
  }

  std::mutex mu;
  int calls = 0;
  grpc::Status submit_error = grpc::Status::OK;
  v1::SweepSpec submitted;
  v1::ListJobsRequest list_request;
  v1::QueryResultsRequest query_request;
  std::vector<v1::Sweep> updates;
  std::vector<v1::Job> jobs;
  std::vector<v1::ResultRow> rows;
  std::atomic<bool> watch_blocks{false};
};

v1::Sweep Progress(v1::SweepState state, int succeeded, int failed, int running, int64_t chunks) {
  v1::Sweep sweep;
  sweep.set_sweep_id("sw-1");
  sweep.set_state(state);
  sweep.set_jobs_total(4);
  sweep.set_jobs_succeeded(succeeded);
  sweep.set_jobs_failed(failed);
  sweep.set_jobs_running(running);
  sweep.set_jobs_queued(4 - succeeded - failed - running);
  sweep.set_chunks_committed(chunks);
  sweep.set_chunks_total(16);
  return sweep;
}

v1::ResultRow ResultRow(const std::string& metric, int layer, double value) {
  v1::ResultRow row;
  row.set_sweep_id("sw-1");
  row.set_job_id("j1");
  row.set_model("pythia-tiny");
  row.set_init_scheme("reference");
  row.set_dataset("kvpr");
  row.set_context_length(64);
  row.set_metric(metric);
  row.set_layer(layer);
  row.set_value(value);
  row.set_std(0.01);
  row.set_count(4);
  return row;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = "127.0.0.1:" + std::to_string(port);
    dir_ =
        std::filesystem::temp_directory_path() / ("layerflow-cli-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    fake_.updates = {Progress(v1::SWEEP_STATE_ACTIVE, 0, 0, 1, 0),
                     Progress(v1::SWEEP_STATE_ACTIVE, 2, 0, 1, 9),
                     Progress(v1::SWEEP_STATE_SUCCEEDED, 4, 0, 0, 16)};
  }
  void TearDown() override {
    fake_.watch_blocks = false;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    std::filesystem::remove_all(dir_);
  }

  std::string WriteFile(const std::string& name, const std::string& content) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << content;
    return path;
  }

  // Runs `layerflow --coordinator <fake> ARGS...`.
  int Cli(std::vector<std::string> args, bool with_coordinator = true) {
    out_.str("");
    err_.str("");
    std::vector<std::string> argv_storage = {"layerflow"};
    if (with_coordinator) {
      argv_storage.push_back("--coordinator");
      argv_storage.push_back(address_);
    }
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<const char*> argv;
    for (const std::string& a : argv_storage) argv.push_back(a.c_str());
    CliEnvironment env;
    env.out = &out_;
    env.err = &err_;
    env.start_embedded = start_embedded_;
    return RunCli(static_cast<int>(argv.size()), argv.data(), env);
  }

  FakeCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::filesystem::path dir_;
  std::ostringstream out_;
  std::ostringstream err_;
  EmbeddedStarter start_embedded_;
};

TEST_F(CliTest, SubmitSendsTheParsedSpecAndPrintsIdAndJobs) {
  const std::string file = WriteFile("ok.yaml", "name: t\nmodels: pythia-tiny\nseeds: [0, 1]\n");
  EXPECT_EQ(Cli({"submit", file}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "sweep sw-1: 4 jobs\n");
  EXPECT_EQ(err_.str(), "follow it with: layerflow watch sw-1\n");
  EXPECT_EQ(fake_.submitted.name(), "t");
  EXPECT_THAT(fake_.submitted.seeds(), ::testing::ElementsAre(0, 1));

  EXPECT_EQ(Cli({"submit", "-q", file}), 0);
  EXPECT_EQ(out_.str(), "sw-1\n");
}

TEST_F(CliTest, MalformedFileFailsWithoutContactingTheServer) {
  const std::string file = WriteFile("bad.yaml", "name: t\nseeds: [0, abc]\n");
  EXPECT_EQ(Cli({"submit", file}), kExitError);
  EXPECT_EQ(err_.str(), "error: INVALID_ARGUMENT: " + file +
                            ":2:12: field 'seeds[1]': expected a non-negative "
                            "integer, got 'abc'\n");
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(fake_.calls, 0);
}

TEST_F(CliTest, MissingFileIsNotFound) {
  EXPECT_EQ(Cli({"submit", (dir_ / "nope.yaml").string()}), kExitError);
  EXPECT_EQ(err_.str(),
            "error: NOT_FOUND: sweep file not found: " + (dir_ / "nope.yaml").string() + "\n");
}

TEST_F(CliTest, ServerErrorsArePrintedWithTheirCodeName) {
  fake_.submit_error =
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "models[0]: unknown model 'pythia-7m'");
  const std::string file = WriteFile("ok.yaml", "name: t\nmodels: pythia-7m\n");
  EXPECT_EQ(Cli({"submit", file}), kExitError);
  EXPECT_EQ(err_.str(), "error: INVALID_ARGUMENT: models[0]: unknown model 'pythia-7m'\n");
}

TEST_F(CliTest, DryRunPrintsTheSpecAndContactsNoServer) {
  const std::string file = WriteFile("ok.yaml", "name: t\nmodels: pythia-tiny\n");
  EXPECT_EQ(Cli({"submit", "--dry-run", file}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("\"name\": \"t\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"pythia-tiny\""));
  EXPECT_EQ(fake_.calls, 0);
}

TEST_F(CliTest, UnreachableCoordinatorIsUnavailable) {
  const std::string file = WriteFile("ok.yaml", "name: t\n");
  EXPECT_EQ(Cli({"--coordinator", "127.0.0.1:1", "submit", file}, false), kExitError);
  EXPECT_THAT(err_.str(), StartsWith("error: UNAVAILABLE: "));
  EXPECT_THAT(err_.str(), HasSubstr("(coordinator 127.0.0.1:1)"));
}

TEST_F(CliTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(Cli({}), kExitUsage);
  EXPECT_EQ(Cli({"frobnicate"}), kExitUsage);
  EXPECT_EQ(Cli({"submit"}), kExitUsage);  // FILE is required
  EXPECT_THAT(err_.str(), HasSubstr("FILE"));
  EXPECT_EQ(Cli({"results", "sw-1", "--format", "xml"}), kExitUsage);
  EXPECT_EQ(Cli({"jobs", "--state", "done"}), kExitUsage);
  EXPECT_EQ(Cli({"watch", "sw-1", "--bogus"}), kExitUsage);
  EXPECT_EQ(fake_.calls, 0);
}

TEST_F(CliTest, HelpExitsZeroAndListsCommands) {
  EXPECT_EQ(Cli({"--help"}), 0);
  for (const char* command : {"submit", "run", "watch", "jobs", "results", "cancel",
                              "--coordinator", "LAYERFLOW_COORDINATOR"}) {
    EXPECT_THAT(out_.str(), HasSubstr(command));
  }
  EXPECT_EQ(Cli({"run", "--help"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("--db"));
  EXPECT_THAT(out_.str(), HasSubstr("--metrics"));
}

TEST_F(CliTest, CoordinatorComesFromTheEnvironment) {
  setenv("LAYERFLOW_COORDINATOR", address_.c_str(), 1);
  const int code = Cli({"cancel", "sw-1"}, /*with_coordinator=*/false);
  unsetenv("LAYERFLOW_COORDINATOR");
  EXPECT_EQ(code, 0) << err_.str();
  EXPECT_EQ(out_.str(), "sweep sw-1 cancelled: 4/4 jobs succeeded\n");
}

TEST_F(CliTest, RetryCallsRetrySweepAndPrintsTheSummary) {
  EXPECT_EQ(Cli({"retry", "sw-1"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "sweep sw-1 active: 3/4 jobs succeeded\n");
  EXPECT_EQ(Cli({"retry", "sw-2"}), kExitError);
  EXPECT_EQ(err_.str(), "error: FAILED_PRECONDITION: sweep sw-2 has no failed or cancelled jobs\n");
}

TEST_F(CliTest, CancelUnknownSweepIsNotFound) {
  EXPECT_EQ(Cli({"cancel", "nope"}), kExitError);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: no sweep 'nope'\n");
}

TEST_F(CliTest, ResultsPassesFiltersAndFormats) {
  fake_.rows = {ResultRow("adjacent_cos", 0, 0.5), ResultRow("adjacent_cos", 1, 0.25)};
  EXPECT_EQ(Cli({"results", "sw-1", "--format", "csv", "--model", "pythia-tiny", "--metric",
                 "adjacent_cos", "--job", "j1"}),
            0)
      << err_.str();
  EXPECT_EQ(fake_.query_request.sweep_id(), "sw-1");
  EXPECT_EQ(fake_.query_request.model(), "pythia-tiny");
  EXPECT_EQ(fake_.query_request.metric(), "adjacent_cos");
  EXPECT_EQ(fake_.query_request.job_id(), "j1");
  EXPECT_EQ(out_.str(), FormatResultsCsv(fake_.rows));

  EXPECT_EQ(Cli({"results", "sw-1"}), 0);
  EXPECT_EQ(out_.str(), FormatResultsTable(fake_.rows));
  EXPECT_EQ(Cli({"results", "sw-1", "--format", "json"}), 0);
  EXPECT_EQ(out_.str(), FormatResultsJson(fake_.rows));
}

TEST_F(CliTest, ResultsSummaryPrintsHeadlineFigures) {
  fake_.rows = {ResultRow("intertoken_cos", 0, 0.5), ResultRow("intertoken_cos", 1, 0.25),
                ResultRow("adjacent_cos", 0, 0.75)};
  EXPECT_EQ(Cli({"results", "sw-1", "--summary"}), 0) << err_.str();
  EXPECT_EQ(fake_.query_request.metric(), "");
  EXPECT_EQ(out_.str(), FormatResultsSummary(fake_.rows, OutputFormat::kTable));
  EXPECT_THAT(out_.str(), ::testing::HasSubstr("peak layer"));
  EXPECT_EQ(Cli({"results", "sw-1", "--summary", "--format", "csv"}), 0);
  EXPECT_EQ(out_.str(), FormatResultsSummary(fake_.rows, OutputFormat::kCsv));
}

TEST_F(CliTest, ResultsProbePrintsOnlyTheProbeTable) {
  v1::ResultRow probe_0 = ResultRow("probe_test_acc", 0, 0.4);
  v1::ResultRow probe_1 = ResultRow("probe_test_acc", 1, 0.7);
  probe_0.set_job_id("j2");
  probe_1.set_job_id("j2");
  fake_.rows = {ResultRow("adjacent_cos", 0, 0.5), probe_0, probe_1};
  EXPECT_EQ(Cli({"results", "sw-1", "--probe"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), FormatProbeTable(fake_.rows));
  EXPECT_THAT(out_.str(),
              ::testing::StartsWith("pythia-tiny: best layer 1 (0.70 ± 0.01), final 0.70, "
                                    "drop 0.00\n"));
  EXPECT_EQ(Cli({"results", "sw-1", "--probe", "--format", "csv"}), 0);
  EXPECT_EQ(out_.str(), FormatResultsCsv({probe_0, probe_1}));
  // Without --probe the table appends the probe section after the grids.
  EXPECT_EQ(Cli({"results", "sw-1"}), 0);
  EXPECT_THAT(out_.str(), ::testing::HasSubstr("pythia-tiny: best layer 1"));
  EXPECT_EQ(Cli({"results", "sw-1", "--probe", "--summary"}), kExitUsage);
}

TEST_F(CliTest, JobsFiltersByState) {
  v1::Job job;
  job.set_job_id("j1");
  job.set_state(v1::JOB_STATE_FAILED);
  job.set_error("boom");
  fake_.jobs = {job};
  EXPECT_EQ(Cli({"jobs", "sw-1", "--state", "failed"}), 0) << err_.str();
  EXPECT_EQ(fake_.list_request.sweep_id(), "sw-1");
  EXPECT_EQ(fake_.list_request.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(out_.str(), FormatJobsTable(fake_.jobs));

  EXPECT_EQ(Cli({"jobs"}), 0);
  EXPECT_EQ(fake_.list_request.sweep_id(), "");
  EXPECT_EQ(fake_.list_request.state(), v1::JOB_STATE_UNSPECIFIED);
}

TEST_F(CliTest, WatchPrintsProgressAndSucceeds) {
  EXPECT_EQ(Cli({"watch", "sw-1"}), 0) << err_.str();
  EXPECT_EQ(err_.str(), FormatProgressLine(fake_.updates[0]) + "\n" +
                            FormatProgressLine(fake_.updates[1]) + "\n" +
                            FormatProgressLine(fake_.updates[2]) + "\n" +
                            "sweep sw-1 succeeded: 4/4 jobs succeeded\n");
}

TEST_F(CliTest, WatchOfFailedSweepExitsOneAndNamesFailedJobs) {
  fake_.updates.back() = Progress(v1::SWEEP_STATE_FAILED, 3, 1, 0, 14);
  v1::Job job;
  job.set_job_id("j4");
  job.set_state(v1::JOB_STATE_FAILED);
  job.mutable_spec()->set_model("pythia-70m");
  job.mutable_spec()->set_init_scheme("reference");
  job.mutable_spec()->set_seed(1);
  job.set_attempts(3);
  job.set_error("out of memory");
  fake_.jobs = {job};
  EXPECT_EQ(Cli({"watch", "sw-1"}), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("sweep sw-1 failed: 3/4 jobs succeeded, 1 failed\n"
                                    "job j4 (pythia-70m, init reference, seed 1) failed "
                                    "after 3 attempts: out of memory\n"));
}

TEST_F(CliTest, WatchStreamEndingEarlyIsUnavailable) {
  fake_.updates.pop_back();  // never reaches a final state
  EXPECT_EQ(Cli({"watch", "sw-1"}), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("error: UNAVAILABLE: the coordinator ended the "
                                    "watch of sweep sw-1 before it finished"));
}

// An embedded "cluster" that is just the fake coordinator.
class FakeCluster : public EmbeddedCluster {
 public:
  FakeCluster(std::string address, std::atomic<int>* shutdowns)
      : address_(std::move(address)), shutdowns_(shutdowns) {}
  ~FakeCluster() override {
    if (killer_.joinable()) killer_.join();
  }
  std::string address() const override { return address_; }
  std::string description() const override { return "fake cluster"; }
  void Shutdown() override { ++*shutdowns_; }

  std::string address_;
  std::atomic<int>* shutdowns_;
  std::thread killer_;
};

TEST_F(CliTest, RunSubmitsWatchesPrintsResultsAndShutsDown) {
  std::atomic<int> shutdowns{0};
  EmbeddedOptions seen;
  start_embedded_ = [&](const EmbeddedOptions& options,
                        CallCanceller*) -> absl::StatusOr<std::unique_ptr<EmbeddedCluster>> {
    seen = options;
    return std::make_unique<FakeCluster>(address_, &shutdowns);
  };
  fake_.rows = {ResultRow("adjacent_cos", 0, 0.5), ResultRow("intertoken_cos", 0, 0.25)};
  const std::string file = WriteFile("tiny.yaml", "name: t\nmodels: pythia-tiny\n");
  EXPECT_EQ(Cli({"run", file, "--format", "json", "--db", "/tmp/x.db"}, false), 0) << err_.str();
  EXPECT_EQ(out_.str(), FormatResultsJson(fake_.rows));
  EXPECT_THAT(err_.str(), StartsWith("fake cluster\nsweep sw-1: 4 jobs\n"));
  EXPECT_EQ(seen.db_path, "/tmp/x.db");
  EXPECT_EQ(seen.metrics_address, "");
  EXPECT_EQ(shutdowns.load(), 1);
  EXPECT_EQ(fake_.submitted.models(0), "pythia-tiny");
}

TEST_F(CliTest, RunWithoutFileRunsTheDefaultSweep) {
  std::atomic<int> shutdowns{0};
  start_embedded_ = [&](const EmbeddedOptions&,
                        CallCanceller*) -> absl::StatusOr<std::unique_ptr<EmbeddedCluster>> {
    return std::make_unique<FakeCluster>(address_, &shutdowns);
  };
  EXPECT_EQ(Cli({"run", "--no-figures"}, false), 0) << err_.str();
  // The contrast: random-init Transformers against Mamba and Mamba-2.
  EXPECT_EQ(fake_.submitted.name(), "quickstart");
  EXPECT_THAT(fake_.submitted.models(),
              ::testing::ElementsAre("pythia-160m", "gpt-neo-125m", "mamba-130m", "mamba2-130m"));
  EXPECT_THAT(fake_.submitted.analyses(), ::testing::Contains("intertoken_cos"));
  EXPECT_THAT(fake_.submitted.analyses(), ::testing::Contains("path_energy"));
  EXPECT_EQ(out_.str(), "(no results)\n");
}

// Rows of two models over layers 0..3 (pythia-tiny and mamba-tiny have 2
// blocks: 3 is the final norm), plus path_energy.
std::vector<v1::ResultRow> DepthRows() {
  std::vector<v1::ResultRow> rows;
  for (const char* model : {"pythia-tiny", "mamba-tiny"}) {
    const bool ssm = std::string(model) == "mamba-tiny";
    for (int l = 0; l <= 3; ++l) {
      v1::ResultRow r = ResultRow("intertoken_cos", l, ssm ? 0.01 * (3 - l) : 0.1 + 0.1 * l);
      r.set_model(model);
      r.set_job_id(ssm ? "j2" : "j1");
      r.set_std(0.001 * (l + 1));
      rows.push_back(r);
    }
    v1::ResultRow e = ResultRow("path_energy", 0, ssm ? 12.5 : 3.25);
    e.set_model(model);
    e.set_job_id(ssm ? "j2" : "j1");
    rows.push_back(e);
  }
  return rows;
}

TEST_F(CliTest, RunPrintsTheSummaryAboveTheTablesAndWritesTheFigures) {
  std::atomic<int> shutdowns{0};
  start_embedded_ = [&](const EmbeddedOptions&,
                        CallCanceller*) -> absl::StatusOr<std::unique_ptr<EmbeddedCluster>> {
    return std::make_unique<FakeCluster>(address_, &shutdowns);
  };
  fake_.rows = DepthRows();
  const std::string figures = (dir_ / "figs").string();
  const std::string file = WriteFile("two.yaml", "name: t\nmodels: [pythia-tiny, mamba-tiny]\n");
  EXPECT_EQ(Cli({"run", file, "--figures", figures, "--figure-format", "both"}, false), 0)
      << err_.str();
  // pythia-tiny peaks at the final norm (0.4), mamba-tiny at the embedding (0.03).
  EXPECT_THAT(
      out_.str(),
      StartsWith("model       | init      | itc peak | at layer | final itc | path_energy\n"
                 "------------+-----------+----------+----------+-----------+------------\n"
                 "pythia-tiny | reference |   0.4000 |    final |    0.4000 |        3.25\n"
                 "mamba-tiny  | reference |   0.0300 |        0 |    0.0000 |        12.5\n"));
  EXPECT_THAT(out_.str(), HasSubstr("\nmodel pythia-tiny · init reference"));
  EXPECT_THAT(err_.str(), HasSubstr("figures: 1 figure in " + figures +
                                    "/ (depth_intertoken_cos.png, depth_intertoken_cos.svg; "
                                    "each with a .json of the series drawn)\n"));
  EXPECT_TRUE(std::filesystem::exists(figures + "/depth_intertoken_cos.png"));
  EXPECT_TRUE(std::filesystem::exists(figures + "/depth_intertoken_cos.svg"));
  EXPECT_TRUE(std::filesystem::exists(figures + "/depth_intertoken_cos.json"));
}

TEST_F(CliTest, PlotReadsTheResultsAndTheSidecarHoldsExactlyTheRows) {
  fake_.rows = DepthRows();
  const std::string out = (dir_ / "plots").string();
  EXPECT_EQ(Cli({"plot", "sw-1", "--out", out, "--model", "m", "--job", "j"}), 0) << err_.str();
  // The same request as `layerflow results`.
  EXPECT_EQ(fake_.query_request.sweep_id(), "sw-1");
  EXPECT_EQ(fake_.query_request.model(), "m");
  EXPECT_EQ(fake_.query_request.job_id(), "j");
  EXPECT_EQ(out_.str(), out + "/depth_intertoken_cos.png\n" + out + "/depth_intertoken_cos.json\n");
  std::ifstream in(out + "/depth_intertoken_cos.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  // Every intertoken_cos row of the fake store is one point of its model's
  // line, with its exact value and std; x = layer / 3 (2 blocks + final).
  std::map<std::pair<std::string, int>, const v1::ResultRow*> stored;
  for (const v1::ResultRow& r : fake_.rows) {
    if (r.metric() == "intertoken_cos") stored[{r.model(), r.layer()}] = &r;
  }
  size_t found = 0;
  ASSERT_EQ(j["lines"].size(), 2u);
  for (const auto& line : j["lines"]) {
    const std::string model = line["meta"]["model"];
    EXPECT_EQ(line["label"], model);
    for (size_t k = 0; k < line["ids"].size(); ++k) {
      const v1::ResultRow* r = stored.at({model, line["ids"][k].get<int>()});
      EXPECT_EQ(line["y"][k].get<double>(), r->value());
      EXPECT_EQ(line["std"][k].get<double>(), r->std());
      EXPECT_DOUBLE_EQ(line["x"][k].get<double>(), r->layer() / 3.0);
      ++found;
    }
  }
  EXPECT_EQ(found, stored.size());
  EXPECT_EQ(j["lines"][1]["meta"]["jobs"], "j2");
}

TEST_F(CliTest, PlotErrorsNameTheSweepMetricAndFlag) {
  fake_.rows = DepthRows();
  EXPECT_EQ(Cli({"plot", "sw-1", "--out", (dir_ / "p").string(), "--metric", "cka_all_unbiased"}),
            kExitError);
  EXPECT_THAT(err_.str(),
              HasSubstr("error: INVALID_ARGUMENT: --metric cka_all_unbiased: no figure of sweep "
                        "sw-1 (it has no rows of that metric); its figures' metrics: "
                        "intertoken_cos\n"));
  EXPECT_EQ(Cli({"plot", "sw-1", "--format", "jpeg"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--format"));
  fake_.rows.clear();
  EXPECT_EQ(Cli({"plot", "sw-1", "--model", "pythia-7m"}), kExitError);
  EXPECT_THAT(err_.str(),
              HasSubstr("error: NOT_FOUND: sweep sw-1 has no results of --model pythia-7m\n"));
  EXPECT_EQ(Cli({"plot", "sw-1"}), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("error: FAILED_PRECONDITION: nothing to plot in sweep sw-1: "
                                    "it has no results (yet)\n"));
  // A directory that cannot be made.
  fake_.rows = DepthRows();
  EXPECT_EQ(Cli({"plot", "sw-1", "--out", "/proc/nope/figs"}), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("cannot create the figures directory /proc/nope/figs"));
}

TEST_F(CliTest, RunFailsCleanlyWhenTheWorkerDies) {
  fake_.updates.resize(1);    // the sweep never finishes...
  fake_.watch_blocks = true;  // ...and the stream stays open
  std::atomic<int> shutdowns{0};
  start_embedded_ =
      [&](const EmbeddedOptions&,
          CallCanceller* canceller) -> absl::StatusOr<std::unique_ptr<EmbeddedCluster>> {
    auto cluster = std::make_unique<FakeCluster>(address_, &shutdowns);
    cluster->killer_ = std::thread([canceller] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      canceller->Cancel(absl::InternalError("embedded worker stopped: registration refused"));
    });
    return cluster;
  };
  EXPECT_EQ(Cli({"run"}, false), kExitError);
  EXPECT_THAT(err_.str(),
              HasSubstr("error: INTERNAL: embedded worker stopped: registration refused\n"));
  EXPECT_EQ(shutdowns.load(), 1);
}

TEST_F(CliTest, RunWithoutEmbeddedSupportIsUnimplemented) {
  EXPECT_EQ(Cli({"run"}, false), kExitError);
  EXPECT_THAT(err_.str(), StartsWith("error: UNIMPLEMENTED: "));
}

TEST_F(CliTest, RunWithBadFileFailsBeforeStartingAnything) {
  bool started = false;
  start_embedded_ = [&](const EmbeddedOptions&,
                        CallCanceller*) -> absl::StatusOr<std::unique_ptr<EmbeddedCluster>> {
    started = true;
    return absl::InternalError("unreachable");
  };
  const std::string file = WriteFile("bad.yaml", "name: t\nmodel: x\n");
  EXPECT_EQ(Cli({"run", file}, false), kExitError);
  EXPECT_EQ(err_.str(), "error: INVALID_ARGUMENT: " + file +
                            ":2:1: unknown field 'model' (did you mean 'models'?)\n");
  EXPECT_FALSE(started);
}

// `layerflow inspect` hands every argument, --help included, to the
// layerflow-inspect binary and returns its exit status.
TEST_F(CliTest, InspectRunsTheInspectBinaryWithAllArguments) {
  const std::string log = (dir_ / "inspect_args.txt").string();
  const std::string fake =
      WriteFile("fake-inspect", "#!/bin/sh\nprintf '%s|' \"$@\" > " + log + "\nexit 3\n");
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  setenv("LAYERFLOW_INSPECT_BIN", fake.c_str(), 1);
  EXPECT_EQ(Cli({"inspect", "--model", "pythia-tiny", "--text", "a b", "--help"}, false), 3);
  unsetenv("LAYERFLOW_INSPECT_BIN");
  std::ifstream in(log);
  std::string args((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(args, "--model|pythia-tiny|--text|a b|--help|");
}

TEST_F(CliTest, InspectWithoutTheBinaryIsNotFound) {
  setenv("LAYERFLOW_INSPECT_BIN", "/nonexistent/layerflow-inspect", 1);
  const int code = Cli({"inspect", "--model", "x"}, false);
  unsetenv("LAYERFLOW_INSPECT_BIN");
  // Neither beside the test binary nor in its ../worker/ (build/tests/worker).
  EXPECT_EQ(code, kExitError);
  EXPECT_THAT(err_.str(), StartsWith("error: NOT_FOUND: cannot find the layerflow-inspect"));
  EXPECT_THAT(err_.str(), HasSubstr("/nonexistent/layerflow-inspect ($LAYERFLOW_INSPECT_BIN)"));
}

}  // namespace
}  // namespace layerflow::client

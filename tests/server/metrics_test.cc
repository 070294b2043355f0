// /metrics over loopback HTTP after real gRPC traffic.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "common/checksum.h"
#include "server/auth/token_store.h"
#include "server/coordinator_server.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::OneStatChunk;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::testing::Eq;

// GET http://127.0.0.1:port/metrics; the body, or "" on any error.
std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) reply.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return "";
  }
  return reply.substr(body + 4);
}

// The value of the sample line that starts with `series` exactly; -1 if
// absent.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

TEST(MetricsTest, GaugesAndCountersFollowTheWork) {
  TempDir dir;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.db_path = dir.File("lf.db");
  options.reaper_interval_ms = 20;  // gauges refresh on this tick
  auto server = CoordinatorServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->metrics_port();
  ASSERT_GT(port, 0);

  std::string text = HttpGetMetrics(port);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"queued\"}"), 0);
  EXPECT_EQ(Sample(text, "layerflow_sweeps_submitted_total"), 0);

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto coordinator = v1::Coordinator::NewStub(channel);
  auto worker = v1::WorkerProtocol::NewStub(channel);
  v1::SubmitSweepRequest submit;
  submit.mutable_spec()->set_name("metrics");
  submit.mutable_spec()->add_models("pythia-tiny");
  submit.mutable_spec()->add_seeds(0);
  submit.mutable_spec()->add_seeds(1);
  submit.mutable_spec()->add_seeds(2);
  v1::SubmitSweepResponse submitted;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(coordinator->SubmitSweep(&context, submit, &submitted).ok());
  }
  v1::RegisterWorkerResponse registered;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(worker->RegisterWorker(&context, {}, &registered).ok());
  }
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(registered.worker_id());
  v1::LeaseJobResponse lease;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(worker->LeaseJob(&context, lease_request, &lease).ok());
  }
  ASSERT_TRUE(lease.leased());
  {
    v1::ResultChunk chunk;
    chunk.set_job_id(lease.job().job_id());
    chunk.set_lease_id(lease.lease_id());
    chunk.set_sequence(0);
    v1::StreamResultsResponse response;
    grpc::ClientContext context;
    auto writer = worker->StreamResults(&context, &response);
    writer->Write(chunk);
    writer->Write(chunk);  // a repeat is not counted
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }

  // Gauges refresh on the reaper tick; poll until they show the state.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    text = HttpGetMetrics(port);
    if (Sample(text, "layerflow_jobs{state=\"running\"}") == 1) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"queued\"}"), 2);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"running\"}"), 1);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"succeeded\"}"), 0);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"failed\"}"), 0);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"cancelled\"}"), 0);
  EXPECT_EQ(Sample(text, "layerflow_workers_connected"), 1);
  EXPECT_EQ(Sample(text, "layerflow_sweeps_submitted_total"), 1);
  EXPECT_EQ(Sample(text, "layerflow_chunks_committed_total"), 1);
  EXPECT_EQ(Sample(text, "layerflow_leases_lapsed_total"), 0);
  EXPECT_EQ(Sample(text, "layerflow_artifact_bytes"), 0);

  // An artifact upload shows in layerflow_artifact_bytes at once.
  {
    const std::string data(1000, 'f');
    v1::ArtifactChunk chunk;
    chunk.set_name(lease.job().job_id() + "/features/000000");
    chunk.set_job_id(lease.job().job_id());
    chunk.set_lease_id(lease.lease_id());
    chunk.set_total_bytes(1000);
    chunk.set_data(data);
    chunk.set_crc32c(artifacts::Crc32c(data));
    chunk.set_sha256(artifacts::Sha256Hex(data));
    v1::ArtifactInfo info;
    grpc::ClientContext context;
    auto writer = worker->UploadArtifact(&context, &info);
    writer->Write(chunk);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  text = HttpGetMetrics(port);
  EXPECT_EQ(Sample(text, "layerflow_artifact_bytes"), 1000);

  // Cancel refreshes the gauges at once.
  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::Sweep sweep;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(coordinator->CancelSweep(&context, cancel, &sweep).ok());
  }
  text = HttpGetMetrics(port);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"cancelled\"}"), 3);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"queued\"}"), 0);
  (*server)->Shutdown();
}

TEST(MetricsTest, LapsedLeasesAreCounted) {
  TempDir dir;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.db_path = dir.File("lf.db");
  options.lease_ttl_ms = 30;
  options.heartbeat_interval_ms = 10;
  options.reaper_interval_ms = 10;
  options.retry_backoff_ms = 60'000;  // keeps the job queued after lapsing
  auto server = CoordinatorServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto coordinator = v1::Coordinator::NewStub(channel);
  auto worker = v1::WorkerProtocol::NewStub(channel);
  v1::SubmitSweepRequest submit;
  submit.mutable_spec()->set_name("lapse");
  submit.mutable_spec()->add_models("pythia-tiny");
  v1::SubmitSweepResponse submitted;
  v1::RegisterWorkerResponse registered;
  v1::LeaseJobResponse lease;
  {
    grpc::ClientContext c1, c2, c3;
    ASSERT_TRUE(coordinator->SubmitSweep(&c1, submit, &submitted).ok());
    ASSERT_TRUE(worker->RegisterWorker(&c2, {}, &registered).ok());
    v1::LeaseJobRequest request;
    request.set_worker_id(registered.worker_id());
    ASSERT_TRUE(worker->LeaseJob(&c3, request, &lease).ok());
  }
  ASSERT_TRUE(lease.leased());
  std::string text;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    absl::SleepFor(absl::Milliseconds(20));
    text = HttpGetMetrics((*server)->metrics_port());
  } while (Sample(text, "layerflow_leases_lapsed_total") < 1 && absl::Now() < deadline);
  EXPECT_EQ(Sample(text, "layerflow_leases_lapsed_total"), 1);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"queued\"}"), 1);
  // No heartbeat for far more than 3 intervals: not connected any more.
  EXPECT_EQ(Sample(text, "layerflow_workers_connected"), 0);
}

// A sample's value once the scrape shows `want` (the pool gauges are read
// at each scrape; the job gauges on the reaper tick).
double WaitForSample(int port, const std::string& series, double want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  double value = -1;
  do {
    value = Sample(HttpGetMetrics(port), series);
    if (value == want) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  return value;
}

v1::SweepSpec OneChunkJobs(int jobs) {
  v1::SweepSpec spec;
  spec.set_name("histograms");
  spec.add_models("pythia-tiny");
  for (int s = 0; s < jobs; ++s) spec.add_seeds(s);
  spec.set_num_prompts(2);
  spec.set_prompts_per_chunk(2);
  return spec;
}

// Queue wait, job duration and RPC latency histograms, and the pool gauges,
// after a known sequence of RPCs: 3 jobs, one worker with 2 GPUs; job 0
// succeeds, job 1 fails for good (bad input), one GetSweep is NOT_FOUND.
TEST(MetricsTest, HistogramsAndPoolGaugesFollowTheRpcs) {
  TempDir dir;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.db_path = dir.File("lf.db");
  options.reaper_interval_ms = 20;
  auto server = CoordinatorServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->metrics_port();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto coordinator = v1::Coordinator::NewStub(channel);
  auto worker = v1::WorkerProtocol::NewStub(channel);

  const absl::Time submitted_at = absl::Now();
  v1::SubmitSweepRequest submit;
  *submit.mutable_spec() = OneChunkJobs(3);
  v1::SubmitSweepResponse submitted;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(coordinator->SubmitSweep(&context, submit, &submitted).ok());
  }
  {
    v1::GetSweepRequest request;
    request.set_sweep_id("sw-nope");
    v1::Sweep sweep;
    grpc::ClientContext context;
    const grpc::Status status = coordinator->GetSweep(&context, request, &sweep);
    ASSERT_THAT(status, StatusIs(grpc::StatusCode::NOT_FOUND, Eq("unknown sweep 'sw-nope'")));
  }
  v1::RegisterWorkerRequest reg;
  reg.set_name("gpu-host-1:4242");
  reg.mutable_capabilities()->set_device_type("cuda");
  reg.mutable_capabilities()->set_gpu_count(2);
  v1::RegisterWorkerResponse registered;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(worker->RegisterWorker(&context, reg, &registered).ok());
  }

  std::string text = HttpGetMetrics(port);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"queued\",user=\"anonymous\"}"), 3);
  // Nothing ran yet: no running series.
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"running\",user=\"anonymous\"}"), -1);
  EXPECT_EQ(Sample(text, "layerflow_workers_busy"), 0);
  EXPECT_EQ(Sample(text, "layerflow_gpus_total"), 2);
  EXPECT_EQ(Sample(text, "layerflow_gpus_busy"), 0);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"OK\",method=\"SubmitSweep\","
                   "service=\"Coordinator\"}"),
            1);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"NOT_FOUND\",method="
                   "\"GetSweep\",service=\"Coordinator\"}"),
            1);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"OK\",method="
                   "\"RegisterWorker\",service=\"WorkerProtocol\"}"),
            1);
  EXPECT_GT(Sample(text,
                   "layerflow_rpc_duration_seconds_sum{code=\"OK\",method=\"SubmitSweep\","
                   "service=\"Coordinator\"}"),
            0);
  EXPECT_EQ(Sample(text, "layerflow_queue_wait_seconds_count{kind=\"extract\"}"), -1);

  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(registered.worker_id());
  v1::LeaseJobResponse lease;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(worker->LeaseJob(&context, lease_request, &lease).ok());
  }
  ASSERT_TRUE(lease.leased());
  const double waited = absl::ToDoubleSeconds(absl::Now() - submitted_at);
  const absl::Time leased_at = absl::Now();
  text = HttpGetMetrics(port);
  EXPECT_EQ(Sample(text, "layerflow_queue_wait_seconds_count{kind=\"extract\"}"), 1);
  EXPECT_GE(Sample(text, "layerflow_queue_wait_seconds_sum{kind=\"extract\"}"), 0);
  EXPECT_LE(Sample(text, "layerflow_queue_wait_seconds_sum{kind=\"extract\"}"), waited + 0.002);
  EXPECT_EQ(Sample(text, "layerflow_queue_wait_seconds_bucket{kind=\"extract\",le=\"+Inf\"}"), 1);
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"queued\",user=\"anonymous\"}"), 2);
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"running\",user=\"anonymous\"}"), 1);
  EXPECT_EQ(Sample(text, "layerflow_workers_busy"), 1);
  EXPECT_EQ(Sample(text, "layerflow_gpus_busy"), 2);

  {
    v1::StreamResultsResponse response;
    grpc::ClientContext context;
    auto writer = worker->StreamResults(&context, &response);
    writer->Write(OneStatChunk(lease));
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  {
    v1::CompleteJobRequest complete;
    complete.set_job_id(lease.job().job_id());
    complete.set_lease_id(lease.lease_id());
    v1::CompleteJobResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(worker->CompleteJob(&context, complete, &response).ok());
  }
  const double ran = absl::ToDoubleSeconds(absl::Now() - leased_at);
  text = HttpGetMetrics(port);
  EXPECT_EQ(Sample(text,
                   "layerflow_job_duration_seconds_count{kind=\"extract\",outcome="
                   "\"succeeded\"}"),
            1);
  EXPECT_LE(Sample(text,
                   "layerflow_job_duration_seconds_sum{kind=\"extract\",outcome="
                   "\"succeeded\"}"),
            ran + 0.002);
  EXPECT_EQ(Sample(text, "layerflow_workers_busy"), 0);
  EXPECT_EQ(Sample(text, "layerflow_gpus_busy"), 0);
  // Seen once, so it stays, at 0.
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"running\",user=\"anonymous\"}"), 0);

  // Job 1 fails for good: bad input.
  {
    grpc::ClientContext context;
    ASSERT_TRUE(worker->LeaseJob(&context, lease_request, &lease).ok());
  }
  ASSERT_TRUE(lease.leased());
  {
    v1::FailJobRequest fail;
    fail.set_job_id(lease.job().job_id());
    fail.set_lease_id(lease.lease_id());
    fail.set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    fail.set_error("dataset: unknown data set");
    v1::FailJobResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(worker->FailJob(&context, fail, &response).ok());
  }
  text = HttpGetMetrics(port);
  EXPECT_EQ(Sample(text,
                   "layerflow_job_duration_seconds_count{kind=\"extract\",outcome="
                   "\"failed\"}"),
            1);
  EXPECT_EQ(Sample(text, "layerflow_queue_wait_seconds_count{kind=\"extract\"}"), 2);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"OK\",method="
                   "\"LeaseJob\",service=\"WorkerProtocol\"}"),
            2);
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"queued\",user=\"anonymous\"}"), 1);
  EXPECT_EQ(WaitForSample(port, "layerflow_jobs{state=\"failed\"}", 1), 1);
  (*server)->Shutdown();
}

// With tokens on, the pool gauges count jobs by the user who submitted the
// sweep; the RPC histogram records refused calls with their code.
TEST(MetricsTest, UserJobsFollowSweepOwners) {
  TempDir dir;
  std::string alice, bob, worker_token;
  {
    auto tokens = auth::OpenSqliteTokenStore(dir.File("auth.db"));
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    auto a = (*tokens)->CreateToken("alice", auth::Role::kUser);
    auto b = (*tokens)->CreateToken("bob", auth::Role::kUser);
    auto w = (*tokens)->CreateToken("pool-worker", auth::Role::kWorker);
    ASSERT_TRUE(a.ok() && b.ok() && w.ok());
    alice = a->token;
    bob = b->token;
    worker_token = w->token;
  }
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.db_path = dir.File("lf.db");
  options.auth_db_path = dir.File("auth.db");
  auto server = CoordinatorServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto coordinator = v1::Coordinator::NewStub(channel);
  auto submit_as = [&](const std::string& token, int jobs) {
    v1::SubmitSweepRequest submit;
    *submit.mutable_spec() = OneChunkJobs(jobs);
    v1::SubmitSweepResponse submitted;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    const grpc::Status status = coordinator->SubmitSweep(&context, submit, &submitted);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return submitted.sweep_id();
  };
  submit_as(alice, 2);
  const std::string bobs = submit_as(bob, 1);
  {
    v1::SubmitSweepRequest submit;
    *submit.mutable_spec() = OneChunkJobs(1);
    v1::SubmitSweepResponse submitted;
    grpc::ClientContext context;  // no token
    EXPECT_EQ(coordinator->SubmitSweep(&context, submit, &submitted).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    v1::GetQueueRequest request;
    request.set_sweep_id(bobs);
    v1::GetQueueResponse response;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + alice);
    const grpc::Status status = coordinator->GetQueue(&context, request, &response);
    EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                                 Eq("GetQueue: sweep " + bobs + " is not a sweep of 'alice'")));
  }
  {
    v1::ListWorkersResponse response;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + worker_token);
    const grpc::Status status = coordinator->ListWorkers(&context, {}, &response);
    EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                                 "ListWorkers needs role user or admin; token "));
  }
  const std::string text = HttpGetMetrics((*server)->metrics_port());
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"queued\",user=\"alice\"}"), 2);
  EXPECT_EQ(Sample(text, "layerflow_user_jobs{state=\"queued\",user=\"bob\"}"), 1);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"OK\",method="
                   "\"SubmitSweep\",service=\"Coordinator\"}"),
            2);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"UNAUTHENTICATED\","
                   "method=\"SubmitSweep\",service=\"Coordinator\"}"),
            1);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"PERMISSION_DENIED\","
                   "method=\"GetQueue\",service=\"Coordinator\"}"),
            1);
  EXPECT_EQ(Sample(text,
                   "layerflow_rpc_duration_seconds_count{code=\"PERMISSION_DENIED\","
                   "method=\"ListWorkers\",service=\"Coordinator\"}"),
            1);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace layerflow::server

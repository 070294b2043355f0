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
#include "server/coordinator_server.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::TempDir;

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
    if (send(fd, request.data(), request.size(), 0) ==
        static_cast<ssize_t>(request.size())) {
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

  auto channel = grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()),
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
  auto channel = grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()),
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
  } while (Sample(text, "layerflow_leases_lapsed_total") < 1 &&
           absl::Now() < deadline);
  EXPECT_EQ(Sample(text, "layerflow_leases_lapsed_total"), 1);
  EXPECT_EQ(Sample(text, "layerflow_jobs{state=\"queued\"}"), 1);
  // No heartbeat for far more than 3 intervals: not connected any more.
  EXPECT_EQ(Sample(text, "layerflow_workers_connected"), 0);
}

}  // namespace
}  // namespace layerflow::server

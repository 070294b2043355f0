// The services over real gRPC on 127.0.0.1 (port 0).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <thread>
#include <vector>

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
using ::layerflow::testing::StatusIs;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.db_path = dir_.File("lf.db");
    options.metrics_address = "";
    options.reaper_interval_ms = 50;
    options.artifact_quota_bytes = 4 << 20;
    options.artifact_max_bytes = 3 << 20;
    auto server = CoordinatorServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    EXPECT_EQ(server_->metrics_port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    coordinator_ = v1::Coordinator::NewStub(channel_);
    worker_ = v1::WorkerProtocol::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return context;
  }

  v1::SubmitSweepResponse Submit(int num_prompts, int per_chunk) {
    v1::SubmitSweepRequest request;
    request.mutable_spec()->set_name("svc");
    request.mutable_spec()->add_models("pythia-tiny");
    request.mutable_spec()->set_num_prompts(num_prompts);
    request.mutable_spec()->set_prompts_per_chunk(per_chunk);
    v1::SubmitSweepResponse response;
    grpc::Status status = coordinator_->SubmitSweep(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  v1::LeaseJobResponse RegisterAndLease(std::string* worker_id) {
    v1::RegisterWorkerResponse registered;
    v1::RegisterWorkerRequest register_request;
    register_request.set_name("test-worker");
    EXPECT_TRUE(worker_->RegisterWorker(Context().get(), register_request, &registered).ok());
    *worker_id = registered.worker_id();
    v1::LeaseJobRequest request;
    request.set_worker_id(registered.worker_id());
    v1::LeaseJobResponse lease;
    grpc::Status status = worker_->LeaseJob(Context().get(), request, &lease);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return lease;
  }

  static v1::ResultChunk Chunk(const v1::LeaseJobResponse& lease, int64_t seq,
                               const std::vector<double>& values) {
    v1::ResultChunk chunk;
    chunk.set_job_id(lease.job().job_id());
    chunk.set_lease_id(lease.lease_id());
    chunk.set_sequence(seq);
    v1::MetricStat* stat = chunk.add_stats();
    stat->set_metric("adjacent_cos");
    stat->set_layer(1);
    for (double v : values) {
      stat->set_sum(stat->sum() + v);
      stat->set_sum_sq(stat->sum_sq() + v * v);
      chunk.add_prompt_tokens(100);
    }
    stat->set_count(static_cast<int64_t>(values.size()));
    return chunk;
  }

  TempDir dir_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> coordinator_;
  std::unique_ptr<v1::WorkerProtocol::Stub> worker_;
};

TEST_F(ServiceTest, BadSubmissionIsInvalidArgumentAndStoresNothing) {
  v1::SubmitSweepRequest request;
  request.mutable_spec()->set_name("bad");
  request.mutable_spec()->add_models("pythia-tiny");
  request.mutable_spec()->add_context_lengths(8);
  v1::SubmitSweepResponse response;
  grpc::Status status = coordinator_->SubmitSweep(Context().get(), request, &response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                               "spec.context_lengths[0]: 8 is outside"));
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(coordinator_->ListJobs(Context().get(), {}, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
}

TEST_F(ServiceTest, UnknownSweepIsNotFound) {
  v1::GetSweepRequest request;
  request.set_sweep_id("sw-missing");
  v1::Sweep sweep;
  grpc::Status status = coordinator_->GetSweep(Context().get(), request, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::NOT_FOUND, "sw-missing"));
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id("worker-ghost");
  v1::LeaseJobResponse lease;
  EXPECT_EQ(worker_->LeaseJob(Context().get(), lease_request, &lease).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, FullJobWithWatchResultsAndCancelOfFinishedSweep) {
  const v1::SubmitSweepResponse submitted = Submit(3, 2);  // 2 chunks
  ASSERT_EQ(submitted.jobs(), 1);

  // Watch from the start, collecting every update until the stream ends.
  auto watch_context = Context();
  v1::WatchSweepRequest watch_request;
  watch_request.set_sweep_id(submitted.sweep_id());
  auto reader = coordinator_->WatchSweep(watch_context.get(), watch_request);
  v1::Sweep first;
  ASSERT_TRUE(reader->Read(&first));  // sent at once
  EXPECT_EQ(first.state(), v1::SWEEP_STATE_ACTIVE);
  EXPECT_EQ(first.chunks_committed(), 0);
  std::future<std::pair<std::vector<v1::Sweep>, grpc::Status>> watched =
      std::async(std::launch::async, [&reader] {
        std::vector<v1::Sweep> updates;
        v1::Sweep sweep;
        while (reader->Read(&sweep)) updates.push_back(sweep);
        return std::make_pair(updates, reader->Finish());
      });

  std::string worker_id;
  const v1::LeaseJobResponse lease = RegisterAndLease(&worker_id);
  ASSERT_TRUE(lease.leased());
  EXPECT_EQ(lease.resume_from_sequence(), 0);
  EXPECT_EQ(lease.job().chunks_total(), 2);

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(worker_id);
  heartbeat.set_job_id(lease.job().job_id());
  heartbeat.set_lease_id(lease.lease_id());
  v1::HeartbeatResponse beat;
  ASSERT_TRUE(worker_->Heartbeat(Context().get(), heartbeat, &beat).ok());
  EXPECT_FALSE(beat.cancelled());

  {
    v1::StreamResultsResponse response;
    auto context = Context();
    auto writer = worker_->StreamResults(context.get(), &response);
    ASSERT_TRUE(writer->Write(Chunk(lease, 0, {0.2, 0.4})));
    // A repeat with other numbers: acknowledged, not counted.
    ASSERT_TRUE(writer->Write(Chunk(lease, 0, {5.0, 5.0})));
    ASSERT_TRUE(writer->Write(Chunk(lease, 1, {0.9})));
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.chunks_committed(), 2);
    EXPECT_EQ(response.job_chunks_committed(), 2);
  }
  {
    // A second stream resending chunk 1 commits nothing new.
    v1::StreamResultsResponse response;
    auto context = Context();
    auto writer = worker_->StreamResults(context.get(), &response);
    ASSERT_TRUE(writer->Write(Chunk(lease, 1, {7.0})));
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(response.chunks_committed(), 0);
    EXPECT_EQ(response.job_chunks_committed(), 2);
  }
  v1::CompleteJobRequest complete;
  complete.set_job_id(lease.job().job_id());
  complete.set_lease_id(lease.lease_id());
  v1::CompleteJobResponse completed;
  ASSERT_TRUE(worker_->CompleteJob(Context().get(), complete, &completed).ok());

  // The watch saw progress and ended OK at SUCCEEDED.
  ASSERT_EQ(watched.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto [updates, watch_status] = watched.get();
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_FALSE(updates.empty());
  EXPECT_EQ(updates.back().state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(updates.back().chunks_committed(), 2);
  EXPECT_EQ(updates.back().jobs_succeeded(), 1);
  for (size_t i = 1; i < updates.size(); ++i) {
    EXPECT_GE(updates[i].chunks_committed(), updates[i - 1].chunks_committed());
  }

  // Merged results equal the hand-computed mean and population std of the
  // first-committed values {0.2, 0.4, 0.9}.
  v1::QueryResultsRequest query;
  query.set_sweep_id(submitted.sweep_id());
  v1::QueryResultsResponse results;
  ASSERT_TRUE(coordinator_->QueryResults(Context().get(), query, &results).ok());
  ASSERT_EQ(results.rows_size(), 1);
  const double mean = (0.2 + 0.4 + 0.9) / 3;
  const double var =
      ((0.2 - mean) * (0.2 - mean) + (0.4 - mean) * (0.4 - mean) + (0.9 - mean) * (0.9 - mean)) / 3;
  EXPECT_NEAR(results.rows(0).value(), mean, 1e-12);
  EXPECT_NEAR(results.rows(0).std(), std::sqrt(var), 1e-12);
  EXPECT_EQ(results.rows(0).count(), 3);
  EXPECT_EQ(results.rows(0).layer(), 1);
  EXPECT_EQ(results.rows(0).model(), "pythia-tiny");

  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::Sweep cancelled;
  grpc::Status status = coordinator_->CancelSweep(Context().get(), cancel, &cancelled);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::FAILED_PRECONDITION, "already finished"));
}

TEST_F(ServiceTest, StaleLeaseStreamIsAbortedAndCancelReachesTheWorker) {
  const v1::SubmitSweepResponse submitted = Submit(4, 2);
  std::string worker_id;
  const v1::LeaseJobResponse lease = RegisterAndLease(&worker_id);
  ASSERT_TRUE(lease.leased());
  v1::ResultChunk forged = Chunk(lease, 0, {0.5});
  forged.set_lease_id("lease-0000");
  v1::StreamResultsResponse response;
  auto context = Context();
  auto writer = worker_->StreamResults(context.get(), &response);
  writer->Write(forged);
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::ABORTED, "lapsed"));

  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::Sweep sweep;
  ASSERT_TRUE(coordinator_->CancelSweep(Context().get(), cancel, &sweep).ok());
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_CANCELLED);
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(worker_id);
  heartbeat.set_job_id(lease.job().job_id());
  heartbeat.set_lease_id(lease.lease_id());
  v1::HeartbeatResponse beat;
  ASSERT_TRUE(worker_->Heartbeat(Context().get(), heartbeat, &beat).ok());
  EXPECT_TRUE(beat.cancelled());
}

TEST_F(ServiceTest, HealthCheckAnswersServing) {
  grpc::GenericStub stub(channel_);
  // grpc.health.v1.HealthCheckRequest{service: ""} is the empty message.
  grpc::Slice empty{std::string()};
  grpc::ByteBuffer request(&empty, 1);  // a default ByteBuffer is "no message"
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  auto context = Context();
  stub.UnaryCall(context.get(), "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&done](grpc::Status s) { done.set_value(s); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(ServiceTest, ShutdownEndsOpenWatchesPromptly) {
  const v1::SubmitSweepResponse submitted = Submit(4, 2);
  auto context = Context();
  v1::WatchSweepRequest request;
  request.set_sweep_id(submitted.sweep_id());
  auto reader = coordinator_->WatchSweep(context.get(), request);
  v1::Sweep sweep;
  ASSERT_TRUE(reader->Read(&sweep));
  const absl::Time start = absl::Now();
  server_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  while (reader->Read(&sweep)) {
  }
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  server_->Wait();  // returns after Shutdown
}

TEST_F(ServiceTest, WatchOfUnknownSweepIsNotFound) {
  auto context = Context();
  v1::WatchSweepRequest request;
  request.set_sweep_id("sw-nope");
  auto reader = coordinator_->WatchSweep(context.get(), request);
  v1::Sweep sweep;
  EXPECT_FALSE(reader->Read(&sweep));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

// --- Artifacts ---------------------------------------------------------------

// Uploads `data` in pieces of `piece` bytes under (job, lease); `mutate`
// may break one message.
grpc::Status Upload(v1::WorkerProtocol::Stub& stub, const std::string& name,
                    const std::string& data, const std::string& job_id, const std::string& lease_id,
                    size_t piece, v1::ArtifactInfo* info,
                    const std::function<void(int, v1::ArtifactChunk*)>& mutate = {}) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto writer = stub.UploadArtifact(&context, info);
  size_t offset = 0;
  int i = 0;
  do {
    v1::ArtifactChunk chunk;
    if (offset == 0) {
      chunk.set_name(name);
      chunk.set_job_id(job_id);
      chunk.set_lease_id(lease_id);
      chunk.set_total_bytes(static_cast<int64_t>(data.size()));
    }
    const std::string part = data.substr(offset, piece);
    chunk.set_offset(static_cast<int64_t>(offset));
    chunk.set_data(part);
    chunk.set_crc32c(artifacts::Crc32c(part));
    offset += part.size();
    if (offset >= data.size()) chunk.set_sha256(artifacts::Sha256Hex(data));
    if (mutate) mutate(i, &chunk);
    if (!writer->Write(chunk)) break;  // the server already answered
    ++i;
  } while (offset < data.size());
  writer->WritesDone();
  return writer->Finish();
}

TEST_F(ServiceTest, ArtifactUploadListDownloadUnderALease) {
  Submit(2, 2);
  std::string worker_id;
  const v1::LeaseJobResponse lease = RegisterAndLease(&worker_id);
  ASSERT_TRUE(lease.leased());
  const std::string& job_id = lease.job().job_id();
  // 2.5 MiB: three download messages of at most 1 MiB.
  std::string data(5 << 19, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + (i >> 9));
  const std::string name = job_id + "/features/000000";
  v1::ArtifactInfo info;
  grpc::Status status = Upload(*worker_, name, data, job_id, lease.lease_id(), 300000, &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.name(), name);
  EXPECT_EQ(info.bytes(), static_cast<int64_t>(data.size()));
  EXPECT_EQ(info.sha256(), artifacts::Sha256Hex(data));

  v1::ListArtifactsRequest list;
  list.set_worker_id(worker_id);
  list.set_prefix(job_id + "/features/");
  v1::ListArtifactsResponse listed;
  ASSERT_TRUE(worker_->ListArtifacts(Context().get(), list, &listed).ok());
  ASSERT_EQ(listed.artifacts_size(), 1);
  EXPECT_EQ(listed.artifacts(0).sha256(), info.sha256());

  v1::DownloadArtifactRequest download;
  download.set_worker_id(worker_id);
  download.set_name(name);
  auto context = Context();
  auto reader = worker_->DownloadArtifact(context.get(), download);
  v1::ArtifactChunk chunk;
  std::string received;
  int messages = 0;
  while (reader->Read(&chunk)) {
    if (messages == 0) {
      EXPECT_EQ(chunk.total_bytes(), static_cast<int64_t>(data.size()));
      EXPECT_EQ(chunk.sha256(), info.sha256());
    }
    EXPECT_EQ(chunk.offset(), static_cast<int64_t>(received.size()));
    EXPECT_EQ(chunk.crc32c(), artifacts::Crc32c(chunk.data()));
    EXPECT_LE(chunk.data().size(), 1u << 20);
    received += chunk.data();
    ++messages;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(messages, 3);
  EXPECT_TRUE(received == data);
}

TEST_F(ServiceTest, ArtifactErrorsHaveTheirCodes) {
  Submit(2, 2);
  std::string worker_id;
  const v1::LeaseJobResponse lease = RegisterAndLease(&worker_id);
  ASSERT_TRUE(lease.leased());
  const std::string& job_id = lease.job().job_id();
  const std::string data(1000, 'x');
  v1::ArtifactInfo info;
  // No live lease: ABORTED.
  EXPECT_EQ(Upload(*worker_, "a", data, job_id, "lease-wrong", 400, &info).error_code(),
            grpc::StatusCode::ABORTED);
  // Bad CRC-32C: DATA_LOSS.
  EXPECT_EQ(Upload(*worker_, "a", data, job_id, lease.lease_id(), 400, &info,
                   [](int i, v1::ArtifactChunk* c) {
                     if (i == 1) c->set_crc32c(c->crc32c() + 1);
                   })
                .error_code(),
            grpc::StatusCode::DATA_LOSS);
  // Wrong offset: INVALID_ARGUMENT.
  EXPECT_EQ(Upload(*worker_, "a", data, job_id, lease.lease_id(), 400, &info,
                   [](int i, v1::ArtifactChunk* c) {
                     if (i == 1) c->set_offset(0);
                   })
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Bad name: INVALID_ARGUMENT.
  EXPECT_EQ(Upload(*worker_, "../etc", data, job_id, lease.lease_id(), 400, &info).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Over the per-artifact maximum (3 MiB here): RESOURCE_EXHAUSTED.
  EXPECT_EQ(Upload(*worker_, "big", std::string((3 << 20) + 1, 'x'), job_id, lease.lease_id(),
                   1 << 20, &info)
                .error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Missing artifact: NOT_FOUND; unregistered worker: NOT_FOUND.
  v1::DownloadArtifactRequest download;
  download.set_worker_id(worker_id);
  download.set_name("a");
  v1::ArtifactChunk chunk;
  {
    auto context = Context();
    auto reader = worker_->DownloadArtifact(context.get(), download);
    EXPECT_FALSE(reader->Read(&chunk));
    const grpc::Status status = reader->Finish();
    EXPECT_THAT(status, StatusIs(grpc::StatusCode::NOT_FOUND, "no artifact 'a'"));
  }
  download.set_worker_id("worker-ghost");
  {
    auto context = Context();
    auto reader = worker_->DownloadArtifact(context.get(), download);
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  v1::ListArtifactsRequest list;
  v1::ListArtifactsResponse listed;
  EXPECT_EQ(worker_->ListArtifacts(Context().get(), list, &listed).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // worker_id required
  list.set_worker_id(worker_id);
  ASSERT_TRUE(worker_->ListArtifacts(Context().get(), list, &listed).ok());
  EXPECT_EQ(listed.artifacts_size(), 0);  // nothing half-written is listed
}

}  // namespace
}  // namespace layerflow::server

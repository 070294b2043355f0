// Regression: a sweep with spectra, all-pair CKA and per-token heat maps
// (bench/sweeps/sharded_all.yaml on 2 H200s) made `layerflow run --format
// csv` fail with "RESOURCE_EXHAUSTED: Received message larger than max
// (10837111 vs. 4194304)": gRPC's 4 MiB default capped the QueryResults reply
// at the CLI, and a large model's spectra chunk approaches the same cap on
// the coordinator. Here a worker streams one ~13 MiB chunk of keyed rows and
// the CLI's client reads them all back, page by page (QueryResults is paged
// since; the rows must come back exactly once, in order).
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"
#include "tests/server/test_util.h"

namespace layerflow {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::testing::StatusIs;
using ::testing::Eq;

// Every (layer, position) of pythia-tiny's points 0..3 at the largest
// context: rows the chunk check (against the job) accepts.
constexpr int kPositions = 65536;
constexpr int kRows = 4 * kPositions;  // ~50 bytes each on the wire

// A context that gives up after a minute rather than at CTest's timeout.
std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return context;
}

TEST(LargeResults, ChunkAndQueryBeyondFourMebibytes) {
  const server::testing::TempDir dir;
  auto server = server::CoordinatorServer::Start(integration::LoopbackOptions(dir.File("lf.db")));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());

  client::CoordinatorClient client(address, std::chrono::seconds(60));
  v1::SweepSpec spec;
  spec.set_name("large");
  spec.add_models("pythia-tiny");
  spec.set_num_prompts(1);
  spec.add_analyses("adjacent_cos_tokens");
  spec.add_context_lengths(kPositions);
  auto submitted = client.SubmitSweep(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto worker = v1::WorkerProtocol::NewStub(channel);
  v1::RegisterWorkerRequest register_request;
  register_request.set_name("large-results");
  v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(worker->RegisterWorker(Context().get(), register_request, &registered).ok());
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(registered.worker_id());
  v1::LeaseJobResponse lease;
  ASSERT_TRUE(worker->LeaseJob(Context().get(), lease_request, &lease).ok());
  ASSERT_TRUE(lease.leased());

  v1::ResultChunk chunk;
  chunk.set_job_id(lease.job().job_id());
  chunk.set_lease_id(lease.lease_id());
  chunk.set_sequence(0);
  chunk.add_prompt_tokens(100);
  for (int i = 0; i < kRows; ++i) {
    v1::MetricStat* stat = chunk.add_stats();
    stat->set_metric("adjacent_cos_tokens");
    stat->set_layer(i / kPositions);
    stat->set_head(0);
    stat->set_position(i % kPositions);
    stat->set_sum(0.25);
    stat->set_sum_sq(0.0625);
    stat->set_count(1);
  }
  ASSERT_GT(chunk.ByteSizeLong(), size_t{8} << 20);
  const auto stream_ctx = Context();
  v1::StreamResultsResponse streamed;
  auto writer = worker->StreamResults(stream_ctx.get(), &streamed);
  ASSERT_TRUE(writer->Write(chunk));
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::CompleteJobRequest complete;
  complete.set_job_id(lease.job().job_id());
  complete.set_lease_id(lease.lease_id());
  v1::CompleteJobResponse completed;
  ASSERT_TRUE(worker->CompleteJob(Context().get(), complete, &completed).ok());

  v1::QueryResultsRequest query;
  query.set_sweep_id(submitted->sweep_id());
  const auto start = std::chrono::steady_clock::now();
  auto rows = client.QueryResults(query);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::cerr << "QueryResults: " << rows->size() << " rows in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s\n";
  // One row per (layer, position): every streamed stat, none merged away,
  // in (layer, position) order across the pages.
  ASSERT_EQ(rows->size(), static_cast<size_t>(kRows));
  for (int i = 0; i < kRows; i += 4099) {
    EXPECT_EQ((*rows)[i].layer(), i / kPositions) << i;
    EXPECT_EQ((*rows)[i].position(), i % kPositions) << i;
  }
  EXPECT_EQ(rows->back().position(), kPositions - 1);
  (*server)->Shutdown();
}

// Over gRPC: the CLI's client follows ListJobs pages, and an oversized
// field comes back as INVALID_ARGUMENT naming it (issue 14, item 6).
TEST(Paging, ClientFollowsPagesAndOversizedFieldsAreRefused) {
  const server::testing::TempDir dir;
  auto server = server::CoordinatorServer::Start(integration::LoopbackOptions(dir.File("lf.db")));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());
  client::CoordinatorClient client(address, std::chrono::seconds(60));
  v1::SweepSpec spec;
  spec.set_name("paged");
  spec.add_models("pythia-tiny");
  for (int s = 0; s < 5; ++s) spec.add_seeds(s);
  auto submitted = client.SubmitSweep(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  client.set_page_size(2);  // three pages: 2, 2, 1
  auto jobs = client.ListJobs(submitted->sweep_id(), v1::JOB_STATE_UNSPECIFIED);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*jobs)[i].job_id(), absl::StrCat(submitted->sweep_id(), "-", i));
    EXPECT_EQ((*jobs)[i].spec().seed(), i);
  }

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto worker = v1::WorkerProtocol::NewStub(channel);
  v1::RegisterWorkerRequest request;
  request.set_name(std::string(300, 'w'));
  v1::RegisterWorkerResponse response;
  grpc::Status status = worker->RegisterWorker(Context().get(), request, &response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                               Eq("name: 300 bytes, more than the limit of 256")));
  auto coordinator = v1::Coordinator::NewStub(channel);
  v1::ListJobsRequest list;
  list.set_sweep_id(submitted->sweep_id());
  list.set_page_token("garbage");
  v1::ListJobsResponse listed;
  status = coordinator->ListJobs(Context().get(), list, &listed);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::INVALID_ARGUMENT,
                               Eq("page_token: not a token this coordinator made")));
  (*server)->Shutdown();
}

}  // namespace
}  // namespace layerflow

// Identity and TLS: tokens (only hashes stored), roles, sweep and lease
// ownership over real gRPC on 127.0.0.1, and a TLS round trip.
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "common/channel.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "server/auth/authorizer.h"
#include "server/auth/token_store.h"
#include "server/coordinator_server.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// ---------------------------------------------------------------------------
// The token store alone.

TEST(TokenStoreTest, KeepsOnlyTheHashAndAuthenticatesTheSecret) {
  TempDir dir;
  const std::string path = dir.File("auth.db");
  std::string token, id, secret;
  {
    auto store = auth::OpenSqliteTokenStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto made = (*store)->CreateToken("alice", auth::Role::kUser);
    ASSERT_TRUE(made.ok()) << made.status();
    token = made->token;
    id = made->record.id;
    ASSERT_EQ(token.size(), 3u + 16u + 1u + 64u);
    EXPECT_EQ(token.substr(0, 3), "lf_");
    EXPECT_EQ(token.substr(3, 16), id);
    secret = token.substr(20);
    auto who = (*store)->Authenticate(token);
    ASSERT_TRUE(who.ok()) << who.status();
    EXPECT_EQ(who->user, "alice");
    EXPECT_EQ(who->role, auth::Role::kUser);
    EXPECT_EQ(who->id, id);
  }
  // The file (and its WAL) holds the secret's SHA-256, never the secret.
  const std::string bytes = ReadAll(path) + ReadAll(path + "-wal");
  EXPECT_EQ(bytes.find(secret), std::string::npos);
  EXPECT_EQ(bytes.find(token), std::string::npos);
  // SHA-256("abc"), FIPS 180-2's example: the hash is the real one.
  EXPECT_EQ(auth::HashSecret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(bytes.find(auth::HashSecret(secret)), std::string::npos);
}

TEST(TokenStoreTest, RefusesWrongRevokedAndMalformedTokens) {
  TempDir dir;
  auto store = auth::OpenSqliteTokenStore(dir.File("auth.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto made = (*store)->CreateToken("bob", auth::Role::kWorker);
  ASSERT_TRUE(made.ok()) << made.status();
  std::string wrong = made->token;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  auto status = (*store)->Authenticate(wrong).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnauthenticated,
                               absl::StrCat("token ", made->record.id, ": wrong secret")));

  status = (*store)->Authenticate("lf_nothex").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnauthenticated, "malformed token"));

  ASSERT_TRUE((*store)->RevokeToken(made->record.id).ok());
  status = (*store)->Authenticate(made->token).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnauthenticated,
                               absl::StrCat("token ", made->record.id, " was revoked")));

  status = (*store)->RevokeToken(made->record.id);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kFailedPrecondition, "already revoked"));
  status = (*store)->RevokeToken("0000000000000000");
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, "no such token"));

  auto listed = (*store)->ListTokens();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].user, "bob");
  EXPECT_EQ((*listed)[0].role, auth::Role::kWorker);
  EXPECT_NE((*listed)[0].revoked_unix_ms, 0);

  status = (*store)->CreateToken("bad user", auth::Role::kUser).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, "outside [A-Za-z0-9._@-]"));
  status = auth::ParseRole("boss").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               "'boss' is not one of user, worker, admin"));
}

// ---------------------------------------------------------------------------
// A coordinator with --auth-db over real gRPC.

class AuthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string auth_db = dir_.File("auth.db");
    {
      auto store = auth::OpenSqliteTokenStore(auth_db);
      ASSERT_TRUE(store.ok()) << store.status();
      auto make = [&](const std::string& user, auth::Role role) {
        auto made = (*store)->CreateToken(user, role);
        EXPECT_TRUE(made.ok()) << made.status();
        return made.ok() ? made->token : std::string();
      };
      alice_ = make("alice", auth::Role::kUser);
      bob_ = make("bob", auth::Role::kUser);
      admin_ = make("root", auth::Role::kAdmin);
      worker1_ = make("w1", auth::Role::kWorker);
      worker2_ = make("w2", auth::Role::kWorker);
      auto revoked = (*store)->CreateToken("carol", auth::Role::kUser);
      ASSERT_TRUE(revoked.ok());
      revoked_ = revoked->token;
      ASSERT_TRUE((*store)->RevokeToken(revoked->record.id).ok());
    }
    CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.db_path = dir_.File("lf.db");
    options.metrics_address = "";
    options.auth_db_path = auth_db;
    auto server = CoordinatorServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    coordinator_ = v1::Coordinator::NewStub(channel_);
    worker_ = v1::WorkerProtocol::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  // A context carrying `token` (none when empty) as a client sends it.
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    return context;
  }

  grpc::Status Submit(const std::string& token, v1::SubmitSweepResponse* response) {
    v1::SubmitSweepRequest request;
    request.mutable_spec()->set_name("auth");
    request.mutable_spec()->add_models("pythia-tiny");
    request.mutable_spec()->set_num_prompts(4);
    request.mutable_spec()->set_prompts_per_chunk(2);
    return coordinator_->SubmitSweep(As(token).get(), request, response);
  }

  std::string SubmitAsAlice() {
    v1::SubmitSweepResponse response;
    grpc::Status status = Submit(alice_, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.jobs(), 1);
    return response.sweep_id();
  }

  // Registers as `token` and leases the one queued job.
  v1::LeaseJobResponse Lease(const std::string& token, std::string* worker_id) {
    v1::RegisterWorkerRequest register_request;
    register_request.set_name("auth-test");
    v1::RegisterWorkerResponse registered;
    grpc::Status status = worker_->RegisterWorker(As(token).get(), register_request, &registered);
    EXPECT_TRUE(status.ok()) << status.error_message();
    *worker_id = registered.worker_id();
    v1::LeaseJobRequest request;
    request.set_worker_id(registered.worker_id());
    v1::LeaseJobResponse lease;
    status = worker_->LeaseJob(As(token).get(), request, &lease);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(lease.leased());
    return lease;
  }

  TempDir dir_;
  std::string alice_, bob_, admin_, worker1_, worker2_, revoked_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> coordinator_;
  std::unique_ptr<v1::WorkerProtocol::Stub> worker_;
};

TEST_F(AuthServiceTest, MissingInvalidAndRevokedTokensAreUnauthenticated) {
  v1::SubmitSweepResponse response;
  grpc::Status status = Submit("", &response);
  EXPECT_THAT(status,
              StatusIs(grpc::StatusCode::UNAUTHENTICATED,
                       "SubmitSweep: no token; send the metadata 'authorization: Bearer <token>'"));

  status = Submit("lf_0123", &response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED, "SubmitSweep: malformed token"));

  std::string forged = alice_;
  forged.back() = forged.back() == 'a' ? 'b' : 'a';
  status = Submit(forged, &response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED, "wrong secret"));

  status = Submit(revoked_, &response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED, "was revoked"));

  // Not "Bearer ...": refused before any lookup.
  auto context = As("");
  context->AddMetadata("authorization", alice_);
  v1::GetSweepRequest get;
  get.set_sweep_id("s");
  v1::Sweep sweep;
  status = coordinator_->GetSweep(context.get(), get, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED,
                               "GetSweep: the authorization metadata is not 'Bearer <token>'"));

  // Worker RPCs too.
  v1::RegisterWorkerResponse registered;
  status = worker_->RegisterWorker(As("").get(), v1::RegisterWorkerRequest(), &registered);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED, "RegisterWorker: no token"));
}

TEST_F(AuthServiceTest, AnotherUsersSweepIsPermissionDeniedAndAdminsSeeAll) {
  const std::string sweep_id = SubmitAsAlice();
  const std::string denied = absl::StrCat("sweep ", sweep_id, " is not a sweep of 'bob'");

  v1::GetSweepRequest get;
  get.set_sweep_id(sweep_id);
  v1::Sweep sweep;
  grpc::Status status = coordinator_->GetSweep(As(alice_).get(), get, &sweep);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(sweep.sweep_id(), sweep_id);

  status = coordinator_->GetSweep(As(bob_).get(), get, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "GetSweep: " + denied));

  v1::ListJobsRequest list;
  list.set_sweep_id(sweep_id);
  v1::ListJobsResponse jobs;
  status = coordinator_->ListJobs(As(bob_).get(), list, &jobs);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "ListJobs: " + denied));

  v1::QueryResultsRequest query;
  query.set_sweep_id(sweep_id);
  v1::QueryResultsResponse rows;
  status = coordinator_->QueryResults(As(bob_).get(), query, &rows);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "QueryResults: " + denied));

  v1::RetrySweepRequest retry;
  retry.set_sweep_id(sweep_id);
  status = coordinator_->RetrySweep(As(bob_).get(), retry, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "RetrySweep: " + denied));

  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(sweep_id);
  status = coordinator_->CancelSweep(As(bob_).get(), cancel, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "CancelSweep: " + denied));

  v1::WatchSweepRequest watch;
  watch.set_sweep_id(sweep_id);
  auto context = As(bob_);
  auto reader = coordinator_->WatchSweep(context.get(), watch);
  EXPECT_FALSE(reader->Read(&sweep));
  status = reader->Finish();
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "WatchSweep: " + denied));

  // An id that does not exist reads the same as another user's.
  get.set_sweep_id("no-such-sweep");
  status = coordinator_->GetSweep(As(bob_).get(), get, &sweep);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               "sweep no-such-sweep is not a sweep of 'bob'"));

  // Every sweep's jobs: admins only.
  v1::ListJobsRequest all;
  status = coordinator_->ListJobs(As(alice_).get(), all, &jobs);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               "ListJobs of every sweep needs role admin"));
  status = coordinator_->ListJobs(As(admin_).get(), all, &jobs);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).sweep_id(), sweep_id);

  // The admin reads and cancels alice's sweep; alice sees it cancelled.
  get.set_sweep_id(sweep_id);
  status = coordinator_->GetSweep(As(admin_).get(), get, &sweep);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(sweep.sweep_id(), sweep_id);
  status = coordinator_->CancelSweep(As(admin_).get(), cancel, &sweep);
  ASSERT_TRUE(status.ok()) << status.error_message();
  status = coordinator_->GetSweep(As(alice_).get(), get, &sweep);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_CANCELLED);
}

TEST_F(AuthServiceTest, TheCliClientSendsItsToken) {
  const std::string address = absl::StrCat("127.0.0.1:", server_->port());
  client::CoordinatorClient alice(address, ChannelSecurity{.token = alice_});
  v1::SweepSpec spec;
  spec.set_name("cli");
  spec.add_models("pythia-tiny");
  spec.set_num_prompts(4);
  spec.set_prompts_per_chunk(2);
  auto submitted = alice.SubmitSweep(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  auto jobs = alice.ListJobs(submitted->sweep_id(), v1::JOB_STATE_UNSPECIFIED);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].sweep_id(), submitted->sweep_id());

  client::CoordinatorClient bob(address, ChannelSecurity{.token = bob_});
  absl::Status denied = bob.GetSweep(submitted->sweep_id()).status();
  EXPECT_THAT(denied, StatusIs(absl::StatusCode::kPermissionDenied, "is not a sweep of 'bob'"));

  client::CoordinatorClient nobody(address, ChannelSecurity{});
  absl::Status refused = nobody.GetSweep(submitted->sweep_id()).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnauthenticated, "GetSweep: no token"));
}

TEST_F(AuthServiceTest, RolesGuardEachService) {
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id("w");
  v1::LeaseJobResponse lease;
  grpc::Status status = worker_->LeaseJob(As(alice_).get(), lease_request, &lease);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               "LeaseJob needs role worker or admin; token "));
  EXPECT_THAT(status.error_message(), HasSubstr("of 'alice' has role user"));

  v1::RegisterWorkerResponse registered;
  status = worker_->RegisterWorker(As(bob_).get(), v1::RegisterWorkerRequest(), &registered);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               "RegisterWorker needs role worker or admin"));

  v1::SubmitSweepResponse submitted;
  status = Submit(worker1_, &submitted);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               "SubmitSweep needs role user or admin"));
  EXPECT_THAT(status.error_message(), HasSubstr("of 'w1' has role worker"));
}

TEST_F(AuthServiceTest, LeasesAndUploadsAreBoundToTheirWorkerAndJob) {
  SubmitAsAlice();
  std::string worker_id;
  const v1::LeaseJobResponse lease = Lease(worker1_, &worker_id);
  const std::string job_id = lease.job().job_id();

  // w2 may not act under w1's lease or as w1's worker id.
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker_id);
  v1::HeartbeatResponse beat_response;
  grpc::Status status = worker_->Heartbeat(As(worker2_).get(), beat, &beat_response);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("Heartbeat: worker ", worker_id,
                                            " was registered by another principal, not 'w2'")));
  v1::CompleteJobRequest complete;
  complete.set_job_id(job_id);
  complete.set_lease_id(lease.lease_id());
  v1::CompleteJobResponse done;
  status = worker_->CompleteJob(As(worker2_).get(), complete, &done);
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("CompleteJob: lease ", lease.lease_id(),
                                            " was not granted to 'w2'")));

  // Results under someone else's lease: the stream ends at that chunk.
  {
    auto context = As(worker2_);
    v1::StreamResultsResponse committed;
    auto writer = worker_->StreamResults(context.get(), &committed);
    v1::ResultChunk chunk;
    chunk.set_job_id(job_id);
    chunk.set_lease_id(lease.lease_id());
    writer->Write(chunk);
    writer->WritesDone();
    status = writer->Finish();
    EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "StreamResults: lease "));
    EXPECT_EQ(committed.chunks_committed(), 0);
  }

  // Uploads: w2 with w1's lease is refused; w1 may not write outside its
  // own job's folder.
  auto upload = [&](const std::string& token, const std::string& name) {
    auto context = As(token);
    v1::ArtifactInfo info;
    auto writer = worker_->UploadArtifact(context.get(), &info);
    v1::ArtifactChunk chunk;
    chunk.set_name(name);
    chunk.set_job_id(job_id);
    chunk.set_lease_id(lease.lease_id());
    chunk.set_total_bytes(0);
    chunk.set_sha256("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  };
  status = upload(worker2_, job_id + "/features/000000");
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("UploadArtifact: lease ", lease.lease_id(),
                                            " was not granted to 'w2'")));
  status = upload(worker1_, "other-job/features/000000");
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("artifact 'other-job/features/000000' is not under its "
                                            "job's folder '",
                                            job_id, "/'")));
  status = upload(worker1_, job_id + "/features/000000");
  EXPECT_TRUE(status.ok()) << status.error_message();

  // The lease's own worker may give it back.
  v1::ReleaseJobRequest release;
  release.set_job_id(job_id);
  release.set_lease_id(lease.lease_id());
  v1::ReleaseJobResponse released;
  status = worker_->ReleaseJob(As(worker1_).get(), release, &released);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// ---------------------------------------------------------------------------
// TLS.

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = dir_.File("cert.pem");
    key_ = dir_.File("key.pem");
    // A self-signed certificate for 127.0.0.1; it is also the CA that
    // signed itself, for the server's and the worker's side alike.
    const std::string command = absl::StrCat(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout ",
        key_, " -out ", cert_, " >/dev/null 2>&1");
    ASSERT_EQ(system(command.c_str()), 0) << command;
  }

  void Start(bool client_ca) {
    CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.db_path = dir_.File("lf.db");
    options.metrics_address = "";
    options.tls_cert_file = cert_;
    options.tls_key_file = key_;
    if (client_ca) options.tls_client_ca_file = cert_;
    auto server = CoordinatorServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  TempDir dir_;
  std::string cert_, key_, address_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(TlsTest, RoundTripOverTlsAndPlaintextClientRefused) {
  Start(/*client_ca=*/false);
  client::CoordinatorClient tls(address_, ChannelSecurity{.tls_ca_file = cert_});
  v1::SweepSpec spec;
  spec.set_name("tls");
  spec.add_models("pythia-tiny");
  spec.set_num_prompts(4);
  spec.set_prompts_per_chunk(2);
  auto submitted = tls.SubmitSweep(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(submitted->jobs(), 1);
  auto sweep = tls.GetSweep(submitted->sweep_id());
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->sweep_id(), submitted->sweep_id());

  client::CoordinatorClient plain(address_, ChannelSecurity{}, std::chrono::seconds(5));
  absl::Status refused = plain.GetSweep(submitted->sweep_id()).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnavailable,
                                absl::StrCat("(coordinator ", address_, ")")));

  client::CoordinatorClient missing_ca(address_, ChannelSecurity{.tls_ca_file = dir_.File("none")});
  refused = missing_ca.GetSweep(submitted->sweep_id()).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kNotFound,
                                "--tls-ca: cannot read '" + dir_.File("none") + "'"));
}

TEST_F(TlsTest, WorkerCallsNeedAClientCertificateWhenAsked) {
  Start(/*client_ca=*/true);
  auto call = [&](const ChannelSecurity& security) {
    auto channel = MakeCoordinatorChannel(address_, security);
    EXPECT_TRUE(channel.ok()) << channel.status();
    auto stub = v1::WorkerProtocol::NewStub(*channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::RegisterWorkerRequest request;
    request.set_name("tls-worker");
    v1::RegisterWorkerResponse response;
    return stub->RegisterWorker(&context, request, &response);
  };
  grpc::Status status = call(ChannelSecurity{.tls_ca_file = cert_});
  EXPECT_THAT(status, StatusIs(grpc::StatusCode::UNAUTHENTICATED,
                               "RegisterWorker: worker calls need a TLS client certificate"));
  status =
      call(ChannelSecurity{.tls_ca_file = cert_, .tls_cert_file = cert_, .tls_key_file = key_});
  EXPECT_TRUE(status.ok()) << status.error_message();

  // The CLI's calls need no client certificate.
  client::CoordinatorClient user(address_, ChannelSecurity{.tls_ca_file = cert_});
  v1::SweepSpec spec;
  spec.set_name("tls");
  spec.add_models("pythia-tiny");
  spec.set_num_prompts(2);
  spec.set_prompts_per_chunk(2);
  auto submitted = user.SubmitSweep(spec);
  EXPECT_TRUE(submitted.ok()) << submitted.status();
}

}  // namespace
}  // namespace layerflow::server

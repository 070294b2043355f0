#include "worker/service/worker_loop.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/api_limits.h"
#include "common/channel.h"
#include "common/file_util.h"
#include "common/grpc_limits.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "worker/service/artifact_client.h"
#include "worker/service/job_conversion.h"

namespace layerflow::worker {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr auto kRpcDeadline = std::chrono::seconds(30);

// A running job's lease is renewed at least this often, whatever interval
// the coordinator asks for: the heartbeat's reply is how a cancellation,
// a deadline or the watchdog reaches the worker, within 2 s of the call.
constexpr int64_t kMaxJobHeartbeatMs = 1000;

// Test hook (tests/integration/watchdog_test.cc): sleep this long before
// each chunk's compute, heedless of cancellation, as a job hung inside
// LibTorch would.
int64_t TestHangMs() {
  const char* value = std::getenv("LAYERFLOW_TEST_HANG_MS");
  return value == nullptr ? 0 : std::strtoll(value, nullptr, 10);
}

// An error of the channel, not of the call: the coordinator is down,
// restarting (a server shutting down cancels the calls in flight; this
// worker never cancels its own) or frozen.
bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsCancelled(status);
}

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
}

// The channel to the coordinator. `own_subchannels`: a channel that shares
// no connection with the others (a fresh one connects at its first call).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const WorkerOptions& options,
                                                           bool own_subchannels) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxChunkMessageBytes);
  // Reconnect soon after a restarted coordinator comes back: its recovery
  // pass keeps the worker's lease for one TTL, and the heartbeat must renew
  // it by then. gRPC's default backoff grows to 2 minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (own_subchannels) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  ChannelSecurity security;
  security.token = options.token;
  security.tls_ca_file = options.tls_ca_file;
  security.tls_cert_file = options.tls_cert_file;
  security.tls_key_file = options.tls_key_file;
  return MakeCoordinatorChannel(options.coordinator_address, security, args);
}

class WorkerLoopImpl final : public WorkerLoop {
 public:
  WorkerLoopImpl(WorkerOptions options, DeviceConfig device, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)),
        device_(std::move(device)),
        channel_(channel),
        stub_(v1::WorkerProtocol::NewStub(channel)),
        models_(CreateModelCache(options_.resident_model_bytes < 0
                                     ? DefaultModelCacheBytes(device_)
                                     : options_.resident_model_bytes)) {}
  ~WorkerLoopImpl() override {
    if (ahead_thread_.joinable()) ahead_thread_.join();
    if (ahead_ != nullptr) StopHeartbeat(*ahead_);
  }

  absl::Status Run() override {
    LF_RETURN_IF_ERROR(RegisterWithRetry()) << "registering with " << options_.coordinator_address;
    // The model cache's counts when the worker stops: how many builds the
    // resident models saved (tests/integration read this line).
    struct LogCacheAtExit {
      WorkerLoopImpl* loop;
      ~LogCacheAtExit() {
        const ModelCacheStats s = StatsOf(*loop->models_);
        loop->Log(absl::StrCat("model cache: ", s.builds, " builds, ", s.hits, " hits, ",
                               s.evictions, " evictions, ", s.models, " models kept (", s.bytes,
                               " bytes)"));
      }
    } log_cache_at_exit{this};
    // Whatever ends the loop, a job leased ahead goes back to the queue.
    struct GiveBackAtExit {
      WorkerLoopImpl* loop;
      ~GiveBackAtExit() { loop->GiveBackAhead(); }
    } give_back_at_exit{this};
    auto idle_since = Clock::now();
    while (!stopping()) {
      if (std::unique_ptr<Ahead> next = TakeAhead()) {
        StopHeartbeat(*next);  // RunJob renews it from here on
        if (next->watch.lost || next->watch.cancelled) {
          Log(absl::StrCat("job ", next->lease.job().job_id(), " leased ahead was ",
                           next->watch.cancelled ? "cancelled" : "lost", "; dropped"));
          continue;
        }
        RunJob(next->lease, next.get());
        idle_since = Clock::now();
        continue;
      }
      v1::LeaseJobRequest request;
      request.set_worker_id(worker_id_);
      AddResidentModels(request);
      v1::LeaseJobResponse lease;
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      absl::Status status = FromGrpcStatus(stub_->LeaseJob(&ctx, request, &lease));
      if (absl::IsNotFound(status)) {
        // The coordinator forgot us (restarted on a fresh store): register again.
        Log("coordinator does not know this worker; registering again");
        LF_RETURN_IF_ERROR(RegisterWithRetry());
        continue;
      }
      if (!status.ok()) {
        Log(absl::StrCat("LeaseJob failed: ", status.ToString(), "; retrying"));
        SleepFor(options_.idle_poll_ms * 4);
        continue;
      }
      if (!lease.leased()) {
        if (options_.exit_after_idle_ms > 0 &&
            Clock::now() - idle_since > std::chrono::milliseconds(options_.exit_after_idle_ms)) {
          Log("queue empty; exiting as asked (--exit-after-idle-ms)");
          return absl::OkStatus();
        }
        SleepFor(options_.idle_poll_ms);
        continue;
      }
      RunJob(lease);
      idle_since = Clock::now();
    }
    return absl::OkStatus();
  }

  void Stop() override {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }

 private:
  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  }

  // Returns false when woken by Stop().
  bool SleepFor(int64_t ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return !cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  }

  void Log(const std::string& message) {
    std::cerr << "[worker " << (worker_id_.empty() ? options_.name : worker_id_) << "] " << message
              << std::endl;
  }

  // Renews the lease until `done`; records a lapsed lease or a cancellation.
  struct LeaseWatch {
    std::atomic<bool> done{false};
    std::atomic<bool> lost{false};  // lapsed, or ended by the coordinator
    std::atomic<bool> cancelled{false};
    // Set while the job runs (not while it waits, leased ahead): its
    // heartbeats then report `progress` (HeartbeatRequest.progress), which
    // grows with every build step, artifact and chunk.
    std::atomic<bool> running{false};
    mutable std::atomic<int64_t> progress{0};
    bool ended() const { return lost.load() || cancelled.load(); }
  };

  // A job leased while the current one runs (--lease-ahead). Its lease is
  // renewed from the moment it is granted; an EXTRACT job's runner (model
  // and data set) is made before the current job ends.
  struct Ahead {
    v1::LeaseJobResponse lease;
    LeaseWatch watch;
    std::thread heartbeat;
    std::unique_ptr<JobRunner> runner;  // null: not prepared (another kind)
    absl::Status prepared;              // the preparation's error, if any
    double build_seconds = 0;
  };

  void StopHeartbeat(Ahead& ahead) {
    ahead.watch.done = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
    if (ahead.heartbeat.joinable()) ahead.heartbeat.join();
  }

  // Called by the job thread once the current job has its runner: one
  // lease ahead at most. ahead_ is written by that thread only, and read
  // only after TakeAhead joined it.
  void StartLeaseAhead() {
    // ahead_ is read only when no thread is left to write it.
    if (!options_.lease_ahead || ahead_thread_.joinable() || ahead_ != nullptr || stopping()) {
      return;
    }
    ahead_thread_ = std::thread([this] { LeaseAhead(); });
  }

  void LeaseAhead() {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_id_);
    AddResidentModels(request);
    auto ahead = std::make_unique<Ahead>();
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    // Any failure (no job, coordinator busy or restarted) leaves it to the
    // loop's own LeaseJob after the current job.
    if (!stub_->LeaseJob(&ctx, request, &ahead->lease).ok() || !ahead->lease.leased()) return;
    Ahead* a = ahead.get();
    a->heartbeat = std::thread(
        [this, a] { HeartbeatLoop(a->lease.job().job_id(), a->lease.lease_id(), &a->watch); });
    const v1::Job& job = a->lease.job();
    Log(absl::StrCat("leased job ", job.job_id(), " ahead"));
    const bool finished =
        job.chunks_total() > 0 && a->lease.resume_from_sequence() >= job.chunks_total();
    // An artifact model (a TRAIN job's checkpoint) is fetched when the job
    // runs: its files live only as long as the job.
    if (job.spec().kind() == v1::JOB_KIND_EXTRACT && !finished &&
        !absl::StartsWith(job.spec().model(), kArtifactModelScheme)) {
      const auto start = Clock::now();
      absl::StatusOr<std::unique_ptr<JobRunner>> runner =
          CreateJobRunner(ToJobConfig(job.spec()), device_, options_.files, models_.get());
      a->build_seconds = SecondsSince(start);
      if (runner.ok()) {
        a->runner = *std::move(runner);
        // Its first chunk's prompts are made while the current job runs.
        a->runner->PrefetchData(a->lease.resume_from_sequence());
      } else {
        a->prepared = runner.status();
      }
    }
    ahead_ = std::move(ahead);
  }

  std::unique_ptr<Ahead> TakeAhead() {
    if (ahead_thread_.joinable()) ahead_thread_.join();
    return std::move(ahead_);
  }

  // At exit: the job leased ahead goes back to the queue at once, uncharged
  // (a failure to say so leaves its lease to lapse).
  void GiveBackAhead() {
    std::unique_ptr<Ahead> ahead = TakeAhead();
    if (ahead == nullptr) return;
    StopHeartbeat(*ahead);
    if (ahead->watch.lost || ahead->watch.cancelled) return;
    v1::ReleaseJobRequest request;
    request.set_job_id(ahead->lease.job().job_id());
    request.set_lease_id(ahead->lease.lease_id());
    v1::ReleaseJobResponse response;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    absl::Status released = FromGrpcStatus(stub_->ReleaseJob(&ctx, request, &response));
    Log(absl::StrCat("job ", ahead->lease.job().job_id(), " leased ahead: ",
                     released.ok() ? std::string("lease given back")
                                   : absl::StrCat("lease left to lapse: ", released.ToString())));
  }

  // The models kept from earlier jobs, so that the scheduler prefers a job
  // of one of them (issue 13), within the coordinator's caps: the most
  // recently used first; an entry too long to send is left out rather than
  // have the lease refused.
  void AddResidentModels(v1::LeaseJobRequest& request) const {
    for (const ResidentModelKey& r :
         ResidentModels(*models_, static_cast<size_t>(limits::kMaxResidentModels))) {
      if (r.model.empty() || static_cast<int64_t>(r.model.size()) > limits::kMaxModelBytes ||
          static_cast<int64_t>(r.init_scheme.size()) > limits::kMaxShortNameBytes ||
          static_cast<int64_t>(r.dtype.size()) > limits::kMaxShortNameBytes) {
        continue;
      }
      v1::ResidentModel* m = request.add_resident_models();
      m->set_model(r.model);
      m->set_init_scheme(r.init_scheme);
      m->set_seed(r.seed);
      m->set_dtype(r.dtype);
    }
  }

  // The coordinator may start after the worker (docker-compose, Slurm):
  // keep trying for a while before giving up.
  absl::Status RegisterWithRetry() {
    absl::Status last;
    for (int attempt = 0; attempt < 60 && !stopping(); ++attempt) {
      v1::RegisterWorkerRequest request;
      request.set_name(options_.name);
      *request.mutable_capabilities() = ToCapabilities(device_);
      v1::RegisterWorkerResponse response;
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      last = FromGrpcStatus(stub_->RegisterWorker(&ctx, request, &response));
      if (last.ok()) {
        worker_id_ = response.worker_id();
        heartbeat_interval_ms_ = std::max<int64_t>(response.heartbeat_interval_ms(), 50);
        Log(absl::StrCat("registered as ", options_.name, " (", device_.device_type,
                         device_.gpu_count > 0 ? absl::StrCat(" x", device_.gpu_count) : "",
                         "), heartbeat every ", heartbeat_interval_ms_, " ms"));
        return absl::OkStatus();
      }
      // A refusal (bad request) will not change by retrying.
      if (!absl::IsUnavailable(last) && !absl::IsDeadlineExceeded(last)) return last;
      SleepFor(1000);
    }
    return stopping() ? absl::CancelledError("worker stopped") : last;
  }

  void HeartbeatLoop(const std::string& job_id, const std::string& lease_id, LeaseWatch* watch) {
    // After a few failed heartbeats in a row (the coordinator down), the
    // heartbeat goes on a channel of its own, made afresh every few more:
    // a channel whose connection failed may wait seconds before trying
    // again (pick_first re-resolves about every 5 s), longer than a short
    // TTL; a fresh one connects at its first call.
    std::unique_ptr<v1::WorkerProtocol::Stub> fresh;
    int failures = 0;
    while (!watch->done.load()) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Not woken by Stop(): the lease is renewed until its job has
        // ended (and was given back), or it would lapse under a stopping
        // worker; waking on stopping_ made this loop spin from Stop() on.
        cv_.wait_for(lock,
                     std::chrono::milliseconds(
                         std::min<int64_t>(heartbeat_interval_ms_, kMaxJobHeartbeatMs)),
                     [&] { return watch->done.load(); });
      }
      if (watch->done.load()) return;
      v1::HeartbeatRequest request;
      request.set_worker_id(worker_id_);
      request.set_job_id(job_id);
      request.set_lease_id(lease_id);
      if (watch->running) request.set_progress(watch->progress.load());
      v1::HeartbeatResponse response;
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      v1::WorkerProtocol::Stub& stub = fresh != nullptr ? *fresh : *stub_;
      absl::Status status = FromGrpcStatus(stub.Heartbeat(&ctx, request, &response));
      if (IsTransient(status)) {
        if (++failures % 3 == 0) {
          if (absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options_, true);
              channel.ok()) {
            fresh = v1::WorkerProtocol::NewStub(*channel);
          }
        }
      } else {
        failures = 0;
      }
      if (absl::IsAborted(status) || absl::IsNotFound(status)) {
        Log(absl::StrCat("lease on job ", job_id, " lost: ", status.message()));
        watch->lost = true;
        return;
      }
      if (status.ok() && !response.stopped().empty()) {
        Log(absl::StrCat("lease on job ", job_id,
                         " ended by the coordinator: ", response.stopped()));
        watch->lost = true;
        return;
      }
      if (status.ok() && response.cancelled()) {
        Log(absl::StrCat("job ", job_id, " cancelled; stopping it"));
        watch->cancelled = true;
        return;
      }
      // Anything else (the coordinator down, restarting or frozen): the
      // lease is kept and renewed again next time; the coordinator's
      // recovery pass keeps it alive meanwhile (issue 14, failure 4).
      if (IsTransient(status)) Reconnect();
      if (status.ok()) fresh.reset();
    }
  }

  // `ahead`: the job was leased ahead (its runner, if made, is taken).
  void RunJob(const v1::LeaseJobResponse& lease, Ahead* ahead = nullptr) {
    const v1::Job& job = lease.job();
    const std::string& job_id = job.job_id();
    const std::string& lease_id = lease.lease_id();
    Log(absl::StrCat("leased job ", job_id, " (", job.spec().model(), ", init ",
                     job.spec().init_scheme(), ", seed ", job.spec().seed(),
                     "), resuming at chunk ", lease.resume_from_sequence()));

    LeaseWatch watch;
    watch.running = true;
    std::thread heartbeat([&] { HeartbeatLoop(job_id, lease_id, &watch); });
    absl::Status status = StreamJob(lease, watch, ahead);
    watch.done = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
    heartbeat.join();

    // A chunk or upload refused because the job was cancelled: the
    // cancellation reached the worker before the heartbeat's reply did.
    const bool cancelled = watch.cancelled || (absl::IsAborted(status) &&
                                               absl::EndsWith(status.message(), " was cancelled"));
    if (watch.lost || cancelled) {
      // Nothing to report: the coordinator already requeued or cancelled it.
      Log(absl::StrCat("stopped job ", job_id, cancelled ? " (cancelled)" : " (lease lost)"));
      return;
    }
    if (stopping()) {
      // Give the lease back: the job is queued again at once, with the
      // chunks streamed so far and without an attempt charged, instead of
      // waiting out the lease (issue 13). If that fails the lease lapses
      // as before.
      v1::ReleaseJobRequest request;
      request.set_job_id(job_id);
      request.set_lease_id(lease_id);
      v1::ReleaseJobResponse response;
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      absl::Status released = FromGrpcStatus(stub_->ReleaseJob(&ctx, request, &response));
      const std::string outcome = released.ok()
                                      ? std::string("lease given back")
                                      : absl::StrCat("lease left to lapse: ", released.ToString());
      Log(absl::StrCat("stopped job ", job_id, " (worker stopping; ", outcome, ")"));
      return;
    }
    if (status.ok()) {
      v1::CompleteJobRequest request;
      request.set_job_id(job_id);
      request.set_lease_id(lease_id);
      // Again while the coordinator is unreachable: a restart must not
      // cost the finished job its lease (no heartbeat renews it now, but
      // the recovery pass does).
      status = UntilReachable(nullptr, [&] {
        v1::CompleteJobResponse response;
        grpc::ClientContext ctx;
        SetDeadline(ctx);
        return FromGrpcStatus(stub_->CompleteJob(&ctx, request, &response));
      });
      if (status.ok()) {
        Log(absl::StrCat("job ", job_id, " done"));
        return;
      }
    }
    if (absl::IsAborted(status) || absl::IsUnavailable(status)) {
      // Lease lapsed or coordinator unreachable: the job will be requeued and
      // resume after its last committed chunk; failing it would lose that.
      Log(absl::StrCat("job ", job_id, " interrupted: ", status.ToString()));
      return;
    }
    Log(absl::StrCat("job ", job_id, " failed: ", status.ToString()));
    v1::FailJobRequest request;
    request.set_job_id(job_id);
    request.set_lease_id(lease_id);
    // Within the coordinator's cap on FailJob.error (common/api_limits.h).
    const std::string error = limits::CutToLimit(status.ToString(), limits::kMaxErrorBytes);
    request.set_error(error);
    // The coordinator decides from code and text whether this fails the job
    // or retries it on another worker (common/job_failures.h).
    request.set_code(static_cast<int32_t>(status.code()));
    v1::FailJobResponse response;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    absl::Status reported = FromGrpcStatus(stub_->FailJob(&ctx, request, &response));
    if (!reported.ok()) Log(absl::StrCat("FailJob: ", reported.ToString()));
  }

  // Runs the job's remaining chunks and streams each as soon as it exists,
  // so a crash loses at most the chunk in progress.
  absl::Status StreamJob(const v1::LeaseJobResponse& lease, const LeaseWatch& watch, Ahead* ahead) {
    const v1::Job& job = lease.job();
    // Re-leased after its last chunk was committed (the worker stopped
    // before CompleteJob): nothing is left to run, no model or features to
    // load.
    if (job.chunks_total() > 0 && lease.resume_from_sequence() >= job.chunks_total()) {
      return absl::OkStatus();
    }
    if (job.spec().kind() == v1::JOB_KIND_PROBE) return ProbeJob(lease, watch);
    if (job.spec().kind() == v1::JOB_KIND_TRAIN) return TrainJob(lease, watch);
    const ModelCacheStats before = StatsOf(*models_);
    const auto build_start = Clock::now();
    JobConfig config = ToJobConfig(job.spec());
    ModelFilePolicy files = options_.files;
    // A TRAIN job's checkpoint: its artifacts down to a local folder, which
    // becomes one more model root for this job only.
    std::string artifact_root;
    struct RemoveAfter {
      std::string* dir;
      ~RemoveAfter() {
        if (!dir->empty()) RemoveTree(*dir);
      }
    } remove_after{&artifact_root};
    if (absl::StartsWith(config.model, kArtifactModelScheme)) {
      LF_ASSIGN_OR_RETURN(artifact_root, MakeTempPath("layerflow-artifact-model", true));
      LF_ASSIGN_OR_RETURN(config.model, FetchArtifactModel(config.model, artifact_root));
      files.roots.push_back(artifact_root);
    }
    std::unique_ptr<JobRunner> runner;
    double build_seconds = 0;
    if (ahead != nullptr && (ahead->runner != nullptr || !ahead->prepared.ok())) {
      // Made while the previous job ran; its build time is still reported.
      LF_RETURN_IF_ERROR(ahead->prepared);
      runner = std::move(ahead->runner);
      build_seconds = ahead->build_seconds;
    } else {
      LF_ASSIGN_OR_RETURN(runner, CreateJobRunner(config, device_, files, models_.get()));
      // Where the job's time goes (v1::PhaseTime): the build goes with the
      // first chunk this lease streams, each chunk carries its own.
      build_seconds = SecondsSince(build_start);
    }
    ++watch.progress;
    StartLeaseAhead();
    if (StatsOf(*models_).hits > before.hits) {
      Log(absl::StrCat("job ", job.job_id(), ": model ", job.spec().model(),
                       " kept from an earlier job"));
    }
    absl::Status job_status;
    for (int64_t seq = lease.resume_from_sequence(); seq < runner->num_chunks(); ++seq) {
      if (watch.ended() || stopping()) break;
      const auto compute_start = Clock::now();
      if (test_hang_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(test_hang_ms_));
      absl::StatusOr<ChunkResult> chunk = runner->RunChunk(seq);
      if (!chunk.ok()) {
        job_status = StatusBuilder(chunk.status()) << "chunk " << seq;
        break;
      }
      ++watch.progress;
      // Cancelled (or the lease ended) while it ran: the chunk is dropped,
      // not committed.
      if (watch.ended()) {
        if (!chunk->features_path.empty()) std::remove(chunk->features_path.c_str());
        break;
      }
      const double compute_seconds = SecondsSince(compute_start);
      const auto upload_start = Clock::now();
      const bool uploads = !chunk->features_path.empty();
      if (!chunk->features_path.empty()) {
        // Before the chunk's results: a committed chunk always has its
        // features stored, so a resumed job never needs to recompute them.
        absl::StatusOr<v1::ArtifactInfo> stored;
        absl::Status upload_status = UntilReachable(&watch, [&] {
          stored = UploadArtifactFile(*stub_, FeatureArtifactName(job.job_id(), seq),
                                      chunk->features_path, job.job_id(), lease.lease_id());
          return stored.status();
        });
        std::remove(chunk->features_path.c_str());
        if (!upload_status.ok()) {
          job_status = StatusBuilder(upload_status) << "chunk " << seq;
          break;
        }
      }
      v1::ResultChunk result = ToResultChunk(*chunk, job.job_id(), lease.lease_id());
      auto add_phase = [&](const char* phase, double seconds) {
        v1::PhaseTime* t = result.add_phase_times();
        t->set_phase(phase);
        t->set_seconds(seconds);
        t->set_count(1);
      };
      if (build_seconds >= 0) add_phase("build", build_seconds);
      build_seconds = -1;
      // "data": the wait for the chunk's prompts (prefetched: ~0);
      // "compute": the forward passes and analysis, to the host copy.
      if (chunk->data_seconds > 0) add_phase("data", chunk->data_seconds);
      add_phase("compute", std::max(0.0, compute_seconds - chunk->data_seconds));
      if (uploads) add_phase("upload", SecondsSince(upload_start));
      // One call a chunk, committed when it returns: a call the
      // coordinator never answered (down, restarting) is sent again, and a
      // repeat of a committed chunk is acknowledged, not counted twice.
      if (absl::Status sent = UntilReachable(&watch, [&] { return SendChunk(result); });
          !sent.ok()) {
        return sent;
      }
      ++watch.progress;
      if (options_.pause_after_chunk_ms > 0) PauseFor(options_.pause_after_chunk_ms, watch);
    }
    return job_status;
  }

  // One result chunk in its own StreamResults call.
  absl::Status SendChunk(const v1::ResultChunk& chunk) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::StreamResultsResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::ResultChunk>> writer =
        stub_->StreamResults(&ctx, &response);
    writer->Write(chunk);
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }

  // Runs `call` until it returns anything but a transient error (the
  // coordinator down, restarting or frozen), while the lease stands (a
  // null `watch`: no lease check) and the worker is not stopping: the
  // worker keeps its job across a coordinator restart and re-attaches, its
  // heartbeats renewing the lease that the recovery pass kept (issue 14,
  // failure 4). Returns the last status.
  absl::Status UntilReachable(const LeaseWatch* watch, const std::function<absl::Status()>& call) {
    int64_t backoff_ms = 100;
    bool logged = false;
    while (true) {
      absl::Status status = call();
      if (!IsTransient(status) || (watch != nullptr && watch->ended()) || stopping()) {
        if (logged && status.ok()) Log("coordinator reachable again; job continues");
        return status;
      }
      if (!logged) {
        Log(absl::StrCat("coordinator unreachable (", status.ToString(),
                         "); keeping the lease and retrying"));
        logged = true;
      }
      SleepFor(backoff_ms);
      backoff_ms = std::min<int64_t>(backoff_ms * 2, 2000);
    }
  }

  // After a failed call: connect again now. Once its connection failed,
  // the channel (pick_first) tries again only when the address is
  // re-resolved, about every 5 s, which outlasts a short lease TTL after a
  // restart; asking for a connection starts one at the end of the backoff.
  void Reconnect() { channel_->GetState(/*try_to_connect=*/true); }

  // --pause-after-chunk-ms: woken early by a cancel, a lost lease or Stop().
  void PauseFor(int64_t ms, const LeaseWatch& watch) {
    const auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until && !watch.ended()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      if (!SleepFor(std::min<int64_t>(left.count() + 1, 20))) return;
    }
  }

  // "artifact:<job_id>/model" (a TRAIN job's checkpoint, train_job.h): its
  // files into <root>/model; returns that folder. NOT_FOUND "model: ..."
  // when the job stored none.
  absl::StatusOr<std::string> FetchArtifactModel(const std::string& model,
                                                 const std::string& root) {
    const std::string prefix =
        absl::StrCat(model.substr(std::string(kArtifactModelScheme).size()), "/");
    LF_ASSIGN_OR_RETURN(std::vector<v1::ArtifactInfo> artifacts,
                        ListArtifacts(*stub_, worker_id_, prefix));
    const std::string dir = root + "/model";
    if (mkdir(dir.c_str(), 0700) != 0) {
      return absl::InternalError(
          absl::StrCat("model: cannot make a local folder for '", model, "'"));
    }
    bool has_config = false;
    for (const v1::ArtifactInfo& a : artifacts) {
      const std::string file = a.name().substr(prefix.size());
      if (file.empty() || file.find('/') != std::string::npos) continue;
      LF_RETURN_IF_ERROR(DownloadArtifactFile(*stub_, worker_id_, a.name(), dir + "/" + file));
      has_config = has_config || file == "config.json";
    }
    if (!has_config) {
      return absl::NotFoundError(
          absl::StrCat("model: '", model, "' names no stored checkpoint (no artifact ", prefix,
                       "config.json; name a TRAIN job that succeeded as artifact:<job_id>/model)"));
    }
    Log(absl::StrCat("model ", model, ": ", artifacts.size(), " artifacts fetched"));
    return dir;
  }

  // A TRAIN job (worker/runtime/train_job.h): resumes from its latest state
  // at or before its last committed chunk, streams each chunk as it ends,
  // uploads a state at every save_every, and at the end stores the
  // checkpoint BEFORE the last chunk (so a job whose chunks are all
  // committed always has its model), then commits the chunks an early stop
  // left empty.
  absl::Status TrainJob(const v1::LeaseJobResponse& lease, const LeaseWatch& watch) {
    const v1::Job& job = lease.job();
    const std::string& job_id = job.job_id();
    const TrainJobConfig config = ToTrainJobConfig(job.spec());
    LF_ASSIGN_OR_RETURN(const std::string dir, MakeTempPath("layerflow-train", true));
    struct RemoveAfter {
      std::string dir;
      ~RemoveAfter() { RemoveTree(dir); }
    } remove_after{dir};
    std::string state_path;
    if (lease.resume_from_sequence() > 0) {
      LF_ASSIGN_OR_RETURN(std::vector<v1::ArtifactInfo> states,
                          ListArtifacts(*stub_, worker_id_, TrainStatePrefix(job_id)));
      std::vector<std::string> names;
      for (const v1::ArtifactInfo& a : states) names.push_back(a.name());
      const std::string chosen =
          SelectTrainState(names, job_id, config.settings, lease.resume_from_sequence());
      if (!chosen.empty()) {
        state_path = dir + "/state.safetensors";
        LF_RETURN_IF_ERROR(DownloadArtifactFile(*stub_, worker_id_, chosen, state_path));
      }
      Log(absl::StrCat("train job ", job_id, ": resuming from ",
                       chosen.empty() ? std::string("the start") : chosen));
    }
    grpc::ClientContext ctx;
    v1::StreamResultsResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::ResultChunk>> writer =
        stub_->StreamResults(&ctx, &response);
    auto chunk_start = Clock::now();
    auto write = [&](const ChunkResult& chunk) -> absl::Status {
      v1::ResultChunk result = ToResultChunk(chunk, job_id, lease.lease_id());
      v1::PhaseTime* t = result.add_phase_times();
      t->set_phase("compute");
      t->set_seconds(SecondsSince(chunk_start));
      t->set_count(1);
      chunk_start = Clock::now();
      if (!writer->Write(result)) return absl::UnavailableError("result stream broke");
      ++watch.progress;
      return absl::OkStatus();
    };
    TrainJobHooks hooks;
    hooks.stream = write;
    hooks.save_state = [&](int64_t step, const std::string& path) -> absl::Status {
      ++watch.progress;
      return UploadArtifactFile(*stub_, TrainStateArtifactName(job_id, step), path, job_id,
                                lease.lease_id())
          .status();
    };
    // config.json and model.safetensors of a local folder under `prefix`.
    auto upload_model = [&](const std::string& model_dir,
                            const std::string& prefix) -> absl::Status {
      for (const char* file : {"config.json", "model.safetensors"}) {
        LF_RETURN_IF_ERROR(UploadArtifactFile(*stub_, absl::StrCat(prefix, file),
                                              absl::StrCat(model_dir, "/", file), job_id,
                                              lease.lease_id())
                               .status());
      }
      return absl::OkStatus();
    };
    hooks.save_init_model = [&](const std::string& model_dir) -> absl::Status {
      ++watch.progress;
      return upload_model(model_dir, TrainInitModelPrefix(job_id));
    };
    hooks.stopped = [&] { return watch.lost || watch.cancelled || stopping(); };
    absl::Status job_status;
    absl::StatusOr<TrainJobOutcome> outcome = RunTrainJob(config, device_, state_path, hooks);
    if (outcome.ok()) {
      struct RemoveModel {
        std::string dir;
        ~RemoveModel() { RemoveTree(dir); }
      } remove_model{outcome->model_dir};
      job_status = upload_model(outcome->model_dir, TrainModelPrefix(job_id));
      if (job_status.ok()) job_status = write(outcome->final_chunk);
      for (int64_t seq = outcome->final_chunk.sequence + 1;
           job_status.ok() && seq < job.chunks_total(); ++seq) {
        ChunkResult empty;
        empty.sequence = seq;
        job_status = write(empty);
      }
      Log(absl::StrCat("train job ", job_id, ": ", outcome->steps, " steps",
                       outcome->early_stopped ? " (target accuracy reached)" : ""));
    } else {
      job_status = outcome.status();
    }
    writer->WritesDone();
    absl::Status stream_status = FromGrpcStatus(writer->Finish());
    if (!job_status.ok()) return job_status;
    return stream_status;
  }

  // An EXTRACT job's feature artifacts: FeaturePrefix(job) + the chunk's
  // sequence, six digits (so names sort in chunk order).
  static std::string FeaturePrefix(const std::string& job_id) {
    return absl::StrCat(job_id, "/features/");
  }
  static std::string FeatureArtifactName(const std::string& job_id, int64_t sequence) {
    return absl::StrFormat("%s%06d", FeaturePrefix(job_id), sequence);
  }

  // A PROBE job: the EXTRACT job's feature artifacts down to local files,
  // the trainer, one result chunk (sequence 0). A lost lease or a cancel
  // stops the downloads (RunJob then reports nothing).
  absl::Status ProbeJob(const v1::LeaseJobResponse& lease, const LeaseWatch& watch) {
    const v1::Job& job = lease.job();
    if (job.depends_on().empty()) {
      return absl::FailedPreconditionError("probe job without depends_on");
    }
    LF_ASSIGN_OR_RETURN(std::vector<v1::ArtifactInfo> artifacts,
                        ListArtifacts(*stub_, worker_id_, FeaturePrefix(job.depends_on())));
    LF_ASSIGN_OR_RETURN(const std::string dir, MakeTempPath("layerflow-probe", /*directory=*/true));
    std::vector<std::string> files;
    // Downloads then trains; the local copies go whatever happens.
    auto download_and_train = [&]() -> absl::StatusOr<ChunkResult> {
      for (const v1::ArtifactInfo& a : artifacts) {
        if (watch.lost || watch.cancelled || stopping()) {
          return absl::AbortedError("probe job stopped while downloading its features");
        }
        const std::string path = absl::StrCat(dir, "/", files.size(), ".safetensors");
        LF_RETURN_IF_ERROR(DownloadArtifactFile(*stub_, worker_id_, a.name(), path));
        ++watch.progress;
        files.push_back(path);
      }
      Log(absl::StrCat("probe job ", job.job_id(), ": ", files.size(), " feature artifacts of ",
                       job.depends_on()));
      return RunProbeJob(ToJobConfig(job.spec()), files, device_);
    };
    absl::StatusOr<ChunkResult> chunk = download_and_train();
    RemoveTree(dir);
    LF_RETURN_IF_ERROR(chunk.status());
    grpc::ClientContext ctx;
    v1::StreamResultsResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::ResultChunk>> writer =
        stub_->StreamResults(&ctx, &response);
    writer->Write(ToResultChunk(*chunk, job.job_id(), lease.lease_id()));
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }

  const WorkerOptions options_;
  const DeviceConfig device_;
  const std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerProtocol::Stub> stub_;
  // Preset models kept between jobs (job_runner.h); declared after options_
  // and device_, which size it.
  const std::shared_ptr<ModelCache> models_;
  std::string worker_id_;
  int64_t heartbeat_interval_ms_ = 5000;
  const int64_t test_hang_ms_ = TestHangMs();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  // --lease-ahead: the thread leasing and preparing the next job, and what
  // it got (see StartLeaseAhead).
  std::thread ahead_thread_;
  std::unique_ptr<Ahead> ahead_;
};

std::string DefaultWorkerName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", getpid());
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerLoop>> WorkerLoop::Create(const WorkerOptions& options,
                                                               const DeviceConfig& device) {
  if (options.coordinator_address.empty()) {
    return absl::InvalidArgumentError("coordinator_address: required");
  }
  if (options.idle_poll_ms <= 0) {
    return absl::InvalidArgumentError("idle_poll_ms: must be positive");
  }
  WorkerOptions resolved = options;
  if (resolved.name.empty()) resolved.name = DefaultWorkerName();
  LF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(resolved, false));
  return std::unique_ptr<WorkerLoop>(
      new WorkerLoopImpl(std::move(resolved), device, std::move(channel)));
}

}  // namespace layerflow::worker

// The pool benchmark (issue 14, first target): a real coordinator started
// in-process on SQLite (a temporary folder) or PostgreSQL, sweeps totalling
// --jobs jobs submitted through the Coordinator RPC, then --workers threads,
// each a simulated worker with its own channel on loopback: RegisterWorker,
// then LeaseJob -> FailJob (code INVALID_ARGUMENT: the job fails for good,
// leaves the queue without results and is never retried) until a lease comes
// back empty. Every LeaseJob call is timed.
//
//   bench_pool [--jobs 10000] [--workers 50] [--db sqlite|postgres|URL]
//              [--json PATH] [--commit SHA]
//
// --db postgres starts a throwaway PostgreSQL server through the test harness
// (tests/server/postgres_harness.h; as user nobody when run as root).
// Exits 1 unless every job was leased exactly once. No LibTorch.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/coordinator_server.h"
#ifdef LF_POOL_BENCH_POSTGRES
#include "tests/server/postgres_harness.h"
#endif

namespace {

namespace v1 = layerflow::v1;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target) {
  grpc::ChannelArguments args;
  // A channel of its own (no subchannel shared with the other workers').
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

struct WorkerStats {
  std::vector<double> lease_ms;  // leases that returned a job
  std::vector<double> empty_lease_ms;
  std::vector<double> fail_ms;
  std::vector<std::string> job_ids;
  int errors = 0;
  std::string first_error;
};

void RunWorker(const std::string& target, int index, std::atomic<bool>* go, WorkerStats* out) {
  auto stub = v1::WorkerProtocol::NewStub(OwnChannel(target));
  std::string worker_id;
  {
    grpc::ClientContext ctx;
    // Fifty channels connect at once on a loaded machine: wait for this
    // one to be ready instead of failing the run on a slow connect.
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::RegisterWorkerRequest request;
    request.set_name("sim-" + std::to_string(index));
    request.mutable_capabilities()->set_device_type("cpu");
    request.mutable_capabilities()->add_architectures("gpt_neox");
    v1::RegisterWorkerResponse response;
    grpc::Status s = stub->RegisterWorker(&ctx, request, &response);
    if (!s.ok()) {
      out->errors++;
      out->first_error = "RegisterWorker: " + s.error_message();
      return;
    }
    worker_id = response.worker_id();
  }
  while (!go->load()) std::this_thread::yield();
  int consecutive_errors = 0;
  for (;;) {
    v1::LeaseJobResponse lease;
    const auto t0 = Clock::now();
    grpc::Status s;
    {
      grpc::ClientContext ctx;
      v1::LeaseJobRequest request;
      request.set_worker_id(worker_id);
      s = stub->LeaseJob(&ctx, request, &lease);
    }
    const double ms = Ms(Clock::now() - t0);
    if (!s.ok()) {
      out->errors++;
      if (out->first_error.empty()) out->first_error = "LeaseJob: " + s.error_message();
      if (++consecutive_errors > 20) return;
      continue;
    }
    consecutive_errors = 0;
    if (!lease.leased()) {
      out->empty_lease_ms.push_back(ms);
      return;  // the queue is empty (no job is ever requeued here)
    }
    out->lease_ms.push_back(ms);
    out->job_ids.push_back(lease.job().job_id());
    grpc::ClientContext ctx;
    v1::FailJobRequest request;
    request.set_job_id(lease.job().job_id());
    request.set_lease_id(lease.lease_id());
    request.set_error("pool benchmark: not run");
    request.set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    v1::FailJobResponse response;
    const auto f0 = Clock::now();
    s = stub->FailJob(&ctx, request, &response);
    out->fail_ms.push_back(Ms(Clock::now() - f0));
    if (!s.ok()) {
      out->errors++;
      if (out->first_error.empty()) out->first_error = "FailJob: " + s.error_message();
    }
  }
}

std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (name == argv[i]) return argv[i + 1];
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int jobs = std::stoi(Flag(argc, argv, "--jobs", "10000"));
  const int workers = std::stoi(Flag(argc, argv, "--workers", "50"));
  const int jobs_per_sweep = std::stoi(Flag(argc, argv, "--jobs-per-sweep", "1000"));
  const std::string db = Flag(argc, argv, "--db", "sqlite");
  const std::string json_path = Flag(argc, argv, "--json", "");
  const std::string commit = Flag(argc, argv, "--commit", "");

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("bench_pool." + std::to_string(getpid()));
  std::filesystem::create_directories(dir);

  layerflow::server::CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.artifact_dir = (dir / "artifacts").string();
  std::string backend;
#ifdef LF_POOL_BENCH_POSTGRES
  std::unique_ptr<layerflow::server::testing::PostgresServer> pg;
#endif
  if (db == "sqlite") {
    backend = "sqlite";
    options.db_path = (dir / "pool.db").string();
  } else if (db == "postgres") {
    backend = "postgresql";
#ifdef LF_POOL_BENCH_POSTGRES
    auto started = layerflow::server::testing::PostgresServer::Start();
    if (!started.ok()) {
      std::cerr << "PostgreSQL: " << started.status() << "\n";
      return 2;
    }
    pg = std::move(*started);
    if (auto s = pg->CreateDatabase("pool_bench"); !s.ok()) {
      std::cerr << "PostgreSQL: " << s << "\n";
      return 2;
    }
    options.db_path = pg->Url("pool_bench");
#else
    std::cerr << "built without the PostgreSQL harness; pass --db postgresql://...\n";
    return 2;
#endif
  } else {
    backend = "postgresql";
    options.db_path = db;
  }

  auto server = layerflow::server::CoordinatorServer::Start(options);
  if (!server.ok()) {
    std::cerr << "coordinator: " << server.status() << "\n";
    return 2;
  }
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());

  // Submit sweeps of pythia-tiny jobs (one job a seed) through the real RPC.
  const auto s0 = Clock::now();
  {
    auto stub = v1::Coordinator::NewStub(OwnChannel(target));
    int submitted = 0;
    for (int sweep = 0; submitted < jobs; ++sweep) {
      const int n = std::min(jobs_per_sweep, jobs - submitted);
      v1::SubmitSweepRequest request;
      v1::SweepSpec* spec = request.mutable_spec();
      spec->set_name("pool-bench-" + std::to_string(sweep));
      spec->add_models("pythia-tiny");
      for (int seed = 0; seed < n; ++seed) spec->add_seeds(seed);
      v1::DatasetSpec* kvpr = spec->add_datasets();
      kvpr->set_name("kvpr");
      kvpr->set_num_classes(2);
      spec->add_context_lengths(512);
      spec->set_num_prompts(4);
      spec->set_prompts_per_chunk(4);
      grpc::ClientContext ctx;
      v1::SubmitSweepResponse response;
      grpc::Status s = stub->SubmitSweep(&ctx, request, &response);
      if (!s.ok() || response.jobs() != n) {
        std::cerr << "SubmitSweep: " << s.error_message() << " (jobs " << response.jobs()
                  << ", expected " << n << ")\n";
        return 2;
      }
      submitted += n;
    }
  }
  const double submit_s = Ms(Clock::now() - s0) / 1000;

  std::vector<WorkerStats> stats(workers);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < workers; ++i) threads.emplace_back(RunWorker, target, i, &go, &stats[i]);
  // Let every worker register and connect before the clock starts.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  go = true;
  for (auto& t : threads) t.join();
  const double wall_s = Ms(Clock::now() - t0) / 1000;
  const double cpu_s = CpuSeconds() - cpu0;

  std::vector<double> lease_ms, empty_ms, fail_ms;
  std::unordered_set<std::string> ids;
  int errors = 0, duplicates = 0;
  std::string first_error;
  for (const WorkerStats& w : stats) {
    lease_ms.insert(lease_ms.end(), w.lease_ms.begin(), w.lease_ms.end());
    empty_ms.insert(empty_ms.end(), w.empty_lease_ms.begin(), w.empty_lease_ms.end());
    fail_ms.insert(fail_ms.end(), w.fail_ms.begin(), w.fail_ms.end());
    for (const auto& id : w.job_ids) duplicates += !ids.insert(id).second;
    errors += w.errors;
    if (first_error.empty()) first_error = w.first_error;
  }
  (*server)->Shutdown();
  (*server)->Wait();
  std::filesystem::remove_all(dir);

  const int leased = static_cast<int>(lease_ms.size());
  const bool ok =
      leased == jobs && duplicates == 0 && errors == 0 && static_cast<int>(ids.size()) == jobs;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));

  nlohmann::json out = {
      {"backend", backend},
      {"jobs", jobs},
      {"workers", workers},
      {"leased", leased},
      {"distinct_jobs_leased", ids.size()},
      {"duplicate_leases", duplicates},
      {"rpc_errors", errors},
      {"leases_per_s", leased / wall_s},
      {"lease_ms",
       {{"p50", Percentile(lease_ms, 0.50)},
        {"p99", Percentile(lease_ms, 0.99)},
        {"max", lease_ms.empty() ? 0 : *std::max_element(lease_ms.begin(), lease_ms.end())}}},
      {"empty_lease_ms_p50", Percentile(empty_ms, 0.50)},
      {"fail_job_ms", {{"p50", Percentile(fail_ms, 0.50)}, {"p99", Percentile(fail_ms, 0.99)}}},
      {"wall_s", wall_s},
      {"submit_s", submit_s},
      {"process_cpu_s", cpu_s},
      {"date", date},
      {"commit", commit},
      {"machine_cores", std::thread::hardware_concurrency()},
      {"pass", ok},
  };
  if (!first_error.empty()) out["first_error"] = first_error;
  std::printf(
      "%s: %d jobs, %d workers: %d leased (%zu distinct, %d duplicates, %d errors) in %.2f s: "
      "%.0f leases/s; lease p50 %.2f ms, p99 %.2f ms, max %.2f ms; FailJob p50 %.2f ms, "
      "p99 %.2f ms; process CPU %.2f s of %.2f s wall x %u cores; submit %.2f s\n",
      backend.c_str(), jobs, workers, leased, ids.size(), duplicates, errors, wall_s,
      leased / wall_s, Percentile(lease_ms, 0.5), Percentile(lease_ms, 0.99),
      out["lease_ms"]["max"].get<double>(), Percentile(fail_ms, 0.5), Percentile(fail_ms, 0.99),
      cpu_s, wall_s, std::thread::hardware_concurrency(), submit_s);
  if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return ok ? 0 : 1;
}

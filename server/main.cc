// layerflow-coordinator: the coordinator as a standalone process.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"
#include "server/coordinator_server.h"
#include "common/worker_process.h"

namespace {

using layerflow::server::CoordinatorOptions;
using layerflow::server::CoordinatorServer;

void LogConfig(const CoordinatorOptions& o, bool embedded_worker) {
  std::cerr << "layerflow-coordinator: effective config:"
            << "\n  listen_address        " << o.listen_address << "\n  db                    "
            << layerflow::server::DescribeDb(o.db_path) << "\n  metrics_address       "
            << (o.metrics_address.empty() ? "(disabled)" : o.metrics_address)
            << "\n  http_address          "
            << (o.http_address.empty() ? "(disabled)" : o.http_address)
            << "\n  lease_ttl_ms          " << o.lease_ttl_ms << "\n  heartbeat_interval_ms "
            << o.heartbeat_interval_ms << "\n  reaper_interval_ms    " << o.reaper_interval_ms
            << "\n  max_attempts          " << o.max_attempts << "\n  retry_backoff_ms      "
            << o.retry_backoff_ms << "\n  retry_backoff_cap_ms  " << o.retry_backoff_cap_ms
            << "\n  quarantine_after      " << o.quarantine_after << "\n  max_job_seconds       "
            << o.max_job_seconds << (o.max_job_seconds == 0 ? " (no deadline)" : "")
            << "\n  progress_timeout_ms   " << o.progress_timeout_ms
            << (o.progress_timeout_ms == 0 ? " (watchdog off)" : "") << "\n  max_queued_jobs       "
            << o.max_queued_jobs << (o.max_queued_jobs == 0 ? " (no limit)" : "")
            << "\n  max_queued_jobs_per_user " << o.max_queued_jobs_per_user
            << (o.max_queued_jobs_per_user == 0 ? " (no limit)" : "")
            << "\n  max_submissions_per_minute " << o.max_submissions_per_minute
            << (o.max_submissions_per_minute == 0 ? " (no limit)" : "")
            << "\n  max_running_jobs_per_user " << o.max_running_jobs_per_user
            << (o.max_running_jobs_per_user == 0 ? " (no quota)" : "")
            << "\n  artifact_dir          "
            << (o.artifact_dir.empty() ? layerflow::server::DefaultArtifactDir(o.db_path)
                                       : o.artifact_dir)
            << "\n  artifact_quota_bytes  " << o.artifact_quota_bytes
            << (o.artifact_quota_bytes == 0 ? " (unlimited)" : "") << "\n  artifact_max_bytes    "
            << o.artifact_max_bytes << (o.artifact_max_bytes == 0 ? " (unlimited)" : "")
            << "\n  auth_db               "
            << (o.auth_db_path.empty() ? "(authentication off)" : o.auth_db_path)
            << "\n  tls_cert / tls_key    "
            << (o.tls_cert_file.empty() ? "(plaintext)" : o.tls_cert_file + " / " + o.tls_key_file)
            << "\n  tls_client_ca         "
            << (o.tls_client_ca_file.empty() ? "(none)" : o.tls_client_ca_file)
            << "\n  embedded_worker       " << (embedded_worker ? "yes" : "no") << std::endl;
}

// `layerflow-coordinator tokens create|list|revoke`: offline on the
// --auth-db file, like --list-workers on --db (a running coordinator reads
// the file on every call, so a revocation takes effect at once).
int AdministerTokens(const std::string& auth_db, const std::string& action, const std::string& user,
                     const std::string& role_name, const std::string& token_id) {
  namespace auth = layerflow::server::auth;
  if (auth_db.empty()) {
    std::cerr << "layerflow-coordinator: tokens: --auth-db FILE is required" << std::endl;
    return 2;
  }
  absl::StatusOr<std::unique_ptr<auth::TokenStore>> store = auth::OpenSqliteTokenStore(auth_db);
  if (!store.ok()) {
    std::cerr << "layerflow-coordinator: " << store.status() << std::endl;
    return 1;
  }
  if (action == "create") {
    absl::StatusOr<auth::Role> role = auth::ParseRole(role_name);
    if (!role.ok()) {
      std::cerr << "layerflow-coordinator: " << role.status() << std::endl;
      return 2;
    }
    absl::StatusOr<auth::NewToken> made = (*store)->CreateToken(user, *role);
    if (!made.ok()) {
      std::cerr << "layerflow-coordinator: " << made.status() << std::endl;
      return 1;
    }
    std::cerr << "created token " << made->record.id << " for " << made->record.user << " (role "
              << auth::RoleName(made->record.role)
              << "); it is shown only now, only its SHA-256 is kept:" << std::endl;
    std::cout << made->token << std::endl;
    return 0;
  }
  if (action == "revoke") {
    if (absl::Status s = (*store)->RevokeToken(token_id); !s.ok()) {
      std::cerr << "layerflow-coordinator: " << s << std::endl;
      return 1;
    }
    std::cerr << "revoked token " << token_id << std::endl;
    return 0;
  }
  absl::StatusOr<std::vector<auth::TokenRecord>> tokens = (*store)->ListTokens();
  if (!tokens.ok()) {
    std::cerr << "layerflow-coordinator: " << tokens.status() << std::endl;
    return 1;
  }
  for (const auth::TokenRecord& t : *tokens) {
    std::cout << t.id << " " << t.user << " " << auth::RoleName(t.role) << " created "
              << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(t.created_unix_ms),
                                  absl::UTCTimeZone())
              << (t.revoked_unix_ms != 0 ? " revoked" : " live") << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CoordinatorOptions options;
  bool embedded_worker = false;
  CLI::App app{
      "layerflow coordinator: schedules sweep jobs on workers and "
      "stores their results"};
  app.add_option("--listen", options.listen_address,
                 "gRPC listen address (host:port; port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--db", options.db_path,
                 "the store: a SQLite database file, or a PostgreSQL URL "
                 "(postgresql://user:password@host:port/dbname, or postgres://...; "
                 "libpq parameters such as ?sslmode=require may follow); created with "
                 "its schema if missing")
      ->capture_default_str();
  app.add_option("--metrics", options.metrics_address,
                 "Prometheus /metrics address (host:port or port; empty "
                 "disables)")
      ->capture_default_str();
  app.add_option("--http", options.http_address,
                 "serve the results web page on host:port (or port: 127.0.0.1:port); "
                 "default: off. With --auth-db it asks for a token (Bearer, or as "
                 "the HTTP Basic password) and shows each user their own sweeps; it "
                 "is plaintext HTTP: off loopback, put it behind a TLS proxy");
  app.add_option("--lease-ttl-ms", options.lease_ttl_ms,
                 "a lease lapses after this long without a heartbeat")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-interval-ms", options.heartbeat_interval_ms,
                 "heartbeat interval workers are told to use")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--reaper-interval-ms", options.reaper_interval_ms,
                 "how often lapsed leases are looked for")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-attempts", options.max_attempts,
                 "leases granted per job before it fails for good")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--retry-backoff-ms", options.retry_backoff_ms,
                 "delay before a requeued job runs again: base * "
                 "2^(attempts-1)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--retry-backoff-cap-ms", options.retry_backoff_cap_ms,
                 "longest delay before a job retried after a host error runs again "
                 "(0: no cap)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--quarantine-after", options.quarantine_after,
                 "quarantine a worker whose last N jobs all failed with host errors "
                 "(0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-job-seconds", options.max_job_seconds,
                 "deadline of a job whose sweep sets no max_job_seconds: past it under "
                 "one lease the job fails with DEADLINE_EXCEEDED (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--progress-timeout-ms", options.progress_timeout_ms,
                 "a running job whose worker reports no progress (build steps, chunks) "
                 "for this long loses its lease and is retried on another worker as a "
                 "host error; keep it above the longest chunk (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-queued-jobs", options.max_queued_jobs,
                 "a bounded queue: SubmitSweep fails with RESOURCE_EXHAUSTED when the "
                 "queued jobs of all users would exceed this (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-queued-jobs-per-user", options.max_queued_jobs_per_user,
                 "a user's quota of queued jobs: SubmitSweep past it fails with "
                 "RESOURCE_EXHAUSTED (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-submissions-per-minute", options.max_submissions_per_minute,
                 "sweeps a user may submit in any 60 s; more fail with "
                 "RESOURCE_EXHAUSTED (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-running-jobs-per-user", options.max_running_jobs_per_user,
                 "a user's quota of running jobs: while at it, the user's queued jobs "
                 "wait and other users' are leased (0: no quota)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bool list_workers = false;
  std::string release_worker;
  app.add_flag("--list-workers", list_workers,
               "print the --db database's workers and their quarantine state, then exit");
  app.add_option("--release-worker", release_worker,
                 "end this worker's quarantine in the --db database, print the workers, "
                 "then exit (a running coordinator picks it up on the next lease)");
  app.add_option("--artifact-dir", options.artifact_dir,
                 "artifact store directory (EXTRACT features for PROBE jobs); "
                 "default: 'artifacts' beside the --db file (in the working directory "
                 "for a PostgreSQL --db)");
  app.add_option("--artifact-quota-bytes", options.artifact_quota_bytes,
                 "total bytes of stored artifacts (0: unlimited); uploads "
                 "beyond it fail with RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--artifact-max-bytes", options.artifact_max_bytes,
                 "bytes of one artifact (0: unlimited)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--auth-db", options.auth_db_path,
                 "SQLite file of users and token hashes: turns authentication on "
                 "(every call needs 'authorization: Bearer <token>'); default: off");
  app.add_option("--tls-cert", options.tls_cert_file,
                 "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
  app.add_option("--tls-key", options.tls_key_file, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", options.tls_client_ca_file,
                 "PEM CA bundle: worker calls must present a client certificate it "
                 "signed (needs --tls-cert)");
  std::string token_user, token_role = "user", token_id;
  CLI::App* tokens =
      app.add_subcommand("tokens", "manage API tokens in the --auth-db file, then exit");
  tokens->require_subcommand(1);
  tokens->fallthrough();
  CLI::App* tokens_create = tokens->add_subcommand(
      "create", "create a token and print it (shown once; only its hash is kept)");
  tokens_create->add_option("--user", token_user, "who the token speaks for")->required();
  tokens_create->add_option("--role", token_role, "user, worker or admin")->capture_default_str();
  tokens_create->fallthrough();
  CLI::App* tokens_list =
      tokens->add_subcommand("list", "print every token: id, user, role, created, live/revoked");
  tokens_list->fallthrough();
  CLI::App* tokens_revoke = tokens->add_subcommand("revoke", "revoke a token by id");
  tokens_revoke->add_option("ID", token_id, "token id (from `tokens list`)")->required();
  tokens_revoke->fallthrough();
  app.add_flag("--embedded-worker", embedded_worker,
               "also start a worker on the local CPU/GPUs (a layerflow-worker child process)");
  CLI11_PARSE(app, argc, argv);
  if (tokens->parsed()) {
    const std::string action = tokens_create->parsed()   ? "create"
                               : tokens_revoke->parsed() ? "revoke"
                                                         : "list";
    return AdministerTokens(options.auth_db_path, action, token_user, token_role, token_id);
  }
  if (list_workers || !release_worker.empty()) {
    absl::StatusOr<std::string> report =
        layerflow::server::AdministerWorkers(options.db_path, release_worker);
    if (!report.ok()) {
      std::cerr << "layerflow-coordinator: " << report.status() << std::endl;
      return 1;
    }
    if (!release_worker.empty()) std::cerr << "released " << release_worker << std::endl;
    std::cout << *report;
    return 0;
  }

  if (embedded_worker && !options.auth_db_path.empty()) {
    // The worker child process has no way yet to be handed a token.
    std::cerr << "layerflow-coordinator: --embedded-worker cannot be used with --auth-db: "
                 "start workers with a worker token instead (docs/operations.md)"
              << std::endl;
    return 2;
  }

  // Block the shutdown signals in every thread (gRPC's included, which
  // inherit this mask); one thread takes them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  LogConfig(options, embedded_worker);
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server = CoordinatorServer::Start(options);
  if (!server.ok()) {
    std::cerr << "layerflow-coordinator: " << server.status() << std::endl;
    return 1;
  }
  std::cerr << "layerflow-coordinator: serving on port " << (*server)->port();
  if ((*server)->metrics_port() != 0) {
    std::cerr << ", metrics on port " << (*server)->metrics_port();
  }
  if ((*server)->http_port() != 0) {
    std::cerr << ", results page on port " << (*server)->http_port();
  }
  std::cerr << std::endl;

  // A worker on this machine's CPU or GPUs, started as a child process (see
  // common/worker_process.h for why not a thread). It talks to the
  // coordinator over loopback gRPC like any other worker.
  std::unique_ptr<layerflow::WorkerProcess> worker;
  if (embedded_worker) {
    absl::StatusOr<std::unique_ptr<layerflow::WorkerProcess>> spawned =
        layerflow::WorkerProcess::Spawn(
            {.coordinator_address = absl::StrCat("127.0.0.1:", (*server)->port()),
             .name = "embedded",
             .model_roots = {layerflow::CurrentFolder()}});
    if (!spawned.ok()) {
      std::cerr << "layerflow-coordinator: embedded worker: " << spawned.status() << std::endl;
      (*server)->Shutdown();
      return 1;
    }
    worker = std::move(*spawned);
    std::cerr << "layerflow-coordinator: embedded worker started (pid " << worker->pid() << ")"
              << std::endl;
  }

  std::thread signal_thread([&signals, s = server->get()] {
    int signal = 0;
    sigwait(&signals, &signal);
    std::cerr << "layerflow-coordinator: signal " << signal << ", shutting down" << std::endl;
    s->Shutdown();
  });
  (*server)->Wait();
  // The worker stops after its chunk in progress; its lease lapses and the
  // job resumes after the last committed chunk on the next start.
  if (worker) worker->Stop();
  // Shutdown() may also come from elsewhere one day; wake the signal thread
  // if it is still waiting so that join() returns.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  std::cerr << "layerflow-coordinator: stopped" << std::endl;
  return 0;
}

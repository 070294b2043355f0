#include "client/cli.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/default_sweep.h"
#ifdef LAYERFLOW_HAVE_PLOT
#include "report/figures/figures.h"
#endif
#include "client/inspect_exec.h"
#include "client/pool_output.h"
#include "client/sweep_file.h"
#include "report/output.h"
#include "google/protobuf/util/json_util.h"

namespace layerflow::client {
namespace {

// The tables, CSV / JSON and figures (report/, shared with the
// coordinator's results page).
using report::FormatJobsTable;
using report::FormatJobTimingsTable;
using report::FormatProbeTable;
using report::FormatProgressLine;
using report::FormatResults;
using report::FormatResultsSummary;
using report::FormatRunSummary;
using report::IsProbeRow;
using report::OutputFormat;
using report::ParseJobState;
using report::ParseOutputFormat;
using report::SweepStateName;
#ifdef LAYERFLOW_HAVE_PLOT
using report::BuildFigures;
using report::NamedFigure;
using report::WriteFigures;
#endif

// ---------------------------------------------------------------------------
// Ctrl-C: a blocking WatchSweep cannot be interrupted from a signal handler,
// so the handler only sets a flag and a small thread turns it into a
// CallCanceller::Cancel. The previous handlers come back right after the
// first signal, so a second Ctrl-C kills the process as usual.

std::atomic<bool> g_interrupted{false};

extern "C" void OnInterrupt(int) { g_interrupted.store(true); }

class InterruptWatcher {
 public:
  InterruptWatcher(CallCanceller* canceller, bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    g_interrupted.store(false);
    struct sigaction action = {};
    action.sa_handler = OnInterrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
    thread_ = std::thread([this, canceller] {
      while (!stop_.load()) {
        if (g_interrupted.load()) {
          RestoreHandlers();
          canceller->Cancel(absl::CancelledError("interrupted"));
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  ~InterruptWatcher() {
    if (!enabled_) return;
    stop_.store(true);
    thread_.join();
    RestoreHandlers();
  }
  bool interrupted() const { return enabled_ && g_interrupted.load(); }

 private:
  void RestoreHandlers() {
    if (restored_.exchange(true)) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

  bool enabled_;
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
  std::atomic<bool> stop_{false};
  std::atomic<bool> restored_{false};
  std::thread thread_;
};

// One progress line per change in a log; one redrawn line on a terminal.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(const CliEnvironment& env) : env_(env) {}
  void Update(const v1::Sweep& sweep) {
    const std::string line = FormatProgressLine(sweep);
    if (line == last_) return;
    last_ = line;
    if (env_.interactive_progress) {
      *env_.err << "\r" << line << "\x1b[K" << std::flush;  // K: clear to end
      drawn_ = true;
    } else {
      *env_.err << line << "\n" << std::flush;
    }
  }
  void Finish() {
    if (drawn_) *env_.err << "\n" << std::flush;
    drawn_ = false;
  }

 private:
  const CliEnvironment& env_;
  std::string last_;
  bool drawn_ = false;
};

struct GlobalFlags {
  std::string coordinator;
  // --token / LAYERFLOW_TOKEN, --tls-ca (common/channel.h).
  ChannelSecurity security;
};

int Fail(const CliEnvironment& env, const absl::Status& status) {
  PrintError(*env.err, status);
  return kExitError;
}

void PrintFailedJobs(const CliEnvironment& env, CoordinatorClient& client,
                     const std::string& sweep_id) {
  absl::StatusOr<std::vector<v1::Job>> failed = client.ListJobs(sweep_id, v1::JOB_STATE_FAILED);
  if (!failed.ok()) {
    PrintError(*env.err, failed.status());
    return;
  }
  for (const v1::Job& job : *failed) {
    *env.err << "job " << job.job_id() << " (" << job.spec().model() << ", init "
             << job.spec().init_scheme() << ", seed " << job.spec().seed() << ") failed after "
             << job.attempts() << " attempt" << (job.attempts() == 1 ? "" : "s") << ": "
             << job.error() << "\n";
  }
}

std::string Summary(const v1::Sweep& sweep) {
  std::string line =
      absl::StrCat("sweep ", sweep.sweep_id(), " ", SweepStateName(sweep.state()), ": ",
                   sweep.jobs_succeeded(), "/", sweep.jobs_total(), " jobs succeeded");
  if (sweep.jobs_failed() > 0) absl::StrAppend(&line, ", ", sweep.jobs_failed(), " failed");
  if (sweep.jobs_cancelled() > 0) {
    absl::StrAppend(&line, ", ", sweep.jobs_cancelled(), " cancelled");
  }
  return line;
}

// `layerflow watch`: while the sweep has queued jobs, its queue (GetQueue:
// each job's position and expected start) under the progress, printed again
// when it changes, asked at most once a second. A coordinator without
// GetQueue (UNIMPLEMENTED), or any failure, just shows no queue.
class QueuePrinter {
 public:
  QueuePrinter(const GlobalFlags& global, std::string sweep_id)
      // Its own client: the watch's holds the canceller for the stream.
      : client_(global.coordinator, global.security, std::chrono::seconds(5)),
        sweep_id_(std::move(sweep_id)) {}

  // After a progress update: what to print now ("" for nothing).
  std::string Poll(const v1::Sweep& sweep) {
    if (disabled_) return "";
    if (sweep.jobs_queued() == 0) {
      if (last_.empty()) return "";
      last_.clear();
      return "queue: none of this sweep's jobs queued\n";
    }
    const absl::Time now = absl::Now();
    if (now - asked_ < absl::Seconds(1)) return "";
    asked_ = now;
    absl::StatusOr<v1::GetQueueResponse> queue = client_.GetQueue(sweep_id_);
    if (!queue.ok()) {
      disabled_ = absl::IsUnimplemented(queue.status());
      return "";
    }
    std::string text = FormatQueue(*queue);
    if (text == last_) return "";
    last_ = text;
    return text;
  }

 private:
  CoordinatorClient client_;
  const std::string sweep_id_;
  std::string last_;
  absl::Time asked_ = absl::InfinitePast();
  bool disabled_ = false;
};

// Watches a sweep to its end, then reports failures. Returns the exit code:
// 0 only when every job succeeded. `finished` tells whether the sweep
// reached a final state (as opposed to the watch failing). `queue`, when
// given, prints the sweep's queue as it changes.
int WatchToEnd(const CliEnvironment& env, CoordinatorClient& client, const CallCanceller& canceller,
               const InterruptWatcher& interrupts, const std::string& sweep_id, bool* finished,
               QueuePrinter* queue = nullptr) {
  ProgressPrinter progress(env);
  absl::StatusOr<v1::Sweep> sweep = client.WatchSweep(sweep_id, [&](const v1::Sweep& s) {
    progress.Update(s);
    if (queue == nullptr) return;
    if (const std::string text = queue->Poll(s); !text.empty()) {
      // Below the progress line (a redrawn one is ended first).
      progress.Finish();
      *env.err << text << std::flush;
    }
  });
  progress.Finish();
  if (!sweep.ok()) {
    if (interrupts.interrupted()) return kExitInterrupted;
    return Fail(env, canceller.cancelled() ? canceller.reason() : sweep.status());
  }
  *finished = true;
  *env.err << Summary(*sweep) << "\n";
  if (sweep->jobs_failed() > 0) PrintFailedJobs(env, client, sweep_id);
  return sweep->state() == v1::SWEEP_STATE_SUCCEEDED ? kExitOk : kExitError;
}

// ---------------------------------------------------------------------------
// Commands.

// Where `plot` and `run` put a sweep's figures unless told otherwise.
std::string DefaultFiguresDir(const std::string& sweep_id) {
  return absl::StrCat("layerflow-figures/", sweep_id);
}

struct FigureFlags {
  std::string dir;             // empty: DefaultFiguresDir
  std::string format = "png";  // png | svg | both
  std::vector<std::string> metrics;
};

// Builds the sweep's figures from its rows and writes them; returns the
// paths written.
absl::StatusOr<std::vector<std::string>> PlotRows(const std::vector<v1::ResultRow>& rows,
                                                  const std::string& sweep_id,
                                                  const FigureFlags& flags) {
#ifdef LAYERFLOW_HAVE_PLOT
  std::vector<plot::ImageFormat> formats;
  if (flags.format == "png" || flags.format == "both") formats.push_back(plot::ImageFormat::kPng);
  if (flags.format == "svg" || flags.format == "both") formats.push_back(plot::ImageFormat::kSvg);
  if (formats.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--format ", flags.format, ": expected png, svg or both"));
  }
  absl::StatusOr<std::vector<NamedFigure>> figures =
      BuildFigures(rows, {.sweep_id = sweep_id, .metrics = flags.metrics});
  if (!figures.ok()) return figures.status();
  return WriteFigures(*figures, flags.dir.empty() ? DefaultFiguresDir(sweep_id) : flags.dir,
                      formats);
#else
  (void)rows, (void)sweep_id, (void)flags;
  return absl::UnimplementedError(
      "this layerflow was built without cairo, so it draws no figures: install "
      "libcairo2-dev (scripts/bootstrap.sh deps) and rebuild");
#endif
}

// "N figures in DIR/ (a.png, b.png, ...; ...)" for the log.
std::string FiguresLine(const std::vector<std::string>& paths, const std::string& dir) {
  std::vector<std::string> images;
  size_t figures = 0;
  for (const std::string& p : paths) {
    if (absl::EndsWith(p, ".json")) {
      ++figures;  // one sidecar per figure
    } else {
      images.push_back(p.substr(p.rfind('/') + 1));
    }
  }
  return absl::StrCat(figures, figures == 1 ? " figure" : " figures", " in ", dir, "/ (",
                      absl::StrJoin(images, ", "), "; each with a .json of the series drawn)");
}

int Submit(const CliEnvironment& env, const GlobalFlags& global, const std::string& file,
           bool dry_run, bool quiet) {
  // Parse first: a malformed file never reaches the coordinator.
  absl::StatusOr<v1::SweepSpec> spec = ParseSweepFile(file);
  if (!spec.ok()) return Fail(env, spec.status());
  if (dry_run) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    if (auto s = google::protobuf::util::MessageToJsonString(*spec, &json, options); !s.ok()) {
      return Fail(env, absl::InternalError(s.ToString()));
    }
    *env.out << json;
    return kExitOk;
  }
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<v1::SubmitSweepResponse> response = client.SubmitSweep(*spec);
  if (!response.ok()) return Fail(env, response.status());
  if (quiet) {
    *env.out << response->sweep_id() << "\n";
  } else {
    *env.out << "sweep " << response->sweep_id() << ": " << response->jobs() << " jobs\n";
    *env.err << "follow it with: layerflow watch " << response->sweep_id() << "\n";
  }
  return kExitOk;
}

struct RunFlags {
  std::string file;
  std::string db_path;
  std::string metrics_address;
  std::string http_address;
  std::string format = "table";
  FigureFlags figures;
  bool no_figures = false;
};

int RunOnCluster(const CliEnvironment& env, const RunFlags& flags, const v1::SweepSpec& spec,
                 EmbeddedCluster& cluster, CallCanceller& canceller,
                 const InterruptWatcher& interrupts) {
  CoordinatorClient client(cluster.address());
  client.set_canceller(&canceller);
  absl::StatusOr<v1::SubmitSweepResponse> submitted = client.SubmitSweep(spec);
  if (!submitted.ok()) return Fail(env, submitted.status());
  const std::string& sweep_id = submitted->sweep_id();
  *env.err << "sweep " << sweep_id << ": " << submitted->jobs() << " jobs\n";
  if (cluster.http_port() != 0) {
    *env.err << "results page: http://127.0.0.1:" << cluster.http_port() << "/sweeps/" << sweep_id
             << " (until this command ends)\n";
  }
  bool finished = false;
  const int code = WatchToEnd(env, client, canceller, interrupts, sweep_id, &finished);
  if (code == kExitInterrupted) {
    *env.err << "interrupted; stopping the embedded coordinator and worker\n";
    return code;
  }
  // No final state (the worker died, the stream broke): already reported,
  // and there are no complete results to print.
  if (!finished) return code;
  v1::QueryResultsRequest request;
  request.set_sweep_id(sweep_id);
  absl::StatusOr<std::vector<v1::ResultRow>> rows = client.QueryResults(request);
  if (!rows.ok()) return Fail(env, rows.status());
  const OutputFormat format = ParseOutputFormat(flags.format).value_or(OutputFormat::kTable);
  if (format == OutputFormat::kTable) {
    const std::string summary = FormatRunSummary(*rows);
    if (!summary.empty()) *env.out << summary << "\n";
  }
  *env.out << FormatResults(*rows, format) << std::flush;
  if (!flags.no_figures) {
    // The figures go next to the results; a sweep with nothing to draw (or
    // a build without cairo) says so and still succeeds.
    const std::string dir =
        flags.figures.dir.empty() ? DefaultFiguresDir(sweep_id) : flags.figures.dir;
    absl::StatusOr<std::vector<std::string>> written = PlotRows(*rows, sweep_id, flags.figures);
    if (written.ok()) {
      *env.err << "figures: " << FiguresLine(*written, dir) << "\n";
    } else if (absl::IsFailedPrecondition(written.status()) ||
               absl::IsUnimplemented(written.status())) {
      *env.err << "figures: none (" << written.status().message() << ")\n";
    } else {
      return Fail(env, written.status());
    }
  }
  return code;
}

int Run(const CliEnvironment& env, const RunFlags& flags) {
  absl::StatusOr<v1::SweepSpec> spec = flags.file.empty()
                                           ? ParseSweepYaml(kDefaultSweepYaml, kDefaultSweepSource)
                                           : ParseSweepFile(flags.file);
  if (!spec.ok()) return Fail(env, spec.status());
  if (!env.start_embedded) {
    return Fail(
        env, absl::UnimplementedError("this layerflow was built without the embedded coordinator "
                                      "and worker; start layerflow-coordinator and a worker, then "
                                      "use `layerflow submit`"));
  }
  CallCanceller canceller;
  InterruptWatcher interrupts(&canceller, env.handle_signals);
  EmbeddedOptions options;
  options.db_path = flags.db_path;
  options.metrics_address = flags.metrics_address;
  options.http_address = flags.http_address;
  absl::StatusOr<std::unique_ptr<EmbeddedCluster>> cluster =
      env.start_embedded(options, &canceller);
  if (!cluster.ok()) return Fail(env, cluster.status());
  *env.err << (*cluster)->description() << "\n";
  const int code = RunOnCluster(env, flags, *spec, **cluster, canceller, interrupts);
  (*cluster)->Shutdown();
  return code;
}

// `layerflow watch SWEEP --once`: the progress line and the queue now, on
// stdout.
int WatchOnce(const CliEnvironment& env, const GlobalFlags& global, const std::string& sweep_id) {
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<v1::Sweep> sweep = client.GetSweep(sweep_id);
  if (!sweep.ok()) return Fail(env, sweep.status());
  *env.out << FormatProgressLine(*sweep) << "\n";
  absl::StatusOr<v1::GetQueueResponse> queue = client.GetQueue(sweep_id);
  if (!queue.ok()) return Fail(env, queue.status());
  *env.out << FormatQueue(*queue, /*max_jobs=*/1 << 30);
  return kExitOk;
}

int Watch(const CliEnvironment& env, const GlobalFlags& global, const std::string& sweep_id,
          bool once) {
  if (once) return WatchOnce(env, global, sweep_id);
  CallCanceller canceller;
  InterruptWatcher interrupts(&canceller, env.handle_signals);
  CoordinatorClient client(global.coordinator, global.security);
  client.set_canceller(&canceller);
  QueuePrinter queue(global, sweep_id);
  bool finished = false;
  const int code = WatchToEnd(env, client, canceller, interrupts, sweep_id, &finished, &queue);
  if (code == kExitInterrupted) {
    *env.err << "stopped watching; the sweep keeps running (layerflow cancel " << sweep_id
             << " stops it)\n";
  }
  return code;
}

int Workers(const CliEnvironment& env, const GlobalFlags& global) {
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<v1::ListWorkersResponse> workers = client.ListWorkers();
  if (!workers.ok()) return Fail(env, workers.status());
  *env.out << FormatWorkersTable(*workers, absl::ToUnixMillis(absl::Now()));
  return kExitOk;
}

int Jobs(const CliEnvironment& env, const GlobalFlags& global, const std::string& sweep_id,
         const std::string& state_name, bool timings) {
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  if (!state_name.empty()) {
    absl::StatusOr<v1::JobState> parsed = ParseJobState(state_name);
    if (!parsed.ok()) return Fail(env, parsed.status());
    state = *parsed;
  }
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<std::vector<v1::Job>> jobs = client.ListJobs(sweep_id, state);
  if (!jobs.ok()) return Fail(env, jobs.status());
  *env.out << (timings ? FormatJobTimingsTable(*jobs) : FormatJobsTable(*jobs));
  return kExitOk;
}

struct ResultsFlags {
  std::string sweep_id;
  std::string format = "table";
  std::string model;
  std::string metric;
  std::string job_id;
  bool summary = false;
  bool probe = false;
};

int Results(const CliEnvironment& env, const GlobalFlags& global, const ResultsFlags& flags) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(flags.format);
  if (!format.ok()) return Fail(env, format.status());
  CoordinatorClient client(global.coordinator, global.security);
  v1::QueryResultsRequest request;
  request.set_sweep_id(flags.sweep_id);
  request.set_model(flags.model);
  request.set_metric(flags.metric);
  request.set_job_id(flags.job_id);
  absl::StatusOr<std::vector<v1::ResultRow>> rows = client.QueryResults(request);
  if (!rows.ok()) return Fail(env, rows.status());
  if (flags.probe) {
    // Only the PROBE jobs' rows: their table, or those rows as CSV / JSON.
    std::vector<v1::ResultRow> probe_rows;
    for (const v1::ResultRow& row : *rows) {
      if (IsProbeRow(row)) probe_rows.push_back(row);
    }
    *env.out << (*format == OutputFormat::kTable ? FormatProbeTable(probe_rows)
                                                 : FormatResults(probe_rows, *format));
    return kExitOk;
  }
  *env.out << (flags.summary ? FormatResultsSummary(*rows, *format)
                             : FormatResults(*rows, *format));
  return kExitOk;
}

struct PlotFlags {
  std::string sweep_id;
  std::string model;
  std::string job_id;
  FigureFlags figures;
};

int Plot(const CliEnvironment& env, const GlobalFlags& global, const PlotFlags& flags) {
  // The rows exactly as `layerflow results` reads them.
  CoordinatorClient client(global.coordinator, global.security);
  v1::QueryResultsRequest request;
  request.set_sweep_id(flags.sweep_id);
  request.set_model(flags.model);
  request.set_job_id(flags.job_id);
  absl::StatusOr<std::vector<v1::ResultRow>> rows = client.QueryResults(request);
  if (!rows.ok()) return Fail(env, rows.status());
  if (rows->empty() && (!flags.model.empty() || !flags.job_id.empty())) {
    return Fail(env, absl::NotFoundError(absl::StrCat(
                         "sweep ", flags.sweep_id, " has no results",
                         flags.model.empty() ? "" : absl::StrCat(" of --model ", flags.model),
                         flags.job_id.empty() ? "" : absl::StrCat(" of --job ", flags.job_id))));
  }
  absl::StatusOr<std::vector<std::string>> written = PlotRows(*rows, flags.sweep_id, flags.figures);
  if (!written.ok()) return Fail(env, written.status());
  for (const std::string& path : *written) *env.out << path << "\n";
  *env.err << FiguresLine(*written, flags.figures.dir.empty() ? DefaultFiguresDir(flags.sweep_id)
                                                              : flags.figures.dir)
           << "\n";
  return kExitOk;
}

int Cancel(const CliEnvironment& env, const GlobalFlags& global, const std::string& sweep_id) {
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<v1::Sweep> sweep = client.CancelSweep(sweep_id);
  if (!sweep.ok()) return Fail(env, sweep.status());
  *env.out << Summary(*sweep) << "\n";
  return kExitOk;
}

int Retry(const CliEnvironment& env, const GlobalFlags& global, const std::string& sweep_id) {
  CoordinatorClient client(global.coordinator, global.security);
  absl::StatusOr<v1::Sweep> sweep = client.RetrySweep(sweep_id);
  if (!sweep.ok()) return Fail(env, sweep.status());
  *env.out << Summary(*sweep) << "\n";
  return kExitOk;
}

}  // namespace

void PrintError(std::ostream& err, const absl::Status& status) {
  err << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
}

int RunCli(int argc, const char* const* argv, const CliEnvironment& env) {
  CLI::App app{
      "layerflow: submit layer-wise analysis sweeps to a coordinator, follow them "
      "and export their per-layer results.\n"
      "`layerflow run` needs no coordinator: it runs a sweep in this process."};
  app.name("layerflow");
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  layerflow run                       # the built-in quickstart sweep, locally: "
      "Transformers vs SSMs\n"
      "  layerflow run sweep.yaml --format csv > results.csv\n"
      "  layerflow submit sweep.yaml         # on a running coordinator\n"
      "  layerflow watch SWEEP_ID && layerflow results SWEEP_ID\n"
      "  layerflow watch SWEEP_ID --once     # progress, queue positions and expected starts\n"
      "  layerflow workers                   # the pool: hosts, GPUs, running, quarantined\n"
      "  layerflow plot SWEEP_ID --format both  # figures in layerflow-figures/SWEEP_ID\n"
      "Sweep file format: docs/sweep-file.md. Exit codes: 0 success, 1 error "
      "(or failed jobs), 2 usage error, 130 interrupted.");

  GlobalFlags global;
  global.coordinator = env.default_coordinator;
  app.add_option("--coordinator", global.coordinator, "Coordinator address HOST:PORT")
      ->envname("LAYERFLOW_COORDINATOR")
      ->capture_default_str();
  app.add_option("--token", global.security.token,
                 "API token of a coordinator started with --auth-db (from "
                 "`layerflow-coordinator tokens create`)")
      ->envname("LAYERFLOW_TOKEN");
  app.add_option("--tls-ca", global.security.tls_ca_file,
                 "PEM CA bundle of a coordinator started with --tls-cert: connect over TLS")
      ->envname("LAYERFLOW_TLS_CA");

  std::string submit_file;
  bool dry_run = false;
  bool quiet = false;
  CLI::App* submit = app.add_subcommand(
      "submit", "Submit a sweep file to the coordinator; prints the sweep id and its job count");
  submit->add_option("FILE", submit_file, "Sweep file (YAML, docs/sweep-file.md)")->required();
  submit->add_flag("--dry-run", dry_run,
                   "Check the file and print the parsed spec as JSON; contact no server");
  submit->add_flag("-q,--quiet", quiet, "Print only the sweep id");

  RunFlags run_flags;
  CLI::App* run =
      app.add_subcommand("run",
                         "Run a sweep locally: an embedded coordinator and worker in this process. "
                         "Progress goes to stderr, the results table to stdout");
  run->add_option("FILE", run_flags.file,
                  "Sweep file (default: the built-in quickstart sweep: random-init pythia-160m, "
                  "gpt-neo-125m, mamba-130m and mamba2-130m, about a minute on 2 CPU cores)");
  run->add_option("--db", run_flags.db_path,
                  "Keep the store in this SQLite file or PostgreSQL URL "
                  "(postgresql://user@host:port/dbname; default: a SQLite file in a "
                  "temporary directory removed at exit)");
  run->add_option("--metrics", run_flags.metrics_address,
                  "Serve Prometheus /metrics on HOST:PORT (default: off)");
  run->add_option("--http", run_flags.http_address,
                  "Serve the results web page on PORT (127.0.0.1) or HOST:PORT while the "
                  "sweep runs (default: off)");
  run->add_option("--format", run_flags.format, "Result format")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
  run->add_option("--figures", run_flags.figures.dir,
                  "Write the sweep's figures (layerflow plot) to this directory "
                  "(default: layerflow-figures/SWEEP_ID)");
  run->add_option("--figure-format", run_flags.figures.format, "Figure format")
      ->check(CLI::IsMember({"png", "svg", "both"}))
      ->capture_default_str();
  run->add_flag("--no-figures", run_flags.no_figures, "Write no figures");

  std::string watch_id;
  CLI::App* watch = app.add_subcommand(
      "watch", "Follow a sweep's progress until it ends; exit 0 only if every job succeeded");
  watch->add_option("SWEEP_ID", watch_id, "Sweep id")->required();
  bool watch_once = false;
  watch->add_flag("--once", watch_once,
                  "Print the progress and the queue (each queued job's position and "
                  "expected start) once, on stdout, and exit");

  CLI::App* workers =
      app.add_subcommand("workers",
                         "List the pool's workers: host, device and GPUs, state (idle, running, "
                         "quarantined, gone) and the job each runs");

  std::string jobs_sweep;
  std::string jobs_state;
  CLI::App* jobs = app.add_subcommand("jobs", "List jobs (of one sweep, or of all sweeps)");
  jobs->add_option("SWEEP_ID", jobs_sweep, "Sweep id (default: every sweep)");
  jobs->add_option("--state", jobs_state, "Only jobs in this state (default: all)")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"}));
  bool jobs_timings = false;
  jobs->add_flag("--timings", jobs_timings,
                 "Where each job's time went: the workers' build, compute and upload "
                 "seconds, summed over committed chunks");

  ResultsFlags results_flags;
  CLI::App* results = app.add_subcommand(
      "results", "Print a sweep's merged per-layer results (mean ± std over prompts)");
  results->add_option("SWEEP_ID", results_flags.sweep_id, "Sweep id")->required();
  results->add_option("--format", results_flags.format, "Output format")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
  results->add_option("--model", results_flags.model, "Only this model (default: all)");
  results->add_option("--metric", results_flags.metric,
                      "Only this metric, e.g. adjacent_cos (default: all)");
  results->add_option("--job", results_flags.job_id, "Only this job (default: all)");
  results
      ->add_flag("--summary", results_flags.summary,
                 "Headline figures per configuration (seeds averaged): "
                 "intertoken_cos peak and final, path_energy, mean adjacent_cos, "
                 "v_loc / v_glob")
      ->excludes(results->add_flag(
          "--probe", results_flags.probe,
          "Only the probe results (sweeps with `probe:`): per model the best layer "
          "(chosen on validation) and its test accuracy, the final layer's accuracy "
          "and the drop, each marked when not above its label-permutation null "
          "(p > 0.05), and the per-layer probe accuracy table with 95% intervals "
          "(the table format also appends them after the grids)"));

  PlotFlags plot_flags;
  CLI::App* plot = app.add_subcommand(
      "plot",
      "Draw a sweep's figures (metrics over normalised depth, CKA and token heat maps, "
      "probe accuracy, spectra) as PNG / SVG, each with a .json of the series drawn; "
      "prints the paths");
  plot->add_option("SWEEP_ID", plot_flags.sweep_id, "Sweep id")->required();
  plot->add_option("--out", plot_flags.figures.dir,
                   "Directory for the figures (default: layerflow-figures/SWEEP_ID)");
  plot->add_option("--format", plot_flags.figures.format, "Image format")
      ->check(CLI::IsMember({"png", "svg", "both"}))
      ->capture_default_str();
  plot->add_option("--metric", plot_flags.figures.metrics,
                   "Only the figures of this metric (repeatable), e.g. intertoken_cos, "
                   "cka_all_unbiased, adjacent_cos_tokens, probe_test_acc, spectrum "
                   "(default: all)");
  plot->add_option("--model", plot_flags.model, "Only this model (default: all)");
  plot->add_option("--job", plot_flags.job_id, "Only this job (default: all)");

  std::string cancel_id;
  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a sweep's queued and running jobs");
  cancel->add_option("SWEEP_ID", cancel_id, "Sweep id")->required();

  std::string retry_id;
  CLI::App* retry = app.add_subcommand(
      "retry",
      "Queue a sweep's failed and cancelled jobs again; each resumes after its last "
      "committed chunk");
  retry->add_option("SWEEP_ID", retry_id, "Sweep id")->required();

  // Everything after `inspect` goes to layerflow-inspect as it is (its own
  // --help included): that binary holds the models, this one never links them.
  CLI::App* inspect =
      app.add_subcommand("inspect",
                         "Write one text's per-layer hidden states to a safetensors file "
                         "(runs layerflow-inspect; `layerflow inspect --help` for its flags)");
  inspect->prefix_command();
  inspect->set_help_flag();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0.
    const int code = app.exit(e, *env.out, *env.err);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (*submit) return Submit(env, global, submit_file, dry_run, quiet);
  if (*run) return Run(env, run_flags);
  if (*watch) return Watch(env, global, watch_id, watch_once);
  if (*workers) return Workers(env, global);
  if (*jobs) return Jobs(env, global, jobs_sweep, jobs_state, jobs_timings);
  if (*results) return Results(env, global, results_flags);
  if (*cancel) return Cancel(env, global, cancel_id);
  if (*retry) return Retry(env, global, retry_id);
  if (*plot) return Plot(env, global, plot_flags);
  if (*inspect) {
    absl::StatusOr<int> code = RunInspect(inspect->remaining());
    if (!code.ok()) return Fail(env, code.status());
    return *code;
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}

}  // namespace layerflow::client

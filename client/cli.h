// The `layerflow` command line, as a library: main.cc is a few lines, and
// tests drive the commands in-process against a fake coordinator.
#ifndef LAYERFLOW_CLIENT_CLI_H_
#define LAYERFLOW_CLIENT_CLI_H_

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/coordinator_client.h"

namespace layerflow::client {

// Exit codes (docs/cli.md).
inline constexpr int kExitOk = 0;
// An error from the coordinator or the environment, a malformed sweep
// file, or a sweep that finished with failed or cancelled jobs.
inline constexpr int kExitError = 1;
// A command-line usage error (unknown flag, bad flag value).
inline constexpr int kExitUsage = 2;
// Interrupted by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
inline constexpr int kExitInterrupted = 130;

// What `layerflow run` needs from the embedded coordinator and worker.
struct EmbeddedOptions {
  // SQLite file; empty: a file in a fresh temporary directory, removed on
  // shutdown.
  std::string db_path;
  // Prometheus exposer address; empty disables it.
  std::string metrics_address;
  // The results web page's address (CoordinatorOptions.http_address);
  // empty disables it.
  std::string http_address;
};

class EmbeddedCluster {
 public:
  virtual ~EmbeddedCluster() = default;
  // The coordinator's address ("127.0.0.1:PORT").
  virtual std::string address() const = 0;
  // One line for the user: where the store lives, which devices run jobs.
  virtual std::string description() const = 0;
  // The results web page's port, 0 when it is off.
  virtual int http_port() const { return 0; }
  // Stops the worker, then the coordinator; idempotent.
  virtual void Shutdown() = 0;
};

// Starts a coordinator and an in-process worker. The worker cancels
// `canceller` with its error if it stops working, so that a command waiting
// on the coordinator does not wait forever.
using EmbeddedStarter = std::function<absl::StatusOr<std::unique_ptr<EmbeddedCluster>>(
    const EmbeddedOptions& options, CallCanceller* canceller)>;

struct CliEnvironment {
  std::ostream* out = nullptr;  // results, ids: what scripts read
  std::ostream* err = nullptr;  // progress, hints and errors
  // Redraw one progress line with '\r' (a terminal) instead of printing a
  // line per change (a log file).
  bool interactive_progress = false;
  // Turn SIGINT/SIGTERM into a clean cancellation during `run` and `watch`.
  bool handle_signals = false;
  // Null: this build has no embedded coordinator/worker (`run` fails with
  // UNIMPLEMENTED).
  EmbeddedStarter start_embedded;
  // Used when neither --coordinator nor LAYERFLOW_COORDINATOR is set.
  std::string default_coordinator = "127.0.0.1:7531";
};

// Parses argv and runs one command; returns the process exit code.
int RunCli(int argc, const char* const* argv, const CliEnvironment& env);

// Prints "error: CODE_NAME: message" to `err`.
void PrintError(std::ostream& err, const absl::Status& status);

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_CLI_H_

#include "client/embedded.h"

#include <unistd.h>  // getpid

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "server/coordinator_server.h"
#include "common/worker_process.h"

namespace layerflow::client {
namespace {

class EmbeddedClusterImpl : public EmbeddedCluster {
 public:
  ~EmbeddedClusterImpl() override { Shutdown(); }

  std::string address() const override { return address_; }
  std::string description() const override { return description_; }
  int http_port() const override { return server_ == nullptr ? 0 : server_->http_port(); }

  void Shutdown() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) return;
    down_ = true;
    // Worker first: it may be streaming a chunk to the coordinator.
    watching_ = false;
    if (watch_thread_.joinable()) watch_thread_.join();
    if (worker_ != nullptr) worker_->Stop();
    if (server_ != nullptr) server_->Shutdown();
    if (!temp_dir_.empty()) RemoveTree(temp_dir_);
  }

  std::mutex mu_;
  bool down_ = false;
  std::string address_;
  std::string description_;
  std::string temp_dir_;  // empty when the user chose --db
  std::unique_ptr<server::CoordinatorServer> server_;
  std::unique_ptr<WorkerProcess> worker_;
  std::atomic<bool> watching_{true};
  std::thread watch_thread_;  // notices a worker that died
};

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddedCluster>> StartEmbeddedCluster(
    const EmbeddedOptions& options, CallCanceller* canceller) {
  auto cluster = std::make_unique<EmbeddedClusterImpl>();

  server::CoordinatorOptions server_options;
  // Loopback only and a free port: two `layerflow run`s can coexist and
  // nothing is exposed to the network.
  server_options.listen_address = "127.0.0.1:0";
  server_options.metrics_address = options.metrics_address;
  server_options.http_address = options.http_address;
  if (options.db_path.empty()) {
    absl::StatusOr<std::string> dir = MakeTempPath("layerflow-run", /*directory=*/true);
    if (!dir.ok()) return dir.status();
    cluster->temp_dir_ = *dir;
    server_options.db_path = absl::StrCat(*dir, "/layerflow.db");
  } else {
    server_options.db_path = options.db_path;
  }
  absl::StatusOr<std::unique_ptr<server::CoordinatorServer>> server =
      server::CoordinatorServer::Start(server_options);
  if (!server.ok()) {
    cluster->Shutdown();  // removes the temporary directory
    return absl::Status(server.status().code(),
                        absl::StrCat("embedded coordinator: ", server.status().message()));
  }
  cluster->server_ = std::move(*server);
  cluster->address_ = absl::StrCat("127.0.0.1:", cluster->server_->port());

  // The worker is a child process (common/worker_process.h says
  // why); it picks the CUDA GPUs when the build and the machine have them.
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Spawn({.coordinator_address = cluster->address_,
                            .name = absl::StrCat("layerflow-run-", getpid()),
                            .model_roots = {CurrentFolder()}});
  if (!worker.ok()) {
    cluster->Shutdown();
    return absl::Status(worker.status().code(),
                        absl::StrCat("embedded worker: ", worker.status().message()));
  }
  cluster->worker_ = std::move(*worker);
  EmbeddedClusterImpl* raw = cluster.get();
  cluster->watch_thread_ = std::thread([raw, canceller] {
    // Without its worker nothing would ever finish the sweep: stop waiting.
    while (raw->watching_) {
      if (std::optional<std::string> exit = raw->worker_->Exited(); exit.has_value()) {
        if (canceller != nullptr) {
          canceller->Cancel(absl::UnavailableError(
              absl::StrCat("embedded worker stopped: the layerflow-worker process ", *exit)));
        }
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const std::string devices = "this machine's CPU or CUDA GPUs";
  cluster->description_ =
      absl::StrCat("embedded coordinator on ", cluster->address_, " (store ",
                   server::DescribeDb(server_options.db_path),
                   cluster->temp_dir_.empty() ? "" : ", removed at exit", "), worker on ", devices);
  if (!options.metrics_address.empty()) {
    absl::StrAppend(&cluster->description_, ", metrics on port ", cluster->server_->metrics_port());
  }
  if (!options.http_address.empty()) {
    absl::StrAppend(&cluster->description_, ", results page on port ",
                    cluster->server_->http_port());
  }
  return cluster;
}

}  // namespace layerflow::client

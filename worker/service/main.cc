// layerflow-worker: leases jobs from a coordinator and runs them on this
// machine's CPU or GPUs.
#include <sys/stat.h>

#include <csignal>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "worker/runtime/job_runner.h"
#include "worker/service/worker_loop.h"

namespace {
layerflow::worker::WorkerLoop* g_loop = nullptr;
void HandleSignal(int) {
  // Stop() only takes a mutex and notifies; the loop exits after the chunk
  // in progress (its lease lapses and the job resumes elsewhere).
  if (g_loop != nullptr) g_loop->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  layerflow::worker::WorkerOptions options;
  std::string device = "auto";
  CLI::App app{"layerflow-worker: runs layerflow jobs leased from a coordinator"};
  app.add_option("--coordinator", options.coordinator_address, "Coordinator gRPC address")
      ->capture_default_str();
  app.add_option("--name", options.name, "Name shown in job listings (default: host:pid)");
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--idle-poll-ms", options.idle_poll_ms,
                 "Wait between lease requests when the queue is empty")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--exit-after-idle-ms", options.exit_after_idle_ms,
                 "Exit once the queue has been empty this long (0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pause-after-chunk-ms", options.pause_after_chunk_ms,
                 "Fault injection: sleep after each streamed chunk (tests, demos)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bool no_hf_cache_root = false;
  app.add_option("--model-root", options.files.roots,
                 "A folder whose checkpoint folders jobs may name (repeatable); paths "
                 "outside every root, through ../ or a symbolic link, are refused");
  app.add_flag("--no-hf-cache-root", no_hf_cache_root,
               "Do not count the Hugging Face hub cache as a model root");
  app.add_option("--max-metadata-file-bytes", options.files.limits.max_metadata_bytes,
                 "Largest config.json, tokenizer.json or index file a job may make this "
                 "worker read")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-weights-file-bytes", options.files.limits.max_weights_file_bytes,
                 "Largest single weights file (safetensors shard, pytorch_model.bin)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--resident-model-bytes", options.resident_model_bytes,
                 "Bytes of preset models kept between jobs that need the same weights "
                 "(-1: a quarter of the smallest device's memory; 0: none)")
      ->capture_default_str();
  app.add_flag("--lease-ahead", options.lease_ahead,
               "Lease the next job while the current one runs and prepare its model and "
               "data set meanwhile (given back when the worker stops)");
  app.add_option("--token", options.token,
                 "Worker-role API token of a coordinator started with --auth-db (from "
                 "`layerflow-coordinator tokens create --role worker`); prefer the "
                 "environment variable, which other users' `ps` does not show")
      ->envname("LAYERFLOW_TOKEN");
  app.add_option("--tls-ca", options.tls_ca_file,
                 "PEM CA bundle of a coordinator started with --tls-cert: connect over TLS")
      ->envname("LAYERFLOW_TLS_CA");
  app.add_option("--tls-cert", options.tls_cert_file,
                 "PEM client certificate, for a coordinator started with --tls-client-ca "
                 "(with --tls-key and --tls-ca)");
  app.add_option("--tls-key", options.tls_key_file, "PEM private key of --tls-cert");
  CLI11_PARSE(app, argc, argv);
  options.files.hf_cache = !no_hf_cache_root;
  for (const std::string& root : options.files.roots) {
    struct stat st {};
    if (root.empty() || root[0] != '/' || stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      std::cerr << "error: --model-root " << root << ": not an absolute path to a folder\n";
      return 2;
    }
  }

  layerflow::worker::DeviceConfig devices = layerflow::worker::DetectDevices();
  if (device == "cpu") devices = layerflow::worker::DeviceConfig{"cpu", 0};
  if (device == "cuda" && devices.device_type != "cuda") {
    std::cerr << "error: --device cuda: no CUDA device available to this build\n";
    return 2;
  }
  std::cerr << "layerflow-worker: coordinator=" << options.coordinator_address
            << " device=" << devices.device_type << " gpus=" << devices.gpu_count
            << " idle_poll_ms=" << options.idle_poll_ms
            << " exit_after_idle_ms=" << options.exit_after_idle_ms
            << " pause_after_chunk_ms=" << options.pause_after_chunk_ms
            << " max_metadata_file_bytes=" << options.files.limits.max_metadata_bytes
            << " max_weights_file_bytes=" << options.files.limits.max_weights_file_bytes
            << " resident_model_bytes="
            << (options.resident_model_bytes < 0
                    ? layerflow::worker::DefaultModelCacheBytes(devices)
                    : options.resident_model_bytes)
            << " lease_ahead=" << (options.lease_ahead ? "on" : "off")
            << " token=" << (options.token.empty() ? "none" : "set")
            << " tls=" << (options.tls_ca_file.empty() ? "off" : options.tls_ca_file)
            << " tls_client_cert="
            << (options.tls_cert_file.empty() ? "none" : options.tls_cert_file) << std::endl;
  // This worker's own log may name its folders (job errors never do).
  std::cerr << "layerflow-worker: model roots:";
  const auto roots = layerflow::worker::ResolveModelRoots(options.files);
  for (const auto& root : roots) std::cerr << " " << root.resolved;
  if (roots.empty()) std::cerr << " none (presets only)";
  std::cerr << std::endl;

  auto loop = layerflow::worker::WorkerLoop::Create(options, devices);
  if (!loop.ok()) {
    std::cerr << "error: " << loop.status() << "\n";
    return 2;
  }
  g_loop = loop->get();
  std::signal(SIGINT, HandleSignal);
  std::signal(SIGTERM, HandleSignal);
  absl::Status status = (*loop)->Run();
  g_loop = nullptr;
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  return 0;
}

// Issue 13's checkpoint-loading benchmark: how fast a safetensors checkpoint
// goes from the page cache onto the GPU.
//
//   bench_checkpoint_load --models pythia-2.8b,mamba-2.8b --dtype bf16
//                         --dir /tmp/lf_ckpt --reps 3 --json out.json
//
// For each preset: writes its random-init weights as config.json +
// model.safetensors (the page cache then holds the file, as it does for a
// checkpoint read before), then times, median of --reps:
//   load_ms       LoadModelCheckpoint onto cuda:0, end to end (parse, map,
//                 allocate, copy through the pinned slots, staged_upload.h)
//   staged_ms     the copy alone: UploadStaged into an allocated model
//   pageable_ms   the copy the loader made before: copy_ from the mapping
//                 (pageable memory), tensor by tensor
//   pinned_ms     the PCIe ceiling: one cudaMemcpy of the same byte count
//                 from one pinned buffer
// and checks that the loaded weights equal the written ones bit for bit (and
// in float32, a bf16 file converted on the device, equal to .float()).
// GB/s is file bytes / time. The peers (safetensors' load_file onto cuda,
// transformers' from_pretrained) run from bench/gpu.sh in the same call.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "bench/bench_util.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config_json.h"
#include "worker/model/language_model.h"
#include "worker/model/model_checkpoint.h"
#include "worker/model/model_config.h"
#include "worker/model/staged_upload.h"

namespace lw = layerflow::worker;
using layerflow::bench::Flag;
using layerflow::bench::MedianMs;

namespace {

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

lw::SafetensorsDtype FileDtype(at::ScalarType t) {
  return t == at::kBFloat16 ? lw::SafetensorsDtype::kBF16
         : t == at::kHalf   ? lw::SafetensorsDtype::kF16
                            : lw::SafetensorsDtype::kF32;
}

void Sync() { c10::cuda::device_synchronize(); }

nlohmann::json BenchModel(const std::string& name, c10::ScalarType dtype, const std::string& root,
                          int reps) {
  const c10::Device cuda(c10::kCUDA, 0);
  auto preset = lw::FindModelPreset(name);
  Check(preset.status());
  auto made = lw::CreateRandomModel(preset->config, lw::InitScheme{}, 0, cuda, dtype);
  Check(made.status());
  const std::string dir = root + "/" + name;
  ::mkdir(root.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  {
    std::ofstream(dir + "/config.json") << lw::CheckpointConfigJson(preset->config);
  }
  std::vector<at::Tensor> host;
  std::vector<lw::SafetensorsWriteTensor> entries;
  int64_t bytes = 0;
  for (const auto& [n, t] : (*made)->parameters().items()) {
    host.push_back(t.cpu().contiguous());
    const at::Tensor& h = host.back();
    entries.push_back({n, FileDtype(h.scalar_type()),
                       std::vector<int64_t>(h.sizes().begin(), h.sizes().end()), h.data_ptr(),
                       static_cast<size_t>(h.nbytes())});
    bytes += h.nbytes();
  }
  Check(lw::WriteSafetensors(dir + "/model.safetensors", entries, {{"format", "pt"}}));
  host.clear();
  const double gb = static_cast<double>(bytes) / 1e9;

  // The checkpoint's tensors in the mapping, for the two copy-only timings.
  auto file = lw::SafetensorsFile::Open(dir + "/model.safetensors");
  Check(file.status());
  auto target = lw::CreateEmptyModel(preset->config, cuda, dtype);
  Check(target.status());
  std::vector<lw::HostTensorCopy> copies;
  for (auto& [n, t] : (*target)->mutable_parameters().items()) {
    const lw::SafetensorsTensor* st = (*file)->Find(n);
    if (st == nullptr) Check(absl::NotFoundError(n));
    copies.push_back({st->data, dtype, &t});
  }
  nlohmann::json out = {{"model", name}, {"dtype", c10::toString(dtype)}, {"file_gb", gb}};
  c10::InferenceMode guard;
  const double pageable_ms = MedianMs(reps, [&] {
    for (const lw::HostTensorCopy& c : copies) {
      c.dst->copy_(at::from_blob(const_cast<void*>(c.src), c.dst->sizes(),
                                 at::TensorOptions().dtype(c.file_dtype)));
    }
    Sync();
  });
  const double staged_ms = MedianMs(reps, [&] {
    (void)lw::UploadStaged(copies);
    Sync();
  });
  at::Tensor pinned =
      at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true)).fill_(1);
  at::Tensor device_bytes = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(cuda));
  const double pinned_ms = MedianMs(reps, [&] {
    device_bytes.copy_(pinned);
    Sync();
  });
  pinned.reset();
  device_bytes.reset();
  target->reset();

  std::unique_ptr<lw::LanguageModel> loaded;
  const double load_ms = MedianMs(reps, [&] {
    loaded.reset();
    auto m = lw::LoadModelCheckpoint(dir, dtype, cuda);
    Check(m.status());
    loaded = *std::move(m);
    Sync();
  });
  // Bit for bit as written; and converted on the device to float32.
  int64_t unequal = 0;
  for (const auto& [n, t] : (*made)->parameters().items()) {
    if (!at::equal(t, *loaded->parameters().Find(n))) ++unequal;
  }
  loaded.reset();
  int64_t unequal_fp32 = -1;
  if (dtype != at::kFloat) {
    auto fp32 = lw::LoadModelCheckpoint(dir, at::kFloat, cuda);
    Check(fp32.status());
    unequal_fp32 = 0;
    for (const auto& [n, t] : (*made)->parameters().items()) {
      if (!at::equal(t.to(at::kFloat), *(*fp32)->parameters().Find(n))) ++unequal_fp32;
    }
  }
  out["load_ms"] = load_ms;
  out["staged_ms"] = staged_ms;
  out["pageable_ms"] = pageable_ms;
  out["pinned_ms"] = pinned_ms;
  out["load_gb_s"] = gb / (load_ms / 1e3);
  out["staged_gb_s"] = gb / (staged_ms / 1e3);
  out["pageable_gb_s"] = gb / (pageable_ms / 1e3);
  out["pinned_gb_s"] = gb / (pinned_ms / 1e3);
  out["tensors_unequal"] = unequal;
  out["tensors_unequal_fp32"] = unequal_fp32;
  std::printf(
      "%-12s %.2f GB  load %7.1f ms (%5.1f GB/s)  copy: staged %7.1f ms (%5.1f GB/s), pageable "
      "%7.1f ms (%5.1f GB/s), one pinned cudaMemcpy %7.1f ms (%5.1f GB/s)  unequal %lld / fp32 "
      "%lld\n",
      name.c_str(), gb, load_ms, out["load_gb_s"].get<double>(), staged_ms,
      out["staged_gb_s"].get<double>(), pageable_ms, out["pageable_gb_s"].get<double>(),
      pinned_ms, out["pinned_gb_s"].get<double>(), static_cast<long long>(unequal),
      static_cast<long long>(unequal_fp32));
  std::fflush(stdout);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "bench_checkpoint_load: needs a CUDA device\n");
    return 2;
  }
  const std::vector<std::string> models =
      Split(Flag(argc, argv, "--models", "pythia-2.8b,mamba-2.8b"));
  auto dtype = lw::ParseDtype(Flag(argc, argv, "--dtype", "bf16"));
  Check(dtype.status());
  const std::string root = Flag(argc, argv, "--dir", "/tmp/lf_checkpoint_load");
  const int reps = std::atoi(Flag(argc, argv, "--reps", "3").c_str());
  const std::string json_path = Flag(argc, argv, "--json", "");
  nlohmann::json report = {{"reps", reps}, {"models", nlohmann::json::array()}};
  for (const std::string& m : models) report["models"].push_back(BenchModel(m, *dtype, root, reps));
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  bool ok = true;
  for (const auto& m : report["models"]) {
    ok = ok && m["tensors_unequal"] == 0 && m["tensors_unequal_fp32"].get<int64_t>() <= 0;
  }
  return ok ? 0 : 1;
}

// The probe's last-token feature file (feature_file.h).
#include "worker/runtime/feature_file.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "worker/model/checkpoint.h"
#include "worker/model/torch_status.h"

namespace layerflow::worker {
namespace {

absl::Status Invalid(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

SafetensorsWriteTensor View(const char* name, SafetensorsDtype dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  SafetensorsWriteTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = data;
  t.nbytes = nbytes;
  return t;
}

// The largest |value| among the finite entries (0 for none). |x| and max
// are exact in any floating dtype, so no wider copy is made; one prompt at a
// time, so the temporaries stay one prompt's size.
double MaxFiniteAbs(const at::Tensor& features) {
  double out = 0;
  for (int64_t i = 0; i < features.size(0); ++i) {
    at::Tensor x = features[i].abs();
    if (x.numel() == 0) continue;
    x.masked_fill_(at::logical_not(at::isfinite(x)), 0);
    out = std::max(out, x.max().item<double>());
  }
  return out;
}

at::ScalarType StorageDtype(double max_abs, const std::string& requested) {
  return requested == "fp32" || max_abs > kFp16Max ? at::kFloat : at::kHalf;
}

}  // namespace

at::ScalarType FeatureStorageDtype(const at::Tensor& features, const std::string& requested) {
  if (requested == "fp32") return at::kFloat;
  c10::InferenceMode guard;
  return StorageDtype(MaxFiniteAbs(features), requested);
}

absl::Status WriteFeatureFile(const std::string& path, const at::Tensor& features,
                              const std::vector<int32_t>& labels,
                              const std::vector<int64_t>& prompt_index,
                              const std::string& requested_dtype,
                              const std::vector<int32_t>& points, int64_t num_layers) {
  if (requested_dtype != "fp16" && requested_dtype != "fp32") {
    return Invalid(
        path, absl::StrCat("unknown feature dtype '", requested_dtype, "'; known: fp16, fp32"));
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  if (features.dim() != 3 || features.size(0) != n ||
      static_cast<int64_t>(prompt_index.size()) != n || !features.is_floating_point()) {
    return Invalid(path, absl::StrCat("features ",
                                      ShapeString(std::vector<int64_t>(features.sizes().begin(),
                                                                       features.sizes().end())),
                                      " ", c10::toString(features.scalar_type()), " for ", n,
                                      " labels and ", prompt_index.size(), " prompt indices"));
  }
  if (!points.empty() && (static_cast<int64_t>(points.size()) != features.size(1) ||
                          !std::is_sorted(points.begin(), points.end()) || points.front() < 0 ||
                          points.back() > num_layers + 1 ||
                          std::adjacent_find(points.begin(), points.end()) != points.end())) {
    return Invalid(path, absl::StrCat(points.size(), " points for ", features.size(1),
                                      " feature points of a model of ", num_layers,
                                      " blocks (ascending, distinct, in [0, L + 1])"));
  }
  try {
    c10::InferenceMode guard;
    const double max_abs = MaxFiniteAbs(features);
    const at::ScalarType stored = StorageDtype(max_abs, requested_dtype);
    const at::Tensor data = features.to(at::kCPU).to(stored).contiguous();
    const bool half = stored == at::kHalf;
    std::vector<SafetensorsWriteTensor> tensors = {
        View("features", half ? SafetensorsDtype::kF16 : SafetensorsDtype::kF32,
             {data.size(0), data.size(1), data.size(2)}, data.data_ptr(), data.nbytes()),
        View("labels", SafetensorsDtype::kI32, {n}, labels.data(), labels.size() * 4),
        View("prompt_index", SafetensorsDtype::kI64, {n}, prompt_index.data(),
             prompt_index.size() * 8)};
    std::vector<std::pair<std::string, std::string>> metadata = {
        {"layout", points.empty() ? "features[prompt, point 0..L+1, d] = h_T at each point"
                                  : "features[prompt, k, d] = h_T at point points[k]"},
        {"feature_dtype", half ? "fp16" : "fp32"},
        {"requested_dtype", requested_dtype},
        {"max_abs", absl::StrFormat("%.9g", max_abs)}};
    if (!points.empty()) {
      tensors.push_back(View("points", SafetensorsDtype::kI32,
                             {static_cast<int64_t>(points.size())}, points.data(),
                             points.size() * 4));
      metadata.emplace_back("num_layers", absl::StrCat(num_layers));
    }
    return WriteSafetensors(path, tensors, metadata);
  } catch (...) {
    return StatusOfCurrentException(absl::StrCat(path, ": writing features"));
  }
}

absl::StatusOr<FeatureFile> ReadFeatureFile(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  const SafetensorsTensor* f = (*file)->Find("features");
  const SafetensorsTensor* l = (*file)->Find("labels");
  const SafetensorsTensor* p = (*file)->Find("prompt_index");
  if (f == nullptr || l == nullptr || p == nullptr) {
    return Invalid(path, "expected tensors features, labels and prompt_index");
  }
  if (f->shape.size() != 3 || l->shape.size() != 1 || p->shape.size() != 1 ||
      l->shape[0] != f->shape[0] || p->shape[0] != f->shape[0]) {
    return Invalid(
        path, absl::StrCat("inconsistent shapes: features ", ShapeString(f->shape), ", labels ",
                           ShapeString(l->shape), ", prompt_index ", ShapeString(p->shape)));
  }
  if (l->dtype != SafetensorsDtype::kI32 || p->dtype != SafetensorsDtype::kI64 ||
      (f->dtype != SafetensorsDtype::kF16 && f->dtype != SafetensorsDtype::kF32)) {
    return Invalid(path, "features must be F16/F32, labels I32, prompt_index I64");
  }
  FeatureFile out;
  const bool half = f->dtype == SafetensorsDtype::kF16;
  out.stored_dtype = half ? "fp16" : "fp32";
  auto requested = (*file)->metadata().find("requested_dtype");
  if (requested != (*file)->metadata().end()) out.requested_dtype = requested->second;
  try {
    c10::InferenceMode guard;
    // The mapping may be unaligned: copied byte-wise into an owned tensor.
    out.features = at::empty(f->shape, at::TensorOptions().dtype(half ? at::kHalf : at::kFloat));
    if (static_cast<size_t>(out.features.nbytes()) != f->nbytes) {
      return Invalid(path, "features: size does not match the shape");
    }
    std::memcpy(out.features.data_ptr(), f->data, f->nbytes);
  } catch (...) {
    return StatusOfCurrentException(absl::StrCat(path, ": reading features"));
  }
  out.labels.resize(l->shape[0]);
  std::memcpy(out.labels.data(), l->data, l->nbytes);
  out.prompt_index.resize(p->shape[0]);
  std::memcpy(out.prompt_index.data(), p->data, p->nbytes);
  if (const SafetensorsTensor* k = (*file)->Find("points"); k != nullptr) {
    auto layers = (*file)->metadata().find("num_layers");
    if (k->dtype != SafetensorsDtype::kI32 || k->shape.size() != 1 || k->shape[0] != f->shape[1] ||
        layers == (*file)->metadata().end() || !absl::SimpleAtoi(layers->second, &out.num_layers)) {
      return Invalid(path, absl::StrCat("points must be I32 [", f->shape[1],
                                        "] with a num_layers metadata key"));
    }
    out.points.resize(k->shape[0]);
    std::memcpy(out.points.data(), k->data, k->nbytes);
  }
  return out;
}

}  // namespace layerflow::worker

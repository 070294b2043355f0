// Helpers of the checkpoint tests: temporary folders, a tiny checkpoint
// written by our own safetensors writer, tensor <-> safetensors.
#ifndef LAYERFLOW_TESTS_WORKER_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
#define LAYERFLOW_TESTS_WORKER_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_

#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include "worker/model/checkpoint.h"

namespace layerflow::worker::testing {

inline std::string MakeTempDir() {
  std::string pattern = "/tmp/lf_ckpt_test_XXXXXX";
  char* dir = mkdtemp(pattern.data());
  return dir == nullptr ? std::string() : std::string(dir);
}

// A fixture folder passed in the environment by CTest; "" when unset.
inline std::string EnvDir(const char* variable) {
  const char* dir = std::getenv(variable);
  return dir == nullptr ? std::string() : std::string(dir);
}

// max |ours - ref| / max |ref|, ours upcast to float32.
inline double RelErr(const at::Tensor& ours, const at::Tensor& ref) {
  const double scale = ref.abs().max().item<double>();
  return (ours.to(at::kFloat) - ref).abs().max().item<double>() / scale;
}

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A CPU view of a safetensors tensor (copied: the mapping may go away).
inline at::Tensor ToTensor(const SafetensorsTensor& t) {
  at::ScalarType dtype = at::kFloat;
  switch (t.dtype) {
    case SafetensorsDtype::kF32:
      dtype = at::kFloat;
      break;
    case SafetensorsDtype::kF16:
      dtype = at::kHalf;
      break;
    case SafetensorsDtype::kBF16:
      dtype = at::kBFloat16;
      break;
    case SafetensorsDtype::kI64:
      dtype = at::kLong;
      break;
    case SafetensorsDtype::kI32:
      dtype = at::kInt;
      break;
    default:
      TORCH_CHECK(false, "ToTensor: unsupported dtype");
  }
  return at::from_blob(const_cast<uint8_t*>(t.data), t.shape, at::TensorOptions().dtype(dtype))
      .clone();
}

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_

// UploadStaged (worker/model/staged_upload.h): every tensor holds exactly the
// values copy_ from the host bytes gives it, whatever the slot size, the
// source's alignment or the dtypes. Built twice: as a CTest test on the CPU
// (the plain path), and with LF_STAGED_UPLOAD_GPU as
// worker_staged_upload_gpu_test, which needs a GPU and is run by
// `bash bench/gpu.sh load` (the pinned slots, several slots a tensor).
#include "worker/model/staged_upload.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

namespace layerflow::worker {
namespace {

#ifdef LF_STAGED_UPLOAD_GPU
const c10::Device kDevice(c10::kCUDA, 0);
#else
const c10::Device kDevice(c10::kCPU);
#endif

// The bits of `t` as integers of its width, on the CPU.
at::Tensor Bits(const at::Tensor& t) {
  const at::Tensor cpu = t.cpu().contiguous();
  return cpu.element_size() == 2 ? cpu.view(at::kShort) : cpu.view(at::kInt);
}

// One host tensor written at `offset` bytes into `buffer` (offsets that are
// not a multiple of the element size make unaligned sources, as other
// writers' safetensors files may have).
const void* Place(std::vector<uint8_t>& buffer, size_t offset, const at::Tensor& host) {
  std::memcpy(buffer.data() + offset, host.data_ptr(), host.nbytes());
  return buffer.data() + offset;
}

struct Case {
  at::ScalarType file_dtype;
  at::ScalarType param_dtype;
  std::vector<int64_t> shape;
  size_t offset;  // into the host buffer
};

void ExpectUploadsLikeCopy(int64_t slot_bytes) {
  c10::InferenceMode guard;
  const std::vector<Case> cases = {
      {at::kBFloat16, at::kBFloat16, {37, 271}, 0},  // several slots, a ragged last one
      {at::kFloat, at::kBFloat16, {1000}, 65536},    // converted on the device
      {at::kBFloat16, at::kFloat, {3, 5, 7}, 131073},  // unaligned, widened
      {at::kHalf, at::kHalf, {4097}, 196608},
      {at::kFloat, at::kFloat, {0, 8}, 262144},  // no elements
  };
  std::vector<uint8_t> buffer(int64_t{1} << 20);
  std::vector<at::Tensor> sources, params, expected;
  std::vector<HostTensorCopy> copies;
  at::manual_seed(3);
  for (const Case& c : cases) {
    sources.push_back(at::randn(c.shape, at::kDouble).mul_(3).to(c.file_dtype));
    // A fill queued before the upload must not land after it.
    params.push_back(at::full(c.shape, 7.0, at::TensorOptions().dtype(c.param_dtype).device(kDevice)));
    expected.push_back(sources.back().to(c.param_dtype));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    copies.push_back({Place(buffer, cases[i].offset, sources[i]), cases[i].file_dtype, &params[i]});
  }
  const StagedUploadStats stats = UploadStaged(copies, nullptr, slot_bytes);
  int64_t bytes = 0;
  for (const at::Tensor& s : sources) bytes += s.nbytes();
  EXPECT_EQ(stats.bytes, bytes);
  EXPECT_EQ(stats.staged, kDevice.is_cuda());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(params[i].device(), kDevice);
    EXPECT_EQ(params[i].scalar_type(), cases[i].param_dtype);
    EXPECT_TRUE(at::equal(Bits(params[i]), Bits(expected[i]))) << "case " << i;
  }
}

TEST(StagedUploadTest, SmallSlotsGiveWhatCopyGives) { ExpectUploadsLikeCopy(4096); }
TEST(StagedUploadTest, DefaultSlotsGiveWhatCopyGives) { ExpectUploadsLikeCopy(kStagedSlotBytes); }

#ifdef LF_STAGED_UPLOAD_GPU
// A CPU tensor in the same list is copied on the host, beside the staged ones.
TEST(StagedUploadTest, CpuAndGpuTensorsInOneList) {
  c10::InferenceMode guard;
  const at::Tensor source = at::arange(1000, at::kFloat);
  at::Tensor on_cpu = at::zeros({1000}, at::kFloat);
  at::Tensor on_gpu = at::zeros({1000}, at::TensorOptions().device(kDevice));
  const std::vector<HostTensorCopy> copies = {{source.data_ptr(), at::kFloat, &on_gpu},
                                              {source.data_ptr(), at::kFloat, &on_cpu}};
  UploadStaged(copies, nullptr, 512);
  EXPECT_TRUE(at::equal(on_cpu, source));
  EXPECT_TRUE(at::equal(on_gpu.cpu(), source));
}
#endif

}  // namespace
}  // namespace layerflow::worker

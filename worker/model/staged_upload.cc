#include "worker/model/staged_upload.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#ifdef LF_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace layerflow::worker {
namespace {

int64_t FileBytes(const HostTensorCopy& c) {
  return c.dst->numel() * static_cast<int64_t>(at::elementSize(c.file_dtype));
}

// copy_ from the host bytes; from_blob needs element alignment (our writer
// aligns every tensor, other writers may not).
void CopyPlain(const HostTensorCopy& c) {
  std::vector<uint8_t> aligned;
  const void* data = c.src;
  if (reinterpret_cast<uintptr_t>(data) % at::elementSize(c.file_dtype) != 0) {
    const auto* bytes = static_cast<const uint8_t*>(c.src);
    aligned.assign(bytes, bytes + FileBytes(c));
    data = aligned.data();
  }
  at::Tensor source = at::from_blob(const_cast<void*>(data), c.dst->sizes(),
                                    at::TensorOptions().dtype(c.file_dtype));
  c.dst->copy_(source);
}

#ifdef LF_WITH_CUDA
// memcpy on the intra-op threads, 4 MiB a task: one thread takes the page
// faults of a cold mapping one after another (~2 GB/s), several overlap them.
void ParallelMemcpy(uint8_t* dst, const uint8_t* src, int64_t n) {
  constexpr int64_t kGrain = int64_t{4} << 20;
  at::parallel_for(0, (n + kGrain - 1) / kGrain, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t off = i * kGrain;
      std::memcpy(dst + off, src + off, std::min(kGrain, n - off));
    }
  });
}

// The two-slot pipeline for the CUDA tensors of one device. Invariant: slot
// k is refilled only after events[k] (its last DMA) has completed.
void UploadThroughSlots(const std::vector<size_t>& order, const std::vector<HostTensorCopy>& copies,
                        c10::Device device, int64_t slot_bytes, size_t* current) {
  c10::cuda::CUDAGuard device_guard(device);
  const c10::cuda::CUDAStream producer = c10::cuda::getCurrentCUDAStream(device.index());
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, device.index());
  {
    at::cuda::CUDAEvent ready;
    ready.record(producer);
    ready.block(stream);
  }
  c10::cuda::CUDAStreamGuard stream_guard(stream);
  at::Tensor slots[2];
  at::cuda::CUDAEvent drained[2];
  bool in_flight[2] = {false, false};
  for (at::Tensor& slot : slots) {
    slot = at::empty({slot_bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  }
  int k = 0;
  try {
    for (size_t index : order) {
      if (current != nullptr) *current = index;
      const HostTensorCopy& c = copies[index];
      at::Tensor& dst = *c.dst;
      // Bytes land in dst itself when no conversion is needed; otherwise in a
      // file-dtype tensor allocated on this stream (the caching allocator
      // reuses it only in this stream's order) and converted here.
      const bool direct = dst.scalar_type() == c.file_dtype && dst.is_contiguous();
      at::Tensor landing = direct ? dst : at::empty(dst.sizes(), dst.options().dtype(c.file_dtype));
      auto* to = static_cast<uint8_t*>(landing.data_ptr());
      const auto* from = static_cast<const uint8_t*>(c.src);
      const int64_t nbytes = FileBytes(c);
      for (int64_t off = 0; off < nbytes; off += slot_bytes) {
        const int64_t n = std::min(slot_bytes, nbytes - off);
        if (in_flight[k]) drained[k].synchronize();
        auto* slot = static_cast<uint8_t*>(slots[k].data_ptr());
        ParallelMemcpy(slot, from + off, n);
        C10_CUDA_CHECK(cudaMemcpyAsync(to + off, slot, n, cudaMemcpyHostToDevice, stream.stream()));
        drained[k].record(stream);
        in_flight[k] = true;
        k ^= 1;
      }
      if (!direct) dst.copy_(landing);
    }
  } catch (...) {
    // No DMA may still read a slot that is freed on the way out.
    (void)cudaStreamSynchronize(stream.stream());
    throw;
  }
  // The parameters are read on other streams next: finish here.
  stream.synchronize();
}
#endif

}  // namespace

StagedUploadStats UploadStaged(const std::vector<HostTensorCopy>& copies, size_t* current,
                               int64_t slot_bytes) {
  StagedUploadStats stats;
  std::vector<size_t> staged;
  for (size_t i = 0; i < copies.size(); ++i) {
    stats.bytes += FileBytes(copies[i]);
#ifdef LF_WITH_CUDA
    if (copies[i].dst->is_cuda()) {
      staged.push_back(i);
      continue;
    }
#endif
    if (current != nullptr) *current = i;
    CopyPlain(copies[i]);
  }
#ifdef LF_WITH_CUDA
  // One pipeline per device, each in address order (the file's order
  // within a mapping, for the page cache's read-ahead).
  while (!staged.empty()) {
    const c10::Device device = copies[staged.front()].dst->device();
    std::vector<size_t> here, rest;
    for (size_t i : staged) (copies[i].dst->device() == device ? here : rest).push_back(i);
    std::stable_sort(here.begin(), here.end(), [&](size_t a, size_t b) {
      return std::less<const void*>()(copies[a].src, copies[b].src);
    });
    UploadThroughSlots(here, copies, device, slot_bytes, current);
    staged = std::move(rest);
    stats.staged = true;
  }
#endif
  return stats;
}

}  // namespace layerflow::worker

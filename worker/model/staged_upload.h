// Host bytes (a memory-mapped checkpoint) into device tensors through two
// pinned staging buffers.
//
// Why: a copy_ from pageable memory makes the driver bounce every byte
// through its own small pinned buffer and return only when the piece has
// landed, so reading the page cache and the DMA take turns. Here the CPU
// fills one pinned slot from the page cache (several threads: the page
// faults of a mapping are taken in parallel) while the DMA engine drains the
// other, so a checkpoint loads at the slower of the two, and the host holds
// at most two slots of it beyond the page cache.
#ifndef LAYERFLOW_WORKER_MODEL_STAGED_UPLOAD_H_
#define LAYERFLOW_WORKER_MODEL_STAGED_UPLOAD_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace layerflow::worker {

// One tensor's bytes on the host, laid out as `file_dtype` in dst's shape
// (row-major), for `dst`.
struct HostTensorCopy {
  const void* src = nullptr;
  at::ScalarType file_dtype = at::kFloat;
  at::Tensor* dst = nullptr;
};

struct StagedUploadStats {
  int64_t bytes = 0;   // host bytes read
  bool staged = false; // through the pinned slots (false: plain copy_)
};

inline constexpr int64_t kStagedSlotBytes = int64_t{32} << 20;

// Copies every entry into its tensor, converting on the device where dst's
// dtype differs from the file's. All on CUDA tensors of one device go
// through the pinned slots on a stream of their own (which first waits for
// the current stream, so a fill queued there before cannot overwrite them);
// other tensors (the CPU) by copy_. Returns when every tensor holds its
// values. Throws c10::Error on a LibTorch or CUDA failure, with *current
// (when given) the index of the entry being copied, so that the caller's
// edge turns it into a status naming the tensor.
StagedUploadStats UploadStaged(const std::vector<HostTensorCopy>& copies,
                               size_t* current = nullptr,
                               int64_t slot_bytes = kStagedSlotBytes);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_STAGED_UPLOAD_H_

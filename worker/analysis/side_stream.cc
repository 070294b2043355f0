#include "worker/analysis/side_stream.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>

#ifdef LF_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace layerflow::worker {

#ifdef LF_WITH_CUDA
struct SideStream::Impl {
  explicit Impl(c10::Device device)
      : side(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())),
        caller(c10::cuda::getCurrentCUDAStream(device.index())) {}
  c10::cuda::CUDAStream side;
  c10::cuda::CUDAStream caller;  // the forward's stream at the last Enter
  std::optional<c10::cuda::CUDAStreamGuard> guard;
  // Done-events of the last points' analyses, oldest first (<= kMaxLag).
  std::deque<at::cuda::CUDAEvent> done;
};

namespace {
bool SwitchedOn() {
  const char* v = std::getenv("LAYERFLOW_ANALYSIS_STREAM");
  return v == nullptr || std::strcmp(v, "0") != 0;
}
}  // namespace

SideStream::SideStream(c10::Device device) {
  if (device.is_cuda() && SwitchedOn()) impl_ = std::make_unique<Impl>(device);
}

SideStream::~SideStream() {
  // Whatever the side stream still has queued (a batch that threw part-way)
  // is ordered before the caller's later work, so memory the caller frees
  // after this (the accumulator's sums) is not reused under it.
  try {
    Join();
  } catch (...) {
  }
}

SideStream::Scope SideStream::Enter(const at::Tensor& states) {
  if (impl_ != nullptr) {
    Impl& s = *impl_;
    s.caller = c10::cuda::getCurrentCUDAStream(s.side.device_index());
    at::cuda::CUDAEvent ready;
    ready.record(s.caller);
    ready.block(s.side);
    if (states.defined() && states.is_cuda()) states.record_stream(s.side);
    s.guard.emplace(s.side);
  }
  return Scope(this);
}

void SideStream::Leave() {
  if (impl_ == nullptr) return;
  Impl& s = *impl_;
  s.guard.reset();  // the caller's stream is current again
  at::cuda::CUDAEvent finished;
  finished.record(s.side);
  s.done.push_back(std::move(finished));
  while (static_cast<int>(s.done.size()) > kMaxLag) {
    s.done.front().block(s.caller);
    s.done.pop_front();
  }
}

void SideStream::Join() {
  if (impl_ == nullptr) return;
  Impl& s = *impl_;
  s.guard.reset();
  at::cuda::CUDAEvent finished;
  finished.record(s.side);
  finished.block(c10::cuda::getCurrentCUDAStream(s.side.device_index()));
  s.done.clear();
}

#else  // no CUDA in this build: always inert
struct SideStream::Impl {};
SideStream::SideStream(c10::Device) {}
SideStream::~SideStream() = default;
SideStream::Scope SideStream::Enter(const at::Tensor&) { return Scope(this); }
void SideStream::Leave() {}
void SideStream::Join() {}
#endif

SideStream::Scope::~Scope() {
  try {
    owner_->Leave();
  } catch (...) {
    // Leave's event calls failing means the device is gone; the next CUDA
    // call reports it with its own error.
  }
}

}  // namespace layerflow::worker

// The analysis's kernels on a stream of their own, beside the forward's.
//
// Why: the per-point passes are read-bound (a point's states, once) and the
// forward's projections are tensor-core-bound; queued on one stream they run
// one after the other, ~16% of an SSM forward at 8 x 2048 (bench/RESULTS.md).
// On a second stream the GPU overlaps them: point p's analysis runs while
// the forward computes block p + 1.
//
// Ordering, and the invariants it keeps:
//   - Enter(p) makes the side stream wait for the forward's work queued so
//     far (point p's states are complete when its analysis starts), and
//     marks the states as used by the side stream, so the caching allocator
//     does not hand their memory to the forward before the analysis has read
//     them (the forward frees point p once block p + 1 has consumed it).
//   - Leaving point p makes the forward wait for the analysis of point
//     p - kMaxLag: at most kMaxLag + 1 points' states are held beyond what
//     the forward itself holds (memory bounded at ~2 points, e.g. 2 x 134 MB
//     for Mamba-1.4B's float32 residual at 8 x 2048).
//   - Join() makes the forward wait for everything queued on the side
//     stream; the accumulator calls it at EndBatch, so its sums (read by the
//     caller on the forward's stream) are complete, and nothing allocated on
//     the side stream is still in use once the batch's tensors are freed.
// The analysis's own tensors are allocated, used and freed on the side
// stream only (the caching allocator's pool of that stream).
// On the CPU, or with LAYERFLOW_ANALYSIS_STREAM=0, everything is inert and
// the analysis runs on the caller's stream as before.
#ifndef LAYERFLOW_WORKER_ANALYSIS_SIDE_STREAM_H_
#define LAYERFLOW_WORKER_ANALYSIS_SIDE_STREAM_H_

#include <memory>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace layerflow::worker {

class SideStream {
 public:
  static constexpr int kMaxLag = 1;

  // Inert unless `device` is CUDA and the switch is on.
  explicit SideStream(c10::Device device);
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  bool active() const { return impl_ != nullptr; }

  // While a Scope lives, the current stream of the device is the side
  // stream (the header comment says what entering and leaving order).
  class Scope {
   public:
    ~Scope();
    Scope(Scope&&) = delete;

   private:
    friend class SideStream;
    explicit Scope(SideStream* owner) : owner_(owner) {}
    SideStream* owner_;
  };
  [[nodiscard]] Scope Enter(const at::Tensor& states);

  // The caller's stream waits for all the side stream's work.
  void Join();

 private:
  struct Impl;
  void Leave();
  std::unique_ptr<Impl> impl_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_SIDE_STREAM_H_

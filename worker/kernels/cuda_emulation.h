// A CPU emulation of the CUDA execution model, just enough to run the SSM
// kernels of this folder in CI, where there is no GPU (LF_CUDA_EMULATION;
// tests/worker/kernels/). Each launch runs one OS thread per CUDA thread of
// a block and the blocks one after another; __syncthreads and __syncwarp
// are real barriers, warp shuffles exchange through a per-warp buffer
// between two barriers, __shared__ variables are function statics (one
// block runs at a time, so its threads share them), and a WMMA fragment is
// a whole 16 x 16 tile that every lane of the warp computes (stores by lane
// 0). So indexing, tiling, padding and the barriers' placement are checked
// on the CPU; what only the hardware shows (timing, the tensor cores'
// accumulation order, occupancy, alignment faults) is not.
#ifndef LAYERFLOW_WORKER_KERNELS_CUDA_EMULATION_H_
#define LAYERFLOW_WORKER_KERNELS_CUDA_EMULATION_H_

// Before any CUDA header, so host_defines.h keeps these.
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_types.h>

namespace lf_emu {

struct Block {
  dim3 grid_dim, block_dim, block_idx;
  unsigned char* smem = nullptr;
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<std::array<uint64_t, 32>> exchange;                     // a slot per lane, per warp
  std::vector<std::array<std::array<unsigned char, 64>, 32>> gather;  // AllGather's
};

struct Thread {
  Block* block = nullptr;
  dim3 thread_idx;
};
inline thread_local Thread self;

inline unsigned char* DynamicSmem() { return self.block->smem; }
inline unsigned Lane() { return self.thread_idx.x % 32; }
inline std::barrier<>& WarpBarrier() { return *self.block->warps[self.thread_idx.x / 32]; }

// Runs kernel(args...) on every thread of every block (1-D blocks).
template <typename Kernel, typename... Args>
void Launch(dim3 grid, dim3 block, size_t smem_bytes, Kernel kernel, Args... args) {
  const unsigned threads = block.x * block.y * block.z;
  Block b;
  b.grid_dim = grid;
  b.block_dim = block;
  std::vector<uint64_t> smem((smem_bytes + 7) / 8 + 16);
  b.smem = reinterpret_cast<unsigned char*>(smem.data());
  b.all = std::make_unique<std::barrier<>>(threads);
  for (unsigned w = 0; w * 32 < threads; ++w) {
    const unsigned lanes = threads - w * 32 < 32 ? threads - w * 32 : 32;
    b.warps.push_back(std::make_unique<std::barrier<>>(lanes));
  }
  b.exchange.resize(b.warps.size());
  b.gather.resize(b.warps.size());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      self.block = &b;
      self.thread_idx = dim3(t, 0, 0);
      for (unsigned z = 0; z < grid.z; ++z) {
        for (unsigned y = 0; y < grid.y; ++y) {
          for (unsigned x = 0; x < grid.x; ++x) {
            // Thread 0 publishes the block index once all have left the last.
            if (t == 0) b.block_idx = dim3(x, y, z);
            b.all->arrive_and_wait();
            kernel(args...);
            b.all->arrive_and_wait();
          }
        }
      }
    });
  }
  for (std::thread& t : pool) t.join();
}

template <typename T>
T Exchange(T value, unsigned source_lane) {
  static_assert(sizeof(T) <= 8);
  auto& slots = self.block->exchange[self.thread_idx.x / 32];
  std::memcpy(&slots[Lane()], &value, sizeof(T));
  WarpBarrier().arrive_and_wait();
  T out;
  std::memcpy(&out, &slots[source_lane], sizeof(T));
  WarpBarrier().arrive_and_wait();
  return out;
}

// Every lane's value, for each lane of the warp (a whole warp: the
// register fragments of mma.sync and ldmatrix's row addresses, mma.cuh).
template <typename T>
std::array<T, 32> AllGather(const T& value) {
  static_assert(sizeof(T) <= 64 && std::is_trivially_copyable_v<T>);
  auto& slots = self.block->gather[self.thread_idx.x / 32];
  std::memcpy(slots[Lane()].data(), &value, sizeof(T));
  WarpBarrier().arrive_and_wait();
  std::array<T, 32> out;
  for (unsigned lane = 0; lane < 32; ++lane) std::memcpy(&out[lane], slots[lane].data(), sizeof(T));
  WarpBarrier().arrive_and_wait();
  return out;
}

}  // namespace lf_emu

#define threadIdx (::lf_emu::self.thread_idx)
#define blockIdx (::lf_emu::self.block->block_idx)
#define blockDim (::lf_emu::self.block->block_dim)
#define gridDim (::lf_emu::self.block->grid_dim)

inline void __syncthreads() { ::lf_emu::self.block->all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::lf_emu::WarpBarrier().arrive_and_wait(); }
template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask) {
  return ::lf_emu::Exchange(value, ::lf_emu::Lane() ^ static_cast<unsigned>(mask));
}
template <typename T>
T __shfl_sync(unsigned, T value, int src_lane) {
  return ::lf_emu::Exchange(value, static_cast<unsigned>(src_lane) % 32u);
}
template <typename T>
T __shfl_up_sync(unsigned, T value, unsigned delta) {
  const unsigned lane = ::lf_emu::Lane();
  const T up = ::lf_emu::Exchange(value, lane >= delta ? lane - delta : lane);
  return lane >= delta ? up : value;
}
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta) {
  const unsigned lane = ::lf_emu::Lane();
  const T down = ::lf_emu::Exchange(value, lane + delta < 32 ? lane + delta : lane);
  return lane + delta < 32 ? down : value;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// The fast intrinsics: the exact operations here (the device's differ by a
// few ulp of float32; kernels use them only where a half rounding follows).
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float x, float y) { return x / y; }

// WMMA: 16 x 16 x 16 tiles, float accumulators.
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int num_elements = 16 * 16;
  T x[16 * 16];  // (row, col) of the tile at x[row * 16 + col]
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      f.x[r * 16 + c] = std::is_same_v<Layout, row_major> ? p[r * ld + c] : p[r + c * ld];
    }
  }
}
// An accumulator tile read back from memory (every lane reads it whole).
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ld, layout_t layout) {
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      f.x[r * 16 + c] = layout == mem_row_major ? p[r * ld + c] : p[r + c * ld];
    }
  }
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  fragment<accumulator, 16, 16, 16, float> out;
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      float acc = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) {
        acc += static_cast<float>(a.x[i * 16 + k]) * static_cast<float>(b.x[k * 16 + j]);
      }
      out.x[i * 16 + j] = acc;
    }
  }
  d = out;
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ld, layout_t layout) {
  if (::lf_emu::Lane() != 0) return;  // a collective store: one lane writes
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      (layout == mem_row_major ? p[r * ld + c] : p[r + c * ld]) = f.x[r * 16 + c];
    }
  }
}
}  // namespace nvcuda::wmma

#endif  // LAYERFLOW_WORKER_KERNELS_CUDA_EMULATION_H_

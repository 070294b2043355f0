// CUDA kernels of the state-space models' forward (Mamba, Mamba-2): raw
// device pointers, element strides and a stream, no LibTorch, so nvcc
// compiles these translation units alone in seconds. The LibTorch side
// (worker/model/ssm_ops.cc) checks shapes and dtypes, launches them on CUDA
// tensors, and keeps the ATen path as the reference and as the path on
// every other device.
//
// Layout: every [batch, seq, channels] tensor is token-major, a row of
// `channels` values per token with a row stride of its own (the kernels read
// strided views of the input projection in place: no transposed copies).
// Rounding: where the ATen path (and Hugging Face's torch path) rounds an
// intermediate to the model dtype, the kernels round there too, so the two
// paths differ by accumulation order and by the scan's state, which the
// kernels keep in float32 where the ATen path rounds it to the model dtype
// before C (as the Mamba authors' fused kernel does).
#ifndef LAYERFLOW_WORKER_KERNELS_SSM_KERNELS_H_
#define LAYERFLOW_WORKER_KERNELS_SSM_KERNELS_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace layerflow::worker::cuda_kernels {

// The model dtype of the activations a kernel reads and writes.
enum class ActType { kFloat32, kBFloat16, kFloat16 };

// out[b, t, c] = silu(bias[c] + sum_k w[c, k] x[b, t - K + 1 + k, c]) (x = 0
// before t = 0), the sum in float32 and rounded to the dtype, then SiLU,
// rounded again (conv1d then SiLU, as the ATen path). x rows: x_row
// elements apart; w [C, K] and bias [C] (may be null) in the dtype; out
// [B, L, C] contiguous. K <= 8.
cudaError_t LaunchCausalConv1dSilu(ActType type, const void* x, int64_t x_row, const void* w,
                                   const void* bias, int64_t batch, int64_t seq, int64_t channels,
                                   int kernel, void* out, cudaStream_t stream);

// Mamba's selective scan with its gate (MambaMixer after x_proj / dt_proj),
// per channel e of E and state s of N:
//   delta_t = softplus(dt_t + dt_bias)            (both rounded as ATen)
//   h_t[s]  = exp(delta_t A[e, s]) h_{t-1}[s] + delta_t B_t[s] u_t
//   y_t     = (sum_s C_t[s] h_t[s] + D[e] u_t) silu(z_t)
// the state in float32 registers, never in memory. u, dt, z: [B, L, E]
// rows (strides in elements); B, C: [B, L, N] rows (bc_row); A [E, N]
// float32; dt_bias [E] and D [E] float32 (already rounded to the dtype by
// the caller; D may be null); y [B, L, E] contiguous in the dtype;
// delta_out (may be null) [B, L, E] float32: delta_t, for the spectra.
// N must be 16, 32 or 64.
struct SelectiveScanArgs {
  ActType type = ActType::kFloat32;
  int64_t batch = 0, seq = 0, channels = 0, states = 0;
  const void* u = nullptr;
  int64_t u_row = 0;
  const void* dt = nullptr;
  int64_t dt_row = 0;
  const void* z = nullptr;
  int64_t z_row = 0;
  const void* B = nullptr;
  const void* C = nullptr;
  int64_t bc_row = 0;
  const float* A = nullptr;
  const float* dt_bias = nullptr;
  const float* D = nullptr;
  void* y = nullptr;
  float* delta_out = nullptr;
};
bool SelectiveScanSupports(int64_t states);
cudaError_t LaunchSelectiveScan(const SelectiveScanArgs& args, cudaStream_t stream);

// Mamba-2's SSD scan (the chunked form of h_t = exp(dt_t A_h) h_{t-1} +
// dt_t x_t B_t^T, y_t = C_t h_t + D_h x_t, per head h of H with state
// [P, N]) on tensor cores, in three kernels:
//   1. per (prompt, chunk, head): the chunk's own final state
//      sum_s exp(Acum_end - Acum_s) dt_s x_s B_s^T  (bf16/fp16 MMA, float32
//      accumulation) and its total decay Acum_end;
//   2. per (prompt, head): the states entering each chunk, passed along the
//      chunks in float32 (in place);
//   3. per (prompt, chunk, head, 64 rows): y = (C B^T o decay o dt) x
//      + exp(Acum_l) C h_enter^T + D x, the intra-chunk products on tensor
//      cores with the decay applied between them; y summed in float32 and
//      rounded to the dtype (as the Mamba authors' chunk scan returns it).
// Then the gated RMSNorm of Mamba2Mixer on each token's whole row of E = H P:
//   out = w * (g / rms(g)), g = y silu(gate)  (float32, rounded once).
// xbc: the conv output [B, L, E + 2 G N] contiguous in the dtype (x, then
// B of G groups, then C); dt [B, L, H] float32 (after softplus and clamp);
// A [H], D [H] (may be null) float32; gate rows gate_row elements apart;
// norm_weight [E] in the dtype; out [B, L, E] contiguous in the dtype;
// work: SsdWorkspaceFloats(...) float32 scratch. bf16 / fp16 only; P = 64,
// N a multiple of 16 up to 256, chunk a multiple of 64.
struct SsdArgs {
  ActType type = ActType::kBFloat16;
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0, groups = 0, states = 0, chunk = 0;
  const void* xbc = nullptr;
  const float* dt = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  const void* gate = nullptr;
  int64_t gate_row = 0;
  const void* norm_weight = nullptr;
  double eps = 1e-5;
  void* out = nullptr;
  float* work = nullptr;
};
bool SsdSupports(ActType type, int64_t head_dim, int64_t states, int64_t chunk);
int64_t SsdWorkspaceFloats(const SsdArgs& args);
cudaError_t LaunchSsd(const SsdArgs& args, cudaStream_t stream);

// The boundary between two Mamba / Mamba-2 blocks (residual_in_fp32):
//   sum = residual + mixer            (float32, as ATen's promoting add)
//   out = w * T(h rsqrt(mean(h^2) + eps)), h = T(sum)   (MambaRMSNorm)
// residual, sum [rows, width] float32 contiguous (distinct); mixer, weight
// [width] and out in the dtype, contiguous; every pointer 16-byte aligned.
// bf16 / fp16, width a multiple of 8 up to 8192.
bool AddRmsNormSupports(ActType type, int64_t width);
cudaError_t LaunchAddRmsNorm(ActType type, const float* residual, const void* mixer,
                             const void* weight, int64_t rows, int64_t width, double eps,
                             float* sum, void* out, cudaStream_t stream);

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_KERNELS_SSM_KERNELS_H_

#include "worker/model/ssm_ops.h"

#include <cmath>

#include <ATen/ATen.h>

#include <atomic>

#include "absl/strings/match.h"
#include "worker/kernels/kernel_switch.h"

#ifdef LF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "worker/kernels/ssm_kernels.h"
#endif

namespace layerflow::worker::ssm {
namespace {

// On unless LAYERFLOW_SSM_KERNELS=0 (worker/kernels/kernel_switch.h).
std::atomic<bool> kernels_enabled{SsmKernelsRequested()};

#ifdef LF_WITH_CUDA
namespace ck = cuda_kernels;

ck::ActType ActTypeOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
      return ck::ActType::kBFloat16;
    case at::kHalf:
      return ck::ActType::kFloat16;
    default:
      return ck::ActType::kFloat32;
  }
}

cudaStream_t StreamOf(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

void CheckLaunch(cudaError_t error, const char* kernel) {
  TORCH_CHECK(error == cudaSuccess, "CUDA kernel ", kernel, " failed: ", cudaGetErrorString(error));
}

// A token-major [B, L, C] view the kernels can read in place: unit stride
// along C, and prompts one after another (stride(0) = L stride(1)).
void CheckRows(const at::Tensor& t, const char* what, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == like.size(0) && t.size(1) == like.size(1) &&
                  t.stride(2) == 1 && t.stride(0) == t.size(1) * t.stride(1) &&
                  t.scalar_type() == like.scalar_type() && t.is_cuda(),
              "SSM kernels: ", what, " must be token-major [", like.size(0), ", ", like.size(1),
              ", C] rows of ", like.scalar_type(), ", got sizes ", t.sizes(), " strides ",
              t.strides(), " ", t.scalar_type());
}
#endif

}  // namespace

bool UseSsmKernels(const at::Tensor& hidden) {
#ifdef LF_WITH_CUDA
  const at::ScalarType type = hidden.scalar_type();
  return kernels_enabled.load() && hidden.is_cuda() &&
         (type == at::kFloat || type == at::kBFloat16 || type == at::kHalf);
#else
  (void)hidden;
  return false;
#endif
}

void SetSsmKernelsEnabled(bool enabled) { kernels_enabled.store(enabled); }

at::Tensor CausalConv1dSiluRows(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias) {
#ifdef LF_WITH_CUDA
  if (UseSsmKernels(x)) {
    CheckRows(x, "conv input", x);
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t batch = x.size(0), seq = x.size(1), channels = x.size(2);
    const int64_t taps = weight.size(-1);
    TORCH_CHECK(weight.numel() == channels * taps, "SSM kernels: conv weight ", weight.sizes(),
                " for ", channels, " channels");
    const at::Tensor w = weight.to(x.scalar_type()).contiguous();
    const at::Tensor bv = bias.defined() ? bias.to(x.scalar_type()).contiguous() : bias;
    at::Tensor out = at::empty({batch, seq, channels}, x.options());
    CheckLaunch(
        ck::LaunchCausalConv1dSilu(ActTypeOf(x), x.data_ptr(), x.stride(1), w.data_ptr(),
                                   bv.defined() ? bv.data_ptr() : nullptr, batch, seq, channels,
                                   static_cast<int>(taps), out.data_ptr(), StreamOf(x)),
        "CausalConv1dSilu");
    return out;
  }
#endif
  return CausalConv1dSilu(x.transpose(1, 2), weight, bias).transpose(1, 2).contiguous();
}

bool SelectiveScanKernelSupports(int64_t states) {
#ifdef LF_WITH_CUDA
  return ck::SelectiveScanSupports(states);
#else
  (void)states;
  return false;
#endif
}

at::Tensor SelectiveScanCuda(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& z,
                             const at::Tensor& B, const at::Tensor& C, const at::Tensor& A,
                             const at::Tensor& dt_bias, const at::Tensor& D, at::Tensor* delta) {
#ifdef LF_WITH_CUDA
  TORCH_CHECK(UseSsmKernels(u), "SSM kernels: selective scan needs CUDA states");
  CheckRows(u, "u", u);
  CheckRows(dt, "dt", u);
  CheckRows(z, "z", u);
  CheckRows(B, "B", u);
  CheckRows(C, "C", u);
  const int64_t batch = u.size(0), seq = u.size(1), e = u.size(2), n = B.size(2);
  TORCH_CHECK(dt.size(2) == e && z.size(2) == e && C.size(2) == n && B.stride(1) == C.stride(1),
              "SSM kernels: selective scan shapes differ");
  TORCH_CHECK(A.sizes() == at::IntArrayRef({e, n}), "SSM kernels: A must be [", e, ", ", n,
              "], got ", A.sizes());
  TORCH_CHECK(SelectiveScanKernelSupports(n), "SSM kernels: no selective scan for state size ", n);
  c10::cuda::CUDAGuard guard(u.device());
  // As the ATen path: the bias rounded to the dtype, A and D in float32.
  const at::Tensor a = A.to(at::kFloat).contiguous();
  const at::Tensor bias = dt_bias.to(u.scalar_type()).to(at::kFloat).contiguous();
  const at::Tensor d = D.defined() ? D.to(at::kFloat).contiguous() : D;
  at::Tensor y = at::empty({batch, seq, e}, u.options());
  if (delta != nullptr) *delta = at::empty({batch, seq, e}, u.options().dtype(at::kFloat));
  ck::SelectiveScanArgs args;
  args.type = ActTypeOf(u);
  args.batch = batch, args.seq = seq, args.channels = e, args.states = n;
  args.u = u.data_ptr(), args.u_row = u.stride(1);
  args.dt = dt.data_ptr(), args.dt_row = dt.stride(1);
  args.z = z.data_ptr(), args.z_row = z.stride(1);
  args.B = B.data_ptr(), args.C = C.data_ptr(), args.bc_row = B.stride(1);
  args.A = a.data_ptr<float>();
  args.dt_bias = bias.data_ptr<float>();
  args.D = d.defined() ? d.data_ptr<float>() : nullptr;
  args.y = y.data_ptr();
  args.delta_out = delta != nullptr ? delta->data_ptr<float>() : nullptr;
  CheckLaunch(ck::LaunchSelectiveScan(args, StreamOf(u)), "SelectiveScan");
  return y;
#else
  (void)u, (void)dt, (void)z, (void)B, (void)C, (void)A, (void)dt_bias, (void)D, (void)delta;
  TORCH_CHECK(false, "SSM kernels: this build has no CUDA");
#endif
}

bool SsdKernelSupports(const at::Tensor& hidden, int64_t head_dim, int64_t states, int64_t chunk) {
#ifdef LF_WITH_CUDA
  return UseSsmKernels(hidden) && ck::SsdSupports(ActTypeOf(hidden), head_dim, states, chunk);
#else
  (void)hidden, (void)head_dim, (void)states, (void)chunk;
  return false;
#endif
}

at::Tensor SsdGatedNormCuda(const at::Tensor& xbc, const at::Tensor& dt, const at::Tensor& A,
                            const at::Tensor& D, const at::Tensor& gate,
                            const at::Tensor& norm_weight, int64_t heads, int64_t head_dim,
                            int64_t groups, int64_t states, int64_t chunk, double eps) {
#ifdef LF_WITH_CUDA
  TORCH_CHECK(SsdKernelSupports(xbc, head_dim, states, chunk), "SSM kernels: no SSD kernel for ",
              xbc.scalar_type(), ", head_dim ", head_dim, ", state size ", states, ", chunk ",
              chunk);
  const int64_t batch = xbc.size(0), seq = xbc.size(1), e = heads * head_dim;
  TORCH_CHECK(xbc.is_contiguous() && xbc.size(2) == e + 2 * groups * states,
              "SSM kernels: xBC must be contiguous [", batch, ", ", seq, ", ",
              e + 2 * groups * states, "], got ", xbc.sizes());
  CheckRows(gate, "gate", xbc);
  TORCH_CHECK(gate.size(2) == e, "SSM kernels: gate width ", gate.size(2), " != ", e);
  TORCH_CHECK(dt.sizes() == at::IntArrayRef({batch, seq, heads}), "SSM kernels: dt must be [",
              batch, ", ", seq, ", ", heads, "], got ", dt.sizes());
  c10::cuda::CUDAGuard guard(xbc.device());
  // The norm reads the gate 8 values a load: rows a multiple of 8 apart
  // (true of every preset's in_proj; a copy otherwise).
  const at::Tensor gate_rows =
      gate.stride(1) % 8 == 0 && gate.storage_offset() % 8 == 0 ? gate : gate.contiguous();
  const at::Tensor dtf = dt.to(at::kFloat).contiguous();
  const at::Tensor a = A.to(at::kFloat).contiguous();
  const at::Tensor d = D.defined() ? D.to(at::kFloat).contiguous() : D;
  const at::Tensor w = norm_weight.to(xbc.scalar_type()).contiguous();
  at::Tensor out = at::empty({batch, seq, e}, xbc.options());
  ck::SsdArgs args;
  args.type = ActTypeOf(xbc);
  args.batch = batch, args.seq = seq, args.heads = heads, args.head_dim = head_dim;
  args.groups = groups, args.states = states, args.chunk = chunk;
  args.xbc = xbc.data_ptr();
  args.dt = dtf.data_ptr<float>();
  args.A = a.data_ptr<float>();
  args.D = d.defined() ? d.data_ptr<float>() : nullptr;
  args.gate = gate_rows.data_ptr(), args.gate_row = gate_rows.stride(1);
  args.norm_weight = w.data_ptr();
  args.eps = eps;
  args.out = out.data_ptr();
  at::Tensor work = at::empty({ck::SsdWorkspaceFloats(args)}, xbc.options().dtype(at::kFloat));
  args.work = work.data_ptr<float>();
  CheckLaunch(ck::LaunchSsd(args, StreamOf(xbc)), "Ssd");
  return out;
#else
  (void)xbc, (void)dt, (void)A, (void)D, (void)gate, (void)norm_weight, (void)heads, (void)head_dim,
      (void)groups, (void)states, (void)chunk, (void)eps;
  TORCH_CHECK(false, "SSM kernels: this build has no CUDA");
#endif
}

bool AddRmsNormKernelSupports(const at::Tensor& residual, const at::Tensor& mixer) {
#ifdef LF_WITH_CUDA
  return UseSsmKernels(mixer) && residual.scalar_type() == at::kFloat &&
         residual.device() == mixer.device() && residual.sizes() == mixer.sizes() &&
         ck::AddRmsNormSupports(ActTypeOf(mixer), mixer.size(-1));
#else
  (void)residual, (void)mixer;
  return false;
#endif
}

std::pair<at::Tensor, at::Tensor> AddRmsNormCuda(const at::Tensor& residual,
                                                 const at::Tensor& mixer, const at::Tensor& weight,
                                                 double eps) {
#ifdef LF_WITH_CUDA
  TORCH_CHECK(AddRmsNormKernelSupports(residual, mixer),
              "SSM kernels: no fused residual norm for a ", residual.scalar_type(), " residual ",
              residual.sizes(), " and a ", mixer.scalar_type(), " mixer output ", mixer.sizes());
  c10::cuda::CUDAGuard guard(mixer.device());
  const at::Tensor r = residual.contiguous();
  const at::Tensor m = mixer.contiguous();
  const at::Tensor w = weight.to(mixer.scalar_type()).contiguous();
  TORCH_CHECK(w.numel() == m.size(-1), "SSM kernels: norm weight ", weight.sizes(), " for rows of ",
              m.size(-1));
  at::Tensor sum = at::empty_like(r);
  at::Tensor normed = at::empty_like(m);
  const int64_t width = m.size(-1);
  CheckLaunch(ck::LaunchAddRmsNorm(ActTypeOf(m), r.data_ptr<float>(), m.data_ptr(), w.data_ptr(),
                                   m.numel() / width, width, eps, sum.data_ptr<float>(),
                                   normed.data_ptr(), StreamOf(m)),
              "AddRmsNorm");
  return {sum, normed};
#else
  (void)residual, (void)mixer, (void)weight, (void)eps;
  TORCH_CHECK(false, "SSM kernels: this build has no CUDA");
#endif
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::ScalarType input_dtype = x.scalar_type();
  at::Tensor h = AtLeastFloat32(x);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(input_dtype);
}

at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t seq = x.size(-1);
  const int64_t kernel = weight.size(-1);
  at::Tensor out = at::conv1d(x.to(weight.scalar_type()), weight, bias,
                              /*stride=*/1, /*padding=*/kernel - 1,
                              /*dilation=*/1, /*groups=*/x.size(1));
  return at::silu(out.narrow(-1, 0, seq)).to(x.scalar_type());
}

bool InitSsmParameter(const std::string& name, at::Tensor& tensor, const InitScheme& scheme,
                      const SsmInitSpec& spec, const ParameterDraws& draws) {
  // S4D-real: A = -(1..N) per channel (Mamba, [E, N]) or -(1..H) (Mamba-2,
  // [H]). The log is taken on the CPU and copied: libm's and CUDA's log may
  // differ in the last bit, and every device must hold the same bits.
  if (absl::EndsWith(name, ".A_log")) {
    const int64_t n = tensor.size(-1);
    tensor.copy_(at::log(at::arange(1, n + 1, at::kFloat)).expand(tensor.sizes()));
    return true;
  }
  if (absl::EndsWith(name, ".D")) {
    tensor.fill_(1.0);
    return true;
  }
  // dt bias: inverse softplus of dt ~ log-uniform[min, max], floored. u comes
  // from the counter generator (the same bits on every device); the
  // transform runs on the CPU in float32 for the reason above (a vector of
  // E or H values) and is rounded once to the tensor's dtype.
  if (absl::EndsWith(name, ".dt_proj.bias") || absl::EndsWith(name, ".dt_bias")) {
    at::Tensor u = at::empty(tensor.sizes(), at::kFloat);
    draws.Uniform(u, 0.0, 1.0);
    at::Tensor dt = at::exp(u * (std::log(spec.time_step_max) - std::log(spec.time_step_min)) +
                            std::log(spec.time_step_min))
                        .clamp_min(spec.time_step_floor);
    tensor.copy_(dt + at::log(-at::expm1(-dt)));
    return true;
  }
  if (scheme.kind != InitScheme::Kind::kReference) return false;
  // The reference's uniform weights, drawn where they live, in their dtype.
  if (absl::EndsWith(name, ".dt_proj.weight") && spec.dt_init_std > 0) {
    draws.Uniform(tensor, -spec.dt_init_std, spec.dt_init_std);
    return true;
  }
  if (absl::EndsWith(name, ".conv1d.weight") || absl::EndsWith(name, ".out_proj.weight")) {
    // kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + 5) * fan_in)).
    const int64_t receptive = tensor.dim() == 3 ? tensor.size(2) : 1;
    const double bound = 1.0 / std::sqrt(static_cast<double>(tensor.size(1) * receptive));
    draws.Uniform(tensor, -bound, bound);
    return true;
  }
  return false;
}

}  // namespace layerflow::worker::ssm

#include "worker/model/gpt_neox.h"

#include <cmath>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/init.h"

namespace layerflow::worker {
namespace {

std::string LayerPrefix(int64_t i) {
  return absl::StrCat("gpt_neox.layers.", i, ".");
}

// rotate_half: cat(-x2, x1) over the last dim.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, x.size(-1) - half);
  return at::cat({-x2, x1}, -1);
}

// apply_rotary_pos_emb for one of q / k: rotary on the first rotary_dim
// (= cos.size(-1)) dims of each head, the rest passes through.
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin) {
  const int64_t rotary_dim = cos.size(-1);
  at::Tensor x_rot = x.narrow(-1, 0, rotary_dim);
  at::Tensor x_pass = x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim);
  at::Tensor x_embed = x_rot * cos + RotateHalf(x_rot) * sin;
  return at::cat({x_embed, x_pass}, -1);
}

}  // namespace

absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& text) {
  if (text == "fp32") return c10::kFloat;
  if (text == "bf16") return c10::kBFloat16;
  if (text == "fp16") return c10::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: unknown '", text, "'; known: fp32, bf16, fp16"));
}

absl::Status GptNeoXModel::Validate(const GptNeoXConfig& c) {
  auto positive = [](const char* field, int64_t value) -> absl::Status {
    if (value > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be positive, got ", value));
  };
  for (auto [field, value] :
       {std::pair{"vocab_size", c.vocab_size},
        std::pair{"hidden_size", c.hidden_size},
        std::pair{"num_hidden_layers", c.num_hidden_layers},
        std::pair{"num_attention_heads", c.num_attention_heads},
        std::pair{"intermediate_size", c.intermediate_size}}) {
    if (absl::Status s = positive(field, value); !s.ok()) return s;
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_size: ", c.hidden_size, " is not divisible by ",
        "num_attention_heads ", c.num_attention_heads));
  }
  const int64_t head_dim = c.hidden_size / c.num_attention_heads;
  const int64_t rotary = static_cast<int64_t>(head_dim * c.rotary_pct);
  if (c.rotary_pct < 0 || c.rotary_pct > 1 || rotary % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rotary_pct: ", c.rotary_pct, " gives ", rotary,
        " rotary dims per head; need an even number in [0, head_dim]"));
  }
  if (!(c.rotary_emb_base > 0) || !(c.layer_norm_eps > 0)) {
    return absl::InvalidArgumentError(
        "rotary_emb_base and layer_norm_eps must be positive");
  }
  if (c.hidden_act != "gelu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_act: '", c.hidden_act, "' is not supported (only gelu)"));
  }
  return absl::OkStatus();
}

GptNeoXModel::GptNeoXModel(const GptNeoXConfig& config) : config_(config) {}

void GptNeoXModel::AddParameters() {
  const int64_t d = config_.hidden_size;
  const int64_t ff = config_.intermediate_size;
  auto add = [&](std::string name, at::IntArrayRef shape) {
    params_.Add(std::move(name), at::empty(shape, at::kFloat));
  };
  // Module registration order of GPTNeoXModel / GPTNeoXLayer.
  add("gpt_neox.embed_in.weight", {config_.vocab_size, d});
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = LayerPrefix(i);
    add(p + "input_layernorm.weight", {d});
    add(p + "input_layernorm.bias", {d});
    add(p + "post_attention_layernorm.weight", {d});
    add(p + "post_attention_layernorm.bias", {d});
    add(p + "attention.query_key_value.weight", {3 * d, d});
    if (config_.attention_bias) add(p + "attention.query_key_value.bias", {3 * d});
    add(p + "attention.dense.weight", {d, d});
    if (config_.attention_bias) add(p + "attention.dense.bias", {d});
    add(p + "mlp.dense_h_to_4h.weight", {ff, d});
    add(p + "mlp.dense_h_to_4h.bias", {ff});
    add(p + "mlp.dense_4h_to_h.weight", {d, ff});
    add(p + "mlp.dense_4h_to_h.bias", {d});
  }
  add("gpt_neox.final_layer_norm.weight", {d});
  add("gpt_neox.final_layer_norm.bias", {d});
  add("embed_out.weight", {config_.vocab_size, d});
}

void GptNeoXModel::Bind() {
  // Optional tensors (attention_bias = false) stay undefined; at::linear
  // takes an undefined bias as none.
  auto get = [&](const std::string& name) {
    const at::Tensor* t = params_.Find(name);
    return t == nullptr ? at::Tensor() : *t;
  };
  embed_in_ = params_.Get("gpt_neox.embed_in.weight");
  layers_.assign(config_.num_hidden_layers, Layer{});
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = LayerPrefix(i);
    Layer& l = layers_[i];
    l.input_layernorm_weight = params_.Get(p + "input_layernorm.weight");
    l.input_layernorm_bias = params_.Get(p + "input_layernorm.bias");
    l.post_attention_layernorm_weight =
        params_.Get(p + "post_attention_layernorm.weight");
    l.post_attention_layernorm_bias =
        params_.Get(p + "post_attention_layernorm.bias");
    l.query_key_value_weight = params_.Get(p + "attention.query_key_value.weight");
    l.query_key_value_bias = get(p + "attention.query_key_value.bias");
    l.dense_weight = params_.Get(p + "attention.dense.weight");
    l.dense_bias = get(p + "attention.dense.bias");
    l.dense_h_to_4h_weight = params_.Get(p + "mlp.dense_h_to_4h.weight");
    l.dense_h_to_4h_bias = params_.Get(p + "mlp.dense_h_to_4h.bias");
    l.dense_4h_to_h_weight = params_.Get(p + "mlp.dense_4h_to_h.weight");
    l.dense_4h_to_h_bias = params_.Get(p + "mlp.dense_4h_to_h.bias");
  }
  final_layer_norm_weight_ = params_.Get("gpt_neox.final_layer_norm.weight");
  final_layer_norm_bias_ = params_.Get("gpt_neox.final_layer_norm.bias");
  embed_out_ = params_.Get("embed_out.weight");
}

namespace {

// What every factory checks: a buildable config and a run dtype we support.
absl::Status ValidateForRun(const GptNeoXConfig& config, c10::ScalarType dtype) {
  if (absl::Status s = GptNeoXModel::Validate(config); !s.ok()) return s;
  if (dtype != c10::kFloat && dtype != c10::kBFloat16 && dtype != c10::kHalf) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype: unsupported ", c10::toString(dtype)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GptNeoXModel>> GptNeoXModel::CreateRandom(
    const GptNeoXConfig& config, const InitScheme& scheme, uint64_t seed,
    c10::Device device, c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  try {
    c10::InferenceMode guard;
    std::unique_ptr<GptNeoXModel> model(new GptNeoXModel(config));
    model->AddParameters();
    InitializeParameters(model->params_, scheme, config.initializer_range,
                         seed);
    // Only now to the device and dtype: every device gets the same weights.
    for (auto& [name, tensor] : model->params_.items()) {
      tensor = tensor.to(device, dtype);
    }
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("gpt_neox init: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("gpt_neox init: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<GptNeoXModel>> GptNeoXModel::CreateEmpty(
    const GptNeoXConfig& config, c10::Device device, c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  try {
    c10::InferenceMode guard;
    std::unique_ptr<GptNeoXModel> model(new GptNeoXModel(config));
    model->AddParameters();
    // Straight on the device: no CPU float32 copy of a large model.
    for (auto& [name, tensor] : model->params_.items()) {
      tensor = at::empty(tensor.sizes(),
                         at::TensorOptions().device(device).dtype(dtype));
    }
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("gpt_neox alloc: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("gpt_neox alloc: ", e.what()));
  }
}

std::unique_ptr<GptNeoXModel> GptNeoXModel::Replicate(c10::Device device) const {
  c10::InferenceMode guard;
  std::unique_ptr<GptNeoXModel> copy(new GptNeoXModel(config_));
  for (const auto& [name, tensor] : params_.items()) {
    copy->params_.Add(name, tensor.to(device, /*non_blocking=*/false,
                                      /*copy=*/true));
  }
  copy->device_ = device;
  copy->dtype_ = dtype_;
  copy->Bind();
  return copy;
}

// GPTNeoXAttention.forward (no cache, eval mode).
at::Tensor GptNeoXModel::Attention(const Layer& layer, const at::Tensor& hidden,
                                   const at::Tensor& cos,
                                   const at::Tensor& sin) const {
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  const int64_t head_size = config_.hidden_size / config_.num_attention_heads;

  // qkv = query_key_value(hidden).view(B, S, heads, 3 * head_size)
  //           .transpose(1, 2): per head the fused output is [q | k | v].
  at::Tensor qkv = at::linear(hidden, layer.query_key_value_weight,
                              layer.query_key_value_bias)
                       .view({batch, seq, -1, 3 * head_size})
                       .transpose(1, 2);
  std::vector<at::Tensor> qkv_chunks = qkv.chunk(3, -1);
  // apply_rotary_pos_emb; cos / sin are [S, rotary] and broadcast over
  // batch and heads ([B, H, S, head_size]).
  at::Tensor query = ApplyRotary(qkv_chunks[0], cos, sin);
  at::Tensor key = ApplyRotary(qkv_chunks[1], cos, sin);
  at::Tensor value = qkv_chunks[2];

  // sdpa_attention_forward: causal, scaling = head_size ** -0.5.
  at::Tensor attn = at::scaled_dot_product_attention(
      query, key, value, /*attn_mask=*/{}, /*dropout_p=*/0.0,
      /*is_causal=*/true,
      /*scale=*/1.0 / std::sqrt(static_cast<double>(head_size)));
  // [B, H, S, hs] -> [B, S, H * hs], then dense.
  attn = attn.transpose(1, 2).reshape({batch, seq, -1});
  return at::linear(attn, layer.dense_weight, layer.dense_bias);
}

// GPTNeoXMLP.forward: dense_h_to_4h -> gelu (exact) -> dense_4h_to_h.
at::Tensor GptNeoXModel::Mlp(const Layer& layer, const at::Tensor& hidden) const {
  at::Tensor h = at::linear(hidden, layer.dense_h_to_4h_weight,
                            layer.dense_h_to_4h_bias);
  h = at::gelu(h);
  return at::linear(h, layer.dense_4h_to_h_weight, layer.dense_4h_to_h_bias);
}

void GptNeoXModel::Forward(const at::Tensor& input_ids,
                           const LayerCallback& on_layer) const {
  c10::InferenceMode guard;
  const int64_t d = config_.hidden_size;
  const double eps = config_.layer_norm_eps;
  int64_t point = 0;
  try {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ",
                input_ids.sizes());
    const int64_t seq = input_ids.size(1);

    // GPTNeoXModel.forward: inputs_embeds = embed_in(input_ids).
    at::Tensor hidden =
        at::embedding(embed_in_, input_ids.to(device_, at::kLong));
    on_layer(point, hidden);

    // GPTNeoXRotaryEmbedding (default rope): float32, then the run dtype.
    const int64_t head_size = d / config_.num_attention_heads;
    const int64_t dim = static_cast<int64_t>(head_size * config_.rotary_pct);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
    at::Tensor inv_freq =
        1.0 / at::pow(config_.rotary_emb_base, at::arange(0, dim, 2, f32) / dim);
    at::Tensor positions = at::arange(seq, f32);
    at::Tensor freqs = at::outer(positions, inv_freq);  // [S, dim / 2]
    at::Tensor emb = at::cat({freqs, freqs}, -1);       // [S, dim]
    const at::Tensor cos = emb.cos().to(dtype_);
    const at::Tensor sin = emb.sin().to(dtype_);

    // GPTNeoXLayer.forward.
    for (const Layer& layer : layers_) {
      ++point;
      at::Tensor attn_output = Attention(
          layer,
          at::layer_norm(hidden, {d}, layer.input_layernorm_weight,
                         layer.input_layernorm_bias, eps),
          cos, sin);
      if (config_.use_parallel_residual) {
        // x = x + attn(ln1(x)) + mlp(ln2(x))
        at::Tensor mlp_output = Mlp(
            layer, at::layer_norm(hidden, {d},
                                  layer.post_attention_layernorm_weight,
                                  layer.post_attention_layernorm_bias, eps));
        hidden = mlp_output + attn_output + hidden;
      } else {
        // x = x + attn(ln1(x)); x = x + mlp(ln2(x))
        attn_output = attn_output + hidden;
        at::Tensor mlp_output = Mlp(
            layer, at::layer_norm(attn_output, {d},
                                  layer.post_attention_layernorm_weight,
                                  layer.post_attention_layernorm_bias, eps));
        hidden = mlp_output + attn_output;
      }
      on_layer(point, hidden);
    }

    ++point;
    hidden = at::layer_norm(hidden, {d}, final_layer_norm_weight_,
                            final_layer_norm_bias_, eps);
    on_layer(point, hidden);
  } catch (const LayerError&) {
    throw;
  } catch (const c10::Error& e) {
    throw LayerError(point, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw LayerError(point, e.what());
  }
}

at::Tensor GptNeoXModel::Logits(const at::Tensor& final_hidden) const {
  c10::InferenceMode guard;
  return at::linear(final_hidden, embed_out_);
}

}  // namespace layerflow::worker

#include "worker/model/gpt_neox.h"

#include <cmath>
#include <utility>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/init.h"
#include "worker/model/spectrum_ops.h"

namespace layerflow::worker {
namespace {

constexpr char kLayers[] = "gpt_neox.layers";

// rotate_half: cat(-x2, x1) over the last dim.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, x.size(-1) - half);
  return at::cat({-x2, x1}, -1);
}

// apply_rotary_pos_emb for one of q / k: rotary on the first rotary_dim
// (= cos.size(-1)) dims of each head, the rest passes through.
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rotary_dim = cos.size(-1);
  at::Tensor x_rot = x.narrow(-1, 0, rotary_dim);
  at::Tensor x_pass = x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim);
  at::Tensor x_embed = x_rot * cos + RotateHalf(x_rot) * sin;
  return at::cat({x_embed, x_pass}, -1);
}

}  // namespace

absl::Status GptNeoXModel::Validate(const GptNeoXConfig& c) {
  if (absl::Status s = CheckPositive({{"vocab_size", c.vocab_size},
                                      {"hidden_size", c.hidden_size},
                                      {"num_hidden_layers", c.num_hidden_layers},
                                      {"num_attention_heads", c.num_attention_heads},
                                      {"intermediate_size", c.intermediate_size}});
      !s.ok()) {
    return s;
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size: ", c.hidden_size,
                                                   " is not divisible by ", "num_attention_heads ",
                                                   c.num_attention_heads));
  }
  const int64_t head_dim = c.hidden_size / c.num_attention_heads;
  const int64_t rotary = static_cast<int64_t>(head_dim * c.rotary_pct);
  if (c.rotary_pct < 0 || c.rotary_pct > 1 || rotary % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary_pct: ", c.rotary_pct, " gives ", rotary,
                     " rotary dims per head; need an even number in [0, head_dim]"));
  }
  if (!(c.rotary_emb_base > 0) || !(c.layer_norm_eps > 0)) {
    return absl::InvalidArgumentError("rotary_emb_base and layer_norm_eps must be positive");
  }
  if (c.hidden_act != "gelu") {
    // The value may come from a checkpoint's config.json: not repeated.
    return absl::InvalidArgumentError("hidden_act: not supported (only gelu)");
  }
  return absl::OkStatus();
}

std::vector<LayerParam<GptNeoXModel::Layer>> GptNeoXModel::LayerParams() const {
  const int64_t d = neox().hidden_size;
  const int64_t ff = neox().intermediate_size;
  const bool bias = neox().attention_bias;
  // Module registration order of GPTNeoXLayer.
  return {
      {"input_layernorm.weight", {d}, &Layer::input_layernorm_weight},
      {"input_layernorm.bias", {d}, &Layer::input_layernorm_bias},
      {"post_attention_layernorm.weight", {d}, &Layer::post_attention_layernorm_weight},
      {"post_attention_layernorm.bias", {d}, &Layer::post_attention_layernorm_bias},
      {"attention.query_key_value.weight", {3 * d, d}, &Layer::query_key_value_weight},
      {"attention.query_key_value.bias", {3 * d}, &Layer::query_key_value_bias, bias},
      {"attention.dense.weight", {d, d}, &Layer::dense_weight},
      {"attention.dense.bias", {d}, &Layer::dense_bias, bias},
      {"mlp.dense_h_to_4h.weight", {ff, d}, &Layer::dense_h_to_4h_weight},
      {"mlp.dense_h_to_4h.bias", {ff}, &Layer::dense_h_to_4h_bias},
      {"mlp.dense_4h_to_h.weight", {d, ff}, &Layer::dense_4h_to_h_weight},
      {"mlp.dense_4h_to_h.bias", {d}, &Layer::dense_4h_to_h_bias},
  };
}

std::vector<ParameterSlot> GptNeoXModel::ParameterSlots() {
  using Role = ParameterSlot::Role;
  const int64_t d = neox().hidden_size;
  const int64_t v = neox().vocab_size;
  layers_.assign(neox().num_hidden_layers, Layer{});
  // Module registration order of GPTNeoXForCausalLM. embed_out.weight is
  // the checkpoint's name, which transformers 5 renames to lm_head.weight
  // on load (model_checkpoint.cc maps that spelling back).
  std::vector<ParameterSlot> slots = {
      {"gpt_neox.embed_in.weight", {v, d}, &embed_in_, Role::kInputEmbedding}};
  AppendLayerSlots(slots, kLayers, LayerParams(), layers_);
  slots.push_back({"gpt_neox.final_layer_norm.weight", {d}, &final_layer_norm_weight_});
  slots.push_back({"gpt_neox.final_layer_norm.bias", {d}, &final_layer_norm_bias_});
  slots.push_back({"embed_out.weight", {v, d}, &embed_out_, Role::kOutputHead});
  return slots;
}

GptNeoXModel::PointModules GptNeoXModel::point_modules() const {
  return {"gpt_neox.embed_in", kLayers, "gpt_neox.final_layer_norm"};
}

// GPTNeoXAttention.forward's q (rotary), k (rotary) and v: [B, H, S, hs].
std::vector<at::Tensor> GptNeoXModel::QueryKeyValue(const Layer& layer, const at::Tensor& hidden,
                                                    const at::Tensor& cos,
                                                    const at::Tensor& sin) const {
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  const int64_t head_size = neox().hidden_size / neox().num_attention_heads;

  // qkv = query_key_value(hidden).view(B, S, heads, 3 * head_size)
  //           .transpose(1, 2): per head the fused output is [q | k | v].
  at::Tensor qkv = at::linear(hidden, layer.query_key_value_weight, layer.query_key_value_bias)
                       .view({batch, seq, -1, 3 * head_size})
                       .transpose(1, 2);
  std::vector<at::Tensor> qkv_chunks = qkv.chunk(3, -1);
  // apply_rotary_pos_emb; cos / sin are [S, rotary] and broadcast over
  // batch and heads ([B, H, S, head_size]).
  return {ApplyRotary(qkv_chunks[0], cos, sin), ApplyRotary(qkv_chunks[1], cos, sin),
          qkv_chunks[2]};
}

// GPTNeoXAttention.forward (no cache, eval mode).
at::Tensor GptNeoXModel::Attention(const Layer& layer, const at::Tensor& hidden,
                                   const at::Tensor& cos, const at::Tensor& sin,
                                   at::Tensor* log_lambda) const {
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  const double scale =
      1.0 / std::sqrt(static_cast<double>(neox().hidden_size / neox().num_attention_heads));
  std::vector<at::Tensor> qkv = QueryKeyValue(layer, hidden, cos, sin);
  if (log_lambda != nullptr) {
    *log_lambda = AttentionLogLambda(qkv[0], qkv[1], scale, CausalMask(seq, device()));
  }
  // sdpa_attention_forward: causal, scaling = head_size ** -0.5.
  at::Tensor attn =
      at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                       /*is_causal=*/true, scale);
  // [B, H, S, hs] -> [B, S, H * hs], then dense.
  attn = attn.transpose(1, 2).reshape({batch, seq, -1});
  return at::linear(attn, layer.dense_weight, layer.dense_bias);
}

// GPTNeoXMLP.forward: dense_h_to_4h -> gelu (exact) -> dense_4h_to_h.
at::Tensor GptNeoXModel::Mlp(const Layer& layer, const at::Tensor& hidden) const {
  at::Tensor h = at::linear(hidden, layer.dense_h_to_4h_weight, layer.dense_h_to_4h_bias);
  h = at::gelu(h);
  return at::linear(h, layer.dense_4h_to_h_weight, layer.dense_4h_to_h_bias);
}

// GPTNeoXModel.forward: the embedding (point 0), the blocks (1..L), the
// final layer norm (L + 1).
void GptNeoXModel::RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                              const SpectrumSink* spectra, int64_t& point) const {
  const int64_t d = neox().hidden_size;
  const double eps = neox().layer_norm_eps;
  const int64_t seq = input_ids.size(1);

  // GPTNeoXModel.forward: inputs_embeds = embed_in(input_ids).
  at::Tensor hidden = at::embedding(embed_in_, input_ids.to(device(), at::kLong));
  on_layer(point, hidden);

  // GPTNeoXRotaryEmbedding (default rope): float32, then the run dtype.
  const int64_t head_size = d / neox().num_attention_heads;
  const int64_t dim = static_cast<int64_t>(head_size * neox().rotary_pct);
  const auto f32 =
      at::TensorOptions().dtype(c10::promoteTypes(dtype(), c10::kFloat)).device(device());
  at::Tensor inv_freq = 1.0 / at::pow(neox().rotary_emb_base, at::arange(0, dim, 2, f32) / dim);
  at::Tensor positions = at::arange(seq, f32);
  at::Tensor freqs = at::outer(positions, inv_freq);  // [S, dim / 2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);       // [S, dim]
  const at::Tensor cos = emb.cos().to(dtype());
  const at::Tensor sin = emb.sin().to(dtype());

  // GPTNeoXLayer.forward.
  for (const Layer& layer : layers_) {
    ++point;
    at::Tensor log_lambda;
    at::Tensor attn_output = Attention(
        layer,
        at::layer_norm(hidden, {d}, layer.input_layernorm_weight, layer.input_layernorm_bias, eps),
        cos, sin, spectra != nullptr && spectra->on_layer ? &log_lambda : nullptr);
    if (neox().use_parallel_residual) {
      // x = x + attn(ln1(x)) + mlp(ln2(x))
      at::Tensor mlp_output =
          Mlp(layer, at::layer_norm(hidden, {d}, layer.post_attention_layernorm_weight,
                                    layer.post_attention_layernorm_bias, eps));
      hidden = mlp_output + attn_output + hidden;
    } else {
      // x = x + attn(ln1(x)); x = x + mlp(ln2(x))
      attn_output = attn_output + hidden;
      at::Tensor mlp_output =
          Mlp(layer, at::layer_norm(attn_output, {d}, layer.post_attention_layernorm_weight,
                                    layer.post_attention_layernorm_bias, eps));
      hidden = mlp_output + attn_output;
    }
    if (spectra != nullptr && spectra->on_layer) spectra->on_layer(point, log_lambda);
    if (spectra != nullptr && spectra->on_layer_dsf) {
      // The block's output, unscaled, unmasked.
      std::vector<at::Tensor> qkv =
          QueryKeyValue(layer,
                        at::layer_norm(hidden, {d}, layer.input_layernorm_weight,
                                       layer.input_layernorm_bias, eps),
                        cos, sin);
      spectra->on_layer_dsf(point, AttentionLogLambda(qkv[0], qkv[1], 1.0, at::Tensor()));
    }
    on_layer(point, hidden);
  }

  ++point;
  hidden = at::layer_norm(hidden, {d}, final_layer_norm_weight_, final_layer_norm_bias_, eps);
  on_layer(point, hidden);
}

}  // namespace layerflow::worker

#include "worker/model/gpt_neo.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/spectrum_ops.h"

namespace layerflow::worker {
namespace {

constexpr char kLayers[] = "transformer.h";

}  // namespace

absl::Status GptNeoModel::Validate(const GptNeoConfig& c) {
  if (absl::Status s = CheckPositive({{"vocab_size", c.vocab_size},
                                      {"hidden_size", c.hidden_size},
                                      {"num_layers", c.num_layers},
                                      {"num_heads", c.num_heads},
                                      {"max_position_embeddings", c.max_position_embeddings},
                                      {"window_size", c.window_size}});
      !s.ok()) {
    return s;
  }
  if (c.intermediate_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("intermediate_size: must be positive (or null), got ", c.intermediate_size));
  }
  if (c.hidden_size % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size: ", c.hidden_size,
                                                   " is not divisible by num_heads ", c.num_heads));
  }
  if (static_cast<int64_t>(c.attention_layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("attention_types / attention_layers: expand to ",
                                                   c.attention_layers.size(),
                                                   " layers, but num_layers is ", c.num_layers));
  }
  for (size_t i = 0; i < c.attention_layers.size(); ++i) {
    if (c.attention_layers[i] != "global" && c.attention_layers[i] != "local") {
      return absl::InvalidArgumentError(absl::StrCat("attention_types / attention_layers: layer ",
                                                     i, " is neither \"global\" nor \"local\""));
    }
  }
  if (c.activation_function != "gelu_new") {
    // The value may come from a checkpoint's config.json: not repeated.
    return absl::InvalidArgumentError("activation_function: not supported (only gelu_new)");
  }
  if (!(c.layer_norm_epsilon > 0)) {
    return absl::InvalidArgumentError("layer_norm_epsilon: must be positive");
  }
  return absl::OkStatus();
}

std::vector<LayerParam<GptNeoModel::Layer>> GptNeoModel::LayerParams() const {
  const int64_t d = neo().hidden_size;
  const int64_t ff = neo().ffn_size();
  // Module registration order of GPTNeoBlock.
  return {
      {"ln_1.weight", {d}, &Layer::ln_1_weight},
      {"ln_1.bias", {d}, &Layer::ln_1_bias},
      {"attn.attention.k_proj.weight", {d, d}, &Layer::k_proj_weight},
      {"attn.attention.v_proj.weight", {d, d}, &Layer::v_proj_weight},
      {"attn.attention.q_proj.weight", {d, d}, &Layer::q_proj_weight},
      {"attn.attention.out_proj.weight", {d, d}, &Layer::out_proj_weight},
      {"attn.attention.out_proj.bias", {d}, &Layer::out_proj_bias},
      {"ln_2.weight", {d}, &Layer::ln_2_weight},
      {"ln_2.bias", {d}, &Layer::ln_2_bias},
      {"mlp.c_fc.weight", {ff, d}, &Layer::c_fc_weight},
      {"mlp.c_fc.bias", {ff}, &Layer::c_fc_bias},
      {"mlp.c_proj.weight", {d, ff}, &Layer::c_proj_weight},
      {"mlp.c_proj.bias", {d}, &Layer::c_proj_bias},
  };
}

std::vector<ParameterSlot> GptNeoModel::ParameterSlots() {
  using Role = ParameterSlot::Role;
  const int64_t d = neo().hidden_size;
  const int64_t v = neo().vocab_size;
  layers_.assign(neo().num_layers, Layer{});
  for (int64_t i = 0; i < neo().num_layers; ++i) {
    layers_[i].local = neo().attention_layers[i] == "local";
  }
  // Module registration order of GPTNeoForCausalLM.
  std::vector<ParameterSlot> slots = {
      {"transformer.wte.weight", {v, d}, &wte_, Role::kInputEmbedding},
      {"transformer.wpe.weight", {neo().max_position_embeddings, d}, &wpe_}};
  AppendLayerSlots(slots, kLayers, LayerParams(), layers_);
  slots.push_back({"transformer.ln_f.weight", {d}, &ln_f_weight_});
  slots.push_back({"transformer.ln_f.bias", {d}, &ln_f_bias_});
  slots.push_back({"lm_head.weight", {v, d}, &lm_head_, Role::kOutputHead});
  return slots;
}

GptNeoModel::PointModules GptNeoModel::point_modules() const {
  return {"transformer.wte + transformer.wpe", kLayers, "transformer.ln_f"};
}

at::Tensor GptNeoModel::AttentionMask(int64_t seq, bool local, int64_t window, c10::Device device) {
  at::Tensor i = at::arange(seq, at::TensorOptions().dtype(at::kLong).device(device));
  at::Tensor diff = i.unsqueeze(1) - i.unsqueeze(0);  // query - key
  at::Tensor mask = diff >= 0;
  if (local) mask = mask & (diff < window);
  return mask;
}

// GPTNeoSelfAttention's q, k, v (no bias): [B, H, S, hd].
std::vector<at::Tensor> GptNeoModel::QueryKeyValue(const Layer& layer,
                                                   const at::Tensor& hidden) const {
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  const int64_t heads = neo().num_heads;
  const int64_t head_dim = neo().hidden_size / heads;
  auto split_heads = [&](const at::Tensor& t) {  // [B, S, d] -> [B, H, S, hd]
    return t.view({batch, seq, heads, head_dim}).permute({0, 2, 1, 3});
  };
  return {split_heads(at::linear(hidden, layer.q_proj_weight)),
          split_heads(at::linear(hidden, layer.k_proj_weight)),
          split_heads(at::linear(hidden, layer.v_proj_weight))};
}

// GPTNeoSelfAttention.forward: _attn in float32 with no scaling; softmax back
// to the value dtype; out_proj with bias.
at::Tensor GptNeoModel::Attention(const Layer& layer, const at::Tensor& hidden,
                                  const at::Tensor& mask, at::Tensor* log_lambda) const {
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  std::vector<at::Tensor> qkv = QueryKeyValue(layer, hidden);
  const at::Tensor& query = qkv[0];
  const at::Tensor& key = qkv[1];
  const at::Tensor& value = qkv[2];
  if (log_lambda != nullptr) *log_lambda = AttentionLogLambda(query, key, 1.0, mask);
  // HF's _attn upcasts q and k to float32 (and softmaxes there) in every run
  // dtype; SDPA in float32 with scale 1 and the boolean mask does the same.
  at::Tensor attn = at::scaled_dot_product_attention(
                        AtLeastFloat32(query), AtLeastFloat32(key), AtLeastFloat32(value), mask,
                        /*dropout_p=*/0.0, /*is_causal=*/false, /*scale=*/1.0)
                        .to(value.scalar_type());
  attn = attn.permute({0, 2, 1, 3}).reshape({batch, seq, -1});
  return at::linear(attn, layer.out_proj_weight, layer.out_proj_bias);
}

// GPTNeoMLP: c_fc -> gelu_new (tanh approximation) -> c_proj.
at::Tensor GptNeoModel::Mlp(const Layer& layer, const at::Tensor& hidden) const {
  at::Tensor h = at::linear(hidden, layer.c_fc_weight, layer.c_fc_bias);
  h = at::gelu(h, "tanh");
  return at::linear(h, layer.c_proj_weight, layer.c_proj_bias);
}

// GPTNeoModel.forward: the embeddings (point 0), the blocks (1..L), ln_f
// (L + 1).
void GptNeoModel::RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                             const SpectrumSink* spectra, int64_t& point) const {
  const int64_t d = neo().hidden_size;
  const double eps = neo().layer_norm_epsilon;
  const int64_t seq = input_ids.size(1);
  TORCH_CHECK(seq <= neo().max_position_embeddings, "sequence of ", seq,
              " tokens is longer than max_position_embeddings ", neo().max_position_embeddings);
  // GPTNeoModel.forward: inputs_embeds + wpe(position_ids).
  at::Tensor positions = at::arange(seq, at::TensorOptions().dtype(at::kLong).device(device()));
  at::Tensor hidden =
      at::embedding(wte_, input_ids.to(device(), at::kLong)) + at::embedding(wpe_, positions);
  on_layer(point, hidden);

  const at::Tensor global_mask = AttentionMask(seq, false, 0, device());
  const at::Tensor local_mask = AttentionMask(seq, true, neo().window_size, device());
  // GPTNeoBlock.forward: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).
  for (const Layer& layer : layers_) {
    ++point;
    at::Tensor log_lambda;
    at::Tensor attn_output =
        Attention(layer, at::layer_norm(hidden, {d}, layer.ln_1_weight, layer.ln_1_bias, eps),
                  layer.local ? local_mask : global_mask,
                  spectra != nullptr && spectra->on_layer ? &log_lambda : nullptr);
    hidden = attn_output + hidden;
    at::Tensor mlp_output =
        Mlp(layer, at::layer_norm(hidden, {d}, layer.ln_2_weight, layer.ln_2_bias, eps));
    hidden = hidden + mlp_output;
    if (spectra != nullptr && spectra->on_layer) spectra->on_layer(point, log_lambda);
    if (spectra != nullptr && spectra->on_layer_dsf) {
      // The block's output, unmasked (no scale anyway).
      std::vector<at::Tensor> qkv = QueryKeyValue(
          layer, at::layer_norm(hidden, {d}, layer.ln_1_weight, layer.ln_1_bias, eps));
      spectra->on_layer_dsf(point, AttentionLogLambda(qkv[0], qkv[1], 1.0, at::Tensor()));
    }
    on_layer(point, hidden);
  }

  ++point;
  hidden = at::layer_norm(hidden, {d}, ln_f_weight_, ln_f_bias_, eps);
  on_layer(point, hidden);
}

}  // namespace layerflow::worker

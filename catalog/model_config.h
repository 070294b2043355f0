// Architecture configs, the built-in presets of published sizes and the
// random-init schemes. Plain data, no LibTorch: the coordinator validates
// sweeps with it, the client labels rows with it, the worker builds models
// from it (worker/model/model_config.h brings these names into
// layerflow::worker).
#ifndef LAYERFLOW_CATALOG_MODEL_CONFIG_H_
#define LAYERFLOW_CATALOG_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow::catalog {

// Field names follow Hugging Face's GPTNeoXConfig so that a config.json maps
// onto it one to one.
struct GptNeoXConfig {
  int64_t vocab_size = 50304;
  int64_t hidden_size = 512;
  int64_t num_hidden_layers = 6;
  int64_t num_attention_heads = 8;
  int64_t intermediate_size = 2048;
  double rotary_pct = 0.25;
  double rotary_emb_base = 10000.0;
  int64_t max_position_embeddings = 2048;
  double layer_norm_eps = 1e-5;
  bool use_parallel_residual = true;
  bool attention_bias = true;
  double initializer_range = 0.02;
  std::string hidden_act = "gelu";  // exact (erf) GELU
};

// GPTNeoConfig (modeling_gpt_neo). attention_layers is the expanded
// per-layer list ("global" / "local") that HF derives from attention_types.
struct GptNeoConfig {
  int64_t vocab_size = 50257;
  int64_t hidden_size = 768;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t intermediate_size = 0;  // 0: 4 * hidden_size, as HF
  int64_t max_position_embeddings = 2048;
  int64_t window_size = 256;
  std::vector<std::string> attention_layers;  // size num_layers
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  std::string activation_function = "gelu_new";  // tanh-approximated GELU
  int64_t ffn_size() const { return intermediate_size > 0 ? intermediate_size : 4 * hidden_size; }
};

// MambaConfig (modeling_mamba). intermediate_size = expand * hidden_size;
// time_step_rank 0 means "auto" = ceil(hidden_size / 16).
struct MambaConfig {
  int64_t vocab_size = 50280;
  int64_t hidden_size = 768;
  int64_t state_size = 16;
  int64_t num_hidden_layers = 24;
  double layer_norm_epsilon = 1e-5;
  int64_t expand = 2;
  int64_t conv_kernel = 4;
  bool use_bias = false;
  bool use_conv_bias = true;
  int64_t time_step_rank = 0;
  bool residual_in_fp32 = true;
  double time_step_min = 0.001;
  double time_step_max = 0.1;
  double time_step_floor = 1e-4;
  double time_step_scale = 1.0;
  double initializer_range = 0.1;
  std::string hidden_act = "silu";
  int64_t intermediate_size() const { return expand * hidden_size; }
  int64_t dt_rank() const { return time_step_rank > 0 ? time_step_rank : (hidden_size + 15) / 16; }
};

// Mamba2Config (modeling_mamba2, transformers 5: in_proj = [gate | x B C |
// dt], no extra MLP lanes). num_heads * head_dim = expand * hidden_size.
struct Mamba2Config {
  int64_t vocab_size = 50288;
  int64_t hidden_size = 768;
  int64_t state_size = 128;
  int64_t num_hidden_layers = 24;
  int64_t num_heads = 24;
  int64_t head_dim = 64;
  int64_t n_groups = 1;
  int64_t chunk_size = 256;
  double layer_norm_epsilon = 1e-5;
  int64_t expand = 2;
  int64_t conv_kernel = 4;
  bool use_bias = false;
  bool use_conv_bias = true;
  bool residual_in_fp32 = true;
  double time_step_min = 0.001;
  double time_step_max = 0.1;
  double time_step_floor = 1e-4;
  double time_step_limit_min = 0.0;    // time_step_limit = (min, max)
  double time_step_limit_max = 1e300;  // >= 1e300: no upper limit ("inf")
  double initializer_range = 0.1;
  std::string hidden_act = "silu";
  int64_t intermediate_size() const { return expand * hidden_size; }
  int64_t conv_dim() const { return intermediate_size() + 2 * n_groups * state_size; }
};

// One model's architecture: `architecture` says which member is meant.
struct ModelConfig {
  std::string architecture;  // "gpt_neox" | "gpt_neo" | "mamba" | "mamba2"
  GptNeoXConfig gpt_neox;
  GptNeoConfig gpt_neo;
  MambaConfig mamba;
  Mamba2Config mamba2;

  int64_t num_layers() const;
  int64_t hidden_size() const;
  int64_t vocab_size() const;
};

// The architectures this build implements, in METHODS.md order.
const std::vector<std::string>& KnownArchitectures();

struct ModelPreset {
  std::string name;  // e.g. "pythia-70m"
  ModelConfig config;
};

// Every preset this build knows, smallest first.
const std::vector<ModelPreset>& ModelPresets();
// NOT_FOUND naming the preset and listing the known ones.
absl::StatusOr<ModelPreset> FindModelPreset(std::string_view name);

// A parsed random-init scheme (METHODS.md, "Models and initialisation").
struct InitScheme {
  enum class Kind {
    kReference,  // the architecture's own: normal(0, initializer_range)
    kNormal,     // normal(0, param)
    kUniform,    // uniform(-param, param)
    kXavierUniform,
    kXavierNormal,
    kKaimingNormal,
  };
  Kind kind = Kind::kReference;
  double param = 0;
};

// Parses "reference", "normal(0.02)", "uniform(0.05)", "xavier_uniform",
// "xavier_normal", "kaiming_normal". INVALID_ARGUMENT says what is wrong.
absl::StatusOr<InitScheme> ParseInitScheme(std::string_view text);

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_MODEL_CONFIG_H_

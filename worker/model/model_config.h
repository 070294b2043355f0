// Architecture configs and the built-in presets of published sizes.
// Plain data, no LibTorch: the coordinator links this to validate sweeps.
#ifndef LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_
#define LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow::worker {

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

struct ModelPreset {
  std::string name;          // e.g. "pythia-70m"
  std::string architecture;  // "gpt_neox"
  GptNeoXConfig gpt_neox;
};

// Every preset this build knows, smallest first.
const std::vector<ModelPreset>& ModelPresets();
// NOT_FOUND naming the preset and listing the known ones.
absl::StatusOr<ModelPreset> FindModelPreset(std::string_view name);

// A parsed random-init scheme (METHODS.md, "Models and initialisation").
struct InitScheme {
  enum class Kind {
    kReference,      // the architecture's own: normal(0, initializer_range)
    kNormal,         // normal(0, param)
    kUniform,        // uniform(-param, param)
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

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_

// config.json of a Hugging Face (or original mamba_ssm) checkpoint ->
// ModelConfig, without LibTorch. The architecture comes from model_type
// ("gpt_neox", "gpt_neo", "mamba", "mamba2"), from `architectures` when
// model_type is absent, or from mamba_ssm's own keys (d_model, n_layer,
// ssm_cfg.layer = "Mamba1" | "Mamba2"). Every error is INVALID_ARGUMENT
// naming `source` and the key; all missing required keys are named at once.
#ifndef LAYERFLOW_WORKER_MODEL_CONFIG_JSON_H_
#define LAYERFLOW_WORKER_MODEL_CONFIG_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/confined_file.h"
#include "worker/model/model_config.h"

namespace layerflow::worker {

struct CheckpointConfig {
  ModelConfig model;
  // The output head shares the input embedding and a checkpoint may omit it
  // (tie_word_embeddings; mamba_ssm's tie_embeddings).
  bool tie_word_embeddings = false;
  // The weights use mamba_ssm's names (backbone.embedding.weight).
  bool mamba_ssm_naming = false;
};

absl::StatusOr<CheckpointConfig> ParseCheckpointConfigJson(absl::string_view json,
                                                           absl::string_view source);
// A file this process trusts (tests, tools); errors name `path`.
absl::StatusOr<CheckpointConfig> ReadCheckpointConfig(const std::string& path);
// A job's checkpoint: <dir>/config.json, at most max_bytes, a regular file
// (common/confined_file.h); errors name "config.json" and the key, never a
// value of the file.
absl::StatusOr<CheckpointConfig> ReadCheckpointConfig(const ConfinedDir& dir, int64_t max_bytes);

// The Hugging Face config.json of `config` (model_type, architectures and
// the config class's keys; tie_word_embeddings false, the head being its
// own parameter): what a TRAIN job saves beside model.safetensors, which
// ParseCheckpointConfigJson and transformers' AutoConfig read back as the
// same model.
std::string CheckpointConfigJson(const ModelConfig& config);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_CONFIG_JSON_H_

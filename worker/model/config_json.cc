#include "worker/model/config_json.h"

#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "worker/model/checkpoint.h"

namespace layerflow::worker {
namespace {

using Json = nlohmann::json;

// What a wrong value is, for messages: its JSON type, never the value
// itself (job errors are shown to every user; a file's contents are not).
std::string Kind(const Json& value) { return absl::StrCat("a JSON ", value.type_name()); }

// GPT-Neo's attention_types expand to one entry per layer; more layers than
// this is a corrupt config, not a model.
constexpr int64_t kMaxConfigLayers = 65536;

// Typed reads that collect every problem, so one error names them all.
class Reader {
 public:
  Reader(const Json& root, absl::string_view source) : root_(root), source_(source) {}

  void Int(const Json& obj, const char* key, int64_t* out, bool required = false) {
    if (!obj.contains(key) || obj[key].is_null()) {
      if (required) missing_.push_back(key);
      return;
    }
    if (!obj[key].is_number_integer()) {
      wrong_.push_back(absl::StrCat(key, " (expected an integer, got ", Kind(obj[key]), ")"));
      return;
    }
    *out = obj[key].get<int64_t>();
  }
  void Int(const char* key, int64_t* out, bool required = false) { Int(root_, key, out, required); }
  void Double(const Json& obj, const char* key, double* out) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_number()) {
      wrong_.push_back(absl::StrCat(key, " (expected a number, got ", Kind(obj[key]), ")"));
      return;
    }
    *out = obj[key].get<double>();
  }
  void Double(const char* key, double* out) { Double(root_, key, out); }
  void Bool(const Json& obj, const char* key, bool* out) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_boolean()) {
      wrong_.push_back(absl::StrCat(key, " (expected a boolean, got ", Kind(obj[key]), ")"));
      return;
    }
    *out = obj[key].get<bool>();
  }
  void Bool(const char* key, bool* out) { Bool(root_, key, out); }
  void String(const Json& obj, const char* key, std::string* out) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_string()) {
      wrong_.push_back(absl::StrCat(key, " (expected a string, got ", Kind(obj[key]), ")"));
      return;
    }
    *out = obj[key].get<std::string>();
  }
  void String(const char* key, std::string* out) { String(root_, key, out); }
  // An integer or "auto" (0).
  void IntOrAuto(const Json& obj, const char* key, int64_t* out) {
    if (obj.contains(key) && obj[key].is_string() && obj[key] == "auto") {
      *out = 0;
      return;
    }
    Int(obj, key, out);
  }
  void Wrong(std::string what) { wrong_.push_back(std::move(what)); }
  void Missing(std::string key) { missing_.push_back(std::move(key)); }

  absl::Status Finish() const {
    if (!missing_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": missing required key",
                                                     missing_.size() > 1 ? "s" : "", " ",
                                                     absl::StrJoin(missing_, ", ")));
    }
    if (!wrong_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": bad value for ", absl::StrJoin(wrong_, "; ")));
    }
    return absl::OkStatus();
  }

 private:
  const Json& root_;
  std::string source_;
  std::vector<std::string> missing_;
  std::vector<std::string> wrong_;
};

// GPTNeoXConfig. Both spellings of the rotary settings: rotary_pct /
// rotary_emb_base (the published Pythia configs) and rope_parameters
// (transformers 5, which wins); RoPE scaling is rejected.
absl::Status GptNeoXFromJson(const Json& root, Reader& r, absl::string_view source,
                             GptNeoXConfig* c) {
  r.Int("vocab_size", &c->vocab_size, true);
  r.Int("hidden_size", &c->hidden_size, true);
  r.Int("num_hidden_layers", &c->num_hidden_layers, true);
  r.Int("num_attention_heads", &c->num_attention_heads, true);
  r.Int("intermediate_size", &c->intermediate_size, true);
  r.Int("max_position_embeddings", &c->max_position_embeddings);
  r.Double("layer_norm_eps", &c->layer_norm_eps);
  r.Double("initializer_range", &c->initializer_range);
  r.Bool("use_parallel_residual", &c->use_parallel_residual);
  r.Bool("attention_bias", &c->attention_bias);
  r.String("hidden_act", &c->hidden_act);
  r.Double("rotary_pct", &c->rotary_pct);
  r.Double("rotary_emb_base", &c->rotary_emb_base);
  r.Double("rope_theta", &c->rotary_emb_base);
  r.Double("partial_rotary_factor", &c->rotary_pct);
  if (root.contains("rope_parameters") && root["rope_parameters"].is_object()) {
    const Json& rope = root["rope_parameters"];
    r.Double(rope, "partial_rotary_factor", &c->rotary_pct);
    r.Double(rope, "rope_theta", &c->rotary_emb_base);
    if (rope.contains("rope_type") && rope["rope_type"] != "default") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": rope_parameters.rope_type is not supported (only \"default\")"));
    }
  }
  if (root.contains("rope_scaling") && !root["rope_scaling"].is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rope_scaling is not supported (only null)"));
  }
  return absl::OkStatus();
}

// GPTNeoConfig: attention_types [[["global", "local"], repeat], ...] expanded
// in order (GPTNeoConfig.expand_attention_types_params), or the expanded
// attention_layers list some configs carry instead.
void GptNeoFromJson(const Json& root, Reader& r, GptNeoConfig* c) {
  r.Int("vocab_size", &c->vocab_size, true);
  r.Int("hidden_size", &c->hidden_size, true);
  r.Int("num_layers", &c->num_layers, true);
  r.Int("num_heads", &c->num_heads, true);
  r.Int("intermediate_size", &c->intermediate_size);
  r.Int("max_position_embeddings", &c->max_position_embeddings);
  r.Int("window_size", &c->window_size);
  r.Double("layer_norm_epsilon", &c->layer_norm_epsilon);
  r.Double("initializer_range", &c->initializer_range);
  r.String("activation_function", &c->activation_function);
  if (root.contains("attention_layers") && !root.contains("attention_types")) {
    const Json& layers = root["attention_layers"];
    for (const Json& name : layers.is_array() ? layers : Json::array()) {
      c->attention_layers.push_back(name.is_string() ? name.get<std::string>() : "");
      if (static_cast<int64_t>(c->attention_layers.size()) > kMaxConfigLayers) break;
    }
    if (!layers.is_array()) r.Wrong("attention_layers (expected a list of \"global\" / \"local\")");
  } else if (root.contains("attention_types")) {
    const Json& types = root["attention_types"];
    bool ok = types.is_array();
    for (const Json& item : ok ? types : Json::array()) {
      if (!item.is_array() || item.size() != 2 || !item[0].is_array() ||
          !item[1].is_number_integer()) {
        ok = false;
        break;
      }
      const int64_t repeat = item[1].get<int64_t>();
      if (repeat < 0 || repeat * static_cast<int64_t>(item[0].size() + 1) > kMaxConfigLayers ||
          static_cast<int64_t>(c->attention_layers.size()) > kMaxConfigLayers) {
        ok = false;
        break;
      }
      for (int64_t k = 0; k < repeat; ++k) {
        for (const Json& name : item[0]) {
          c->attention_layers.push_back(name.is_string() ? name.get<std::string>() : "");
        }
      }
    }
    if (!ok) {
      r.Wrong(
          absl::StrCat("attention_types (expected [[[\"global\", \"local\"], N], ...] "
                       "of at most ",
                       kMaxConfigLayers, " layers)"));
    }
  } else {
    r.Missing("attention_types");
  }
}

// The keys transformers' MambaConfig and Mamba2Config share, read into
// our two config structs' fields of the same names.
template <typename SsmConfig>
void SsmCommonFromJson(Reader& r, SsmConfig* c) {
  r.Int("vocab_size", &c->vocab_size, true);
  r.Int("hidden_size", &c->hidden_size, true);
  r.Int("num_hidden_layers", &c->num_hidden_layers, true);
  r.Int("state_size", &c->state_size);
  r.Int("expand", &c->expand);
  r.Int("conv_kernel", &c->conv_kernel);
  r.Double("layer_norm_epsilon", &c->layer_norm_epsilon);
  r.Bool("use_bias", &c->use_bias);
  r.Bool("use_conv_bias", &c->use_conv_bias);
  r.Bool("residual_in_fp32", &c->residual_in_fp32);
  r.Double("time_step_min", &c->time_step_min);
  r.Double("time_step_max", &c->time_step_max);
  r.Double("time_step_floor", &c->time_step_floor);
  r.Double("initializer_range", &c->initializer_range);
  r.String("hidden_act", &c->hidden_act);
}

void MambaFromJson(Reader& r, MambaConfig* c) {
  SsmCommonFromJson(r, c);
  r.Double("time_step_scale", &c->time_step_scale);
}

void Mamba2FromJson(const Json& root, Reader& r, Mamba2Config* c) {
  SsmCommonFromJson(r, c);
  r.Int("num_heads", &c->num_heads, true);
  r.Int("head_dim", &c->head_dim);
  r.Int("n_groups", &c->n_groups);
  r.Int("chunk_size", &c->chunk_size);
  if (root.contains("time_step_limit") && !root["time_step_limit"].is_null()) {
    const Json& limit = root["time_step_limit"];
    auto bound = [](const Json& v, double* out) {
      // transformers 5 writes infinity as {"__float__": "Infinity"}.
      if (v.is_object() && v.contains("__float__") && v["__float__"] == "Infinity") {
        *out = 1e300;
        return true;
      }
      if (v.is_number()) {
        *out = v.get<double>();
        return true;
      }
      if (v.is_string() && (v == "inf" || v == "Infinity")) {
        *out = 1e300;
        return true;
      }
      return false;
    };
    if (!limit.is_array() || limit.size() != 2 || !bound(limit[0], &c->time_step_limit_min) ||
        !bound(limit[1], &c->time_step_limit_max)) {
      r.Wrong(absl::StrCat("time_step_limit (expected [min, max], got ", Kind(limit), ")"));
    }
  }
}

// state-spaces/mamba* (mamba_ssm's MambaConfig dataclass): d_model, n_layer,
// vocab_size padded to pad_vocab_size_multiple, ssm_cfg for the mixer.
absl::Status MambaSsmFromJson(const Json& root, Reader& r, absl::string_view source,
                              CheckpointConfig* out) {
  int64_t d_model = 0, n_layer = 0, vocab = 0, pad_multiple = 8, d_intermediate = 0;
  r.Int("d_model", &d_model, true);
  r.Int("n_layer", &n_layer, true);
  r.Int("vocab_size", &vocab, true);
  r.Int("pad_vocab_size_multiple", &pad_multiple);
  r.Int("d_intermediate", &d_intermediate);
  bool rms_norm = true;
  r.Bool("rms_norm", &rms_norm);
  bool residual_in_fp32 = true;
  r.Bool("residual_in_fp32", &residual_in_fp32);
  out->tie_word_embeddings = true;
  r.Bool("tie_embeddings", &out->tie_word_embeddings);
  const Json ssm_cfg =
      root.contains("ssm_cfg") && root["ssm_cfg"].is_object() ? root["ssm_cfg"] : Json::object();
  std::string layer = "Mamba1";
  r.String(ssm_cfg, "layer", &layer);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (!rms_norm) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rms_norm false (LayerNorm blocks) is not supported"));
  }
  if (d_intermediate != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": d_intermediate ", d_intermediate,
                                                   " (MLP blocks) is not supported"));
  }
  if (root.contains("attn_layer_idx") && root["attn_layer_idx"].is_array() &&
      !root["attn_layer_idx"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": attn_layer_idx (hybrid attention layers) is not supported"));
  }
  if (pad_multiple > 0 && vocab % pad_multiple != 0) {
    vocab += pad_multiple - vocab % pad_multiple;
  }
  out->mamba_ssm_naming = true;
  if (layer == "Mamba1") {
    MambaConfig& c = out->model.mamba;
    out->model.architecture = "mamba";
    c.hidden_size = d_model;
    c.num_hidden_layers = n_layer;
    c.vocab_size = vocab;
    c.residual_in_fp32 = residual_in_fp32;
    r.Int(ssm_cfg, "d_state", &c.state_size);
    r.Int(ssm_cfg, "d_conv", &c.conv_kernel);
    r.Int(ssm_cfg, "expand", &c.expand);
    r.IntOrAuto(ssm_cfg, "dt_rank", &c.time_step_rank);
    r.Bool(ssm_cfg, "conv_bias", &c.use_conv_bias);
    r.Bool(ssm_cfg, "bias", &c.use_bias);
    r.Double(ssm_cfg, "dt_min", &c.time_step_min);
    r.Double(ssm_cfg, "dt_max", &c.time_step_max);
    r.Double(ssm_cfg, "dt_init_floor", &c.time_step_floor);
    r.Double(ssm_cfg, "dt_scale", &c.time_step_scale);
  } else if (layer == "Mamba2") {
    Mamba2Config& c = out->model.mamba2;
    out->model.architecture = "mamba2";
    c.hidden_size = d_model;
    c.num_hidden_layers = n_layer;
    c.vocab_size = vocab;
    c.residual_in_fp32 = residual_in_fp32;
    r.Int(ssm_cfg, "d_state", &c.state_size);
    r.Int(ssm_cfg, "d_conv", &c.conv_kernel);
    r.Int(ssm_cfg, "expand", &c.expand);
    r.Int(ssm_cfg, "headdim", &c.head_dim);
    r.Int(ssm_cfg, "ngroups", &c.n_groups);
    r.Int(ssm_cfg, "chunk_size", &c.chunk_size);
    r.Bool(ssm_cfg, "conv_bias", &c.use_conv_bias);
    r.Bool(ssm_cfg, "bias", &c.use_bias);
    r.Double(ssm_cfg, "dt_min", &c.time_step_min);
    r.Double(ssm_cfg, "dt_max", &c.time_step_max);
    r.Double(ssm_cfg, "dt_init_floor", &c.time_step_floor);
    if (ssm_cfg.contains("d_ssm") && !ssm_cfg["d_ssm"].is_null()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ssm_cfg.d_ssm (a partial SSM width) is not supported"));
    }
    bool rmsnorm = true, norm_before_gate = false;
    r.Bool(ssm_cfg, "rmsnorm", &rmsnorm);
    r.Bool(ssm_cfg, "norm_before_gate", &norm_before_gate);
    if (!rmsnorm || norm_before_gate) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": ssm_cfg.rmsnorm false or norm_before_gate true is not supported"));
    }
    c.num_heads = c.head_dim > 0 ? c.expand * d_model / c.head_dim : 0;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ssm_cfg.layer \"", layer, "\" is not supported (Mamba1, Mamba2)"));
  }
  return r.Finish();
}

std::string ArchitectureFromClasses(const Json& root) {
  if (!root.contains("architectures") || !root["architectures"].is_array()) return "";
  for (const Json& a : root["architectures"]) {
    if (!a.is_string()) continue;
    const std::string name = a.get<std::string>();
    if (name.rfind("GPTNeoX", 0) == 0) return "gpt_neox";
    if (name.rfind("GPTNeo", 0) == 0) return "gpt_neo";
    if (name.rfind("Mamba2", 0) == 0) return "mamba2";
    if (name.rfind("Mamba", 0) == 0) return "mamba";
  }
  return "";
}

}  // namespace

absl::StatusOr<CheckpointConfig> ParseCheckpointConfigJson(absl::string_view json,
                                                           absl::string_view source) {
  Json root = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    // Python's json module writes a bare Infinity for float("inf") (older
    // Mamba-2 configs' time_step_limit), which JSON does not have.
    std::string patched(json);
    for (size_t at = patched.find("Infinity"); at != std::string::npos;
         at = patched.find("Infinity", at + 1)) {
      const bool quoted = at > 0 && patched[at - 1] == '"';
      if (!quoted) patched.replace(at, 8, "\"inf\"");
    }
    root = Json::parse(patched, nullptr, /*allow_exceptions=*/false);
  }
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  CheckpointConfig out;
  Reader r(root, source);
  std::string type;
  if (root.contains("model_type")) {
    if (!root["model_type"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": model_type must be a string, got ", Kind(root["model_type"])));
    }
    type = root["model_type"].get<std::string>();
  } else if (root.contains("d_model") && root.contains("n_layer")) {
    if (absl::Status s = MambaSsmFromJson(root, r, source, &out); !s.ok()) return s;
    return out;
  } else {
    type = ArchitectureFromClasses(root);
    if (type.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source,
                       ": no model_type key, no known class in architectures, and not a "
                       "mamba_ssm config (d_model, n_layer)"));
    }
  }
  out.model.architecture = type;
  if (type == "gpt_neox") {
    if (absl::Status s = GptNeoXFromJson(root, r, source, &out.model.gpt_neox); !s.ok()) {
      return s;
    }
  } else if (type == "gpt_neo") {
    GptNeoFromJson(root, r, &out.model.gpt_neo);
  } else if (type == "mamba") {
    MambaFromJson(r, &out.model.mamba);
    int64_t intermediate = 0;
    r.Int("intermediate_size", &intermediate);
    if (intermediate != 0 && intermediate != out.model.mamba.intermediate_size()) {
      r.Wrong(absl::StrCat("intermediate_size (", intermediate, " is not expand x hidden_size = ",
                           out.model.mamba.intermediate_size(), ")"));
    }
    r.IntOrAuto(root, "time_step_rank", &out.model.mamba.time_step_rank);
  } else if (type == "mamba2") {
    Mamba2FromJson(root, r, &out.model.mamba2);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": model_type is not supported (supported: \"gpt_neox\", \"gpt_neo\", "
                     "\"mamba\", \"mamba2\"; the value is not repeated here)"));
  }
  // The config classes' defaults: GPT-Neo and Mamba tie the head to the
  // embedding, GPT-NeoX and Mamba-2 do not.
  out.tie_word_embeddings = type == "gpt_neo" || type == "mamba";
  r.Bool("tie_word_embeddings", &out.tie_word_embeddings);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  return out;
}

std::string CheckpointConfigJson(const ModelConfig& config) {
  Json j;
  const std::string& arch = config.architecture;
  j["model_type"] = arch;
  // The head is its own parameter in every model we build (never tied),
  // whatever the config class's default.
  j["tie_word_embeddings"] = false;
  j["torch_dtype"] = "float32";
  if (arch == "gpt_neox") {
    const GptNeoXConfig& c = config.gpt_neox;
    j["architectures"] = {"GPTNeoXForCausalLM"};
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["num_attention_heads"] = c.num_attention_heads;
    j["intermediate_size"] = c.intermediate_size;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["layer_norm_eps"] = c.layer_norm_eps;
    j["initializer_range"] = c.initializer_range;
    j["use_parallel_residual"] = c.use_parallel_residual;
    j["attention_bias"] = c.attention_bias;
    j["hidden_act"] = c.hidden_act;
    // transformers 5's spelling and the published Pythia one.
    j["rope_parameters"] = {{"rope_type", "default"},
                            {"rope_theta", c.rotary_emb_base},
                            {"partial_rotary_factor", c.rotary_pct}};
    j["rotary_pct"] = c.rotary_pct;
    j["rotary_emb_base"] = c.rotary_emb_base;
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 0;
  } else if (arch == "gpt_neo") {
    const GptNeoConfig& c = config.gpt_neo;
    j["architectures"] = {"GPTNeoForCausalLM"};
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["num_layers"] = c.num_layers;
    j["num_heads"] = c.num_heads;
    if (c.intermediate_size > 0) {
      j["intermediate_size"] = c.intermediate_size;
    } else {
      j["intermediate_size"] = nullptr;
    }
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["window_size"] = c.window_size;
    j["layer_norm_epsilon"] = c.layer_norm_epsilon;
    j["initializer_range"] = c.initializer_range;
    j["activation_function"] = c.activation_function;
    // One [[type], 1] entry per layer: any global / local pattern.
    Json types = Json::array();
    for (const std::string& type : c.attention_layers) types.push_back({{type}, 1});
    j["attention_types"] = types;
    j["attention_layers"] = c.attention_layers;
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 0;
  } else if (arch == "mamba" || arch == "mamba2") {
    auto common = [&j](const auto& c) {
      j["vocab_size"] = c.vocab_size;
      j["hidden_size"] = c.hidden_size;
      j["num_hidden_layers"] = c.num_hidden_layers;
      j["state_size"] = c.state_size;
      j["expand"] = c.expand;
      j["conv_kernel"] = c.conv_kernel;
      j["layer_norm_epsilon"] = c.layer_norm_epsilon;
      j["use_bias"] = c.use_bias;
      j["use_conv_bias"] = c.use_conv_bias;
      j["residual_in_fp32"] = c.residual_in_fp32;
      j["time_step_min"] = c.time_step_min;
      j["time_step_max"] = c.time_step_max;
      j["time_step_floor"] = c.time_step_floor;
      j["initializer_range"] = c.initializer_range;
      j["hidden_act"] = c.hidden_act;
      j["intermediate_size"] = c.intermediate_size();
      j["bos_token_id"] = 0;
      j["eos_token_id"] = 0;
      j["pad_token_id"] = 0;
    };
    if (arch == "mamba") {
      const MambaConfig& c = config.mamba;
      common(c);
      j["architectures"] = {"MambaForCausalLM"};
      j["time_step_rank"] = c.dt_rank();
      j["time_step_scale"] = c.time_step_scale;
    } else {
      const Mamba2Config& c = config.mamba2;
      common(c);
      j["architectures"] = {"Mamba2ForCausalLM"};
      j["num_heads"] = c.num_heads;
      j["head_dim"] = c.head_dim;
      j["n_groups"] = c.n_groups;
      j["chunk_size"] = c.chunk_size;
      // transformers 5's spelling of an infinite bound.
      Json upper = c.time_step_limit_max >= 1e300 ? Json({{"__float__", "Infinity"}})
                                                  : Json(c.time_step_limit_max);
      j["time_step_limit"] = {c.time_step_limit_min, upper};
    }
  }
  return j.dump(2) + "\n";
}

absl::StatusOr<CheckpointConfig> ReadCheckpointConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return ParseCheckpointConfigJson(*text, path);
}

absl::StatusOr<CheckpointConfig> ReadCheckpointConfig(const ConfinedDir& dir, int64_t max_bytes) {
  absl::StatusOr<std::string> text = dir.ReadFile("config.json", max_bytes);
  if (!text.ok()) return text.status();
  return ParseCheckpointConfigJson(*text, dir.DisplayName("config.json"));
}

}  // namespace layerflow::worker

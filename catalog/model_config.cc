#include "catalog/model_config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace layerflow::catalog {
namespace {

ModelPreset Pythia(std::string name, int64_t hidden, int64_t layers, int64_t heads) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.config.architecture = "gpt_neox";
  GptNeoXConfig& c = preset.config.gpt_neox;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.intermediate_size = 4 * hidden;
  return preset;
}

// EleutherAI/gpt-neo-*: attention_types [[["global", "local"], L / 2]].
ModelPreset GptNeo(std::string name, int64_t hidden, int64_t layers, int64_t heads) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.config.architecture = "gpt_neo";
  GptNeoConfig& c = preset.config.gpt_neo;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  for (int64_t i = 0; i < layers; ++i) {
    c.attention_layers.push_back(i % 2 == 0 ? "global" : "local");
  }
  return preset;
}

// state-spaces/mamba-*-hf.
ModelPreset Mamba(std::string name, int64_t hidden, int64_t layers) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.config.architecture = "mamba";
  preset.config.mamba.hidden_size = hidden;
  preset.config.mamba.num_hidden_layers = layers;
  return preset;
}

// state-spaces/mamba2-*: headdim 64, d_state 128, ngroups 1, chunk 256,
// vocab 50277 padded to a multiple of 16.
ModelPreset Mamba2(std::string name, int64_t hidden, int64_t layers) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.config.architecture = "mamba2";
  Mamba2Config& c = preset.config.mamba2;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_heads = c.expand * hidden / c.head_dim;
  return preset;
}

}  // namespace

const std::vector<std::string>& KnownArchitectures() {
  static const std::vector<std::string>* known =
      new std::vector<std::string>{"gpt_neox", "gpt_neo", "mamba", "mamba2"};
  return *known;
}

int64_t ModelConfig::num_layers() const {
  if (architecture == "gpt_neo") return gpt_neo.num_layers;
  if (architecture == "mamba") return mamba.num_hidden_layers;
  if (architecture == "mamba2") return mamba2.num_hidden_layers;
  return gpt_neox.num_hidden_layers;
}

int64_t ModelConfig::hidden_size() const {
  if (architecture == "gpt_neo") return gpt_neo.hidden_size;
  if (architecture == "mamba") return mamba.hidden_size;
  if (architecture == "mamba2") return mamba2.hidden_size;
  return gpt_neox.hidden_size;
}

int64_t ModelConfig::vocab_size() const {
  if (architecture == "gpt_neo") return gpt_neo.vocab_size;
  if (architecture == "mamba") return mamba.vocab_size;
  if (architecture == "mamba2") return mamba2.vocab_size;
  return gpt_neox.vocab_size;
}

const std::vector<ModelPreset>& ModelPresets() {
  // Sizes from the published configs (config.json of each hub repo).
  static const std::vector<ModelPreset>* presets = [] {
    auto* list = new std::vector<ModelPreset>();
    // Test-size models with the published structure, for CI and smoke runs.
    ModelPreset tiny = Pythia("pythia-tiny", 64, 2, 4);
    tiny.config.gpt_neox.vocab_size = 512;
    list->push_back(tiny);
    list->push_back(Pythia("pythia-14m", 128, 6, 4));
    list->push_back(Pythia("pythia-70m", 512, 6, 8));
    list->push_back(Pythia("pythia-160m", 768, 12, 12));
    list->push_back(Pythia("pythia-410m", 1024, 24, 16));
    list->push_back(Pythia("pythia-1b", 2048, 16, 8));
    list->push_back(Pythia("pythia-1.4b", 2048, 24, 16));
    list->push_back(Pythia("pythia-2.8b", 2560, 32, 32));

    ModelPreset neo_tiny = GptNeo("gpt-neo-tiny", 64, 2, 4);
    neo_tiny.config.gpt_neo.vocab_size = 512;
    neo_tiny.config.gpt_neo.window_size = 16;
    list->push_back(neo_tiny);
    list->push_back(GptNeo("gpt-neo-125m", 768, 12, 12));
    list->push_back(GptNeo("gpt-neo-1.3b", 2048, 24, 16));
    list->push_back(GptNeo("gpt-neo-2.7b", 2560, 32, 20));

    ModelPreset mamba_tiny = Mamba("mamba-tiny", 64, 2);
    mamba_tiny.config.mamba.vocab_size = 512;
    list->push_back(mamba_tiny);
    list->push_back(Mamba("mamba-130m", 768, 24));
    list->push_back(Mamba("mamba-370m", 1024, 48));
    list->push_back(Mamba("mamba-790m", 1536, 48));
    list->push_back(Mamba("mamba-1.4b", 2048, 48));
    list->push_back(Mamba("mamba-2.8b", 2560, 64));

    ModelPreset mamba2_tiny = Mamba2("mamba2-tiny", 64, 2);
    mamba2_tiny.config.mamba2.vocab_size = 512;
    mamba2_tiny.config.mamba2.head_dim = 16;
    mamba2_tiny.config.mamba2.num_heads = 8;
    mamba2_tiny.config.mamba2.state_size = 16;
    mamba2_tiny.config.mamba2.chunk_size = 32;
    list->push_back(mamba2_tiny);
    list->push_back(Mamba2("mamba2-130m", 768, 24));
    list->push_back(Mamba2("mamba2-370m", 1024, 48));
    list->push_back(Mamba2("mamba2-780m", 1536, 48));
    list->push_back(Mamba2("mamba2-1.3b", 2048, 48));
    list->push_back(Mamba2("mamba2-2.7b", 2560, 64));
    return list;
  }();
  return *presets;
}

absl::StatusOr<ModelPreset> FindModelPreset(std::string_view name_in) {
  // Debian's abseil is built with its own string_view (not std::string_view).
  const absl::string_view name(name_in.data(), name_in.size());
  std::vector<std::string> names;
  for (const ModelPreset& preset : ModelPresets()) {
    if (preset.name == name) return preset;
    names.push_back(preset.name);
  }
  return absl::NotFoundError(absl::StrCat("unknown model preset '", name,
                                          "'; known presets: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<InitScheme> ParseInitScheme(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  using Kind = InitScheme::Kind;
  if (text == "reference") return InitScheme{Kind::kReference, 0};
  if (text == "xavier_uniform") return InitScheme{Kind::kXavierUniform, 0};
  if (text == "xavier_normal") return InitScheme{Kind::kXavierNormal, 0};
  if (text == "kaiming_normal") return InitScheme{Kind::kKaimingNormal, 0};
  for (auto [prefix, kind] :
       {std::pair{"normal(", Kind::kNormal}, std::pair{"uniform(", Kind::kUniform}}) {
    absl::string_view rest = text;
    if (!absl::ConsumePrefix(&rest, prefix)) continue;
    double param = 0;
    if (!absl::ConsumeSuffix(&rest, ")") || !absl::SimpleAtod(rest, &param) ||
        !std::isfinite(param) || param <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("init scheme '", text, "': expected ", prefix,
                                                     "X) with X a positive number"));
    }
    return InitScheme{kind, param};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown init scheme '", text,
                   "'; known: reference, normal(STD), uniform(A), xavier_uniform, "
                   "xavier_normal, kaiming_normal"));
}

}  // namespace layerflow::catalog

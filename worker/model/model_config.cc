#include "worker/model/model_config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace layerflow::worker {
namespace {

ModelPreset Pythia(std::string name, int64_t hidden, int64_t layers,
                   int64_t heads) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.architecture = "gpt_neox";
  preset.gpt_neox.hidden_size = hidden;
  preset.gpt_neox.num_hidden_layers = layers;
  preset.gpt_neox.num_attention_heads = heads;
  preset.gpt_neox.intermediate_size = 4 * hidden;
  return preset;
}

}  // namespace

const std::vector<ModelPreset>& ModelPresets() {
  // Sizes from the published Pythia configs (EleutherAI/pythia-*, config.json).
  static const std::vector<ModelPreset>* presets = [] {
    auto* list = new std::vector<ModelPreset>();
    // A test-size model with the same structure, for CI and smoke runs.
    ModelPreset tiny = Pythia("pythia-tiny", 64, 2, 4);
    tiny.gpt_neox.vocab_size = 512;
    list->push_back(tiny);
    list->push_back(Pythia("pythia-14m", 128, 6, 4));
    list->push_back(Pythia("pythia-70m", 512, 6, 8));
    list->push_back(Pythia("pythia-160m", 768, 12, 12));
    list->push_back(Pythia("pythia-410m", 1024, 24, 16));
    list->push_back(Pythia("pythia-1b", 2048, 16, 8));
    list->push_back(Pythia("pythia-1.4b", 2048, 24, 16));
    list->push_back(Pythia("pythia-2.8b", 2560, 32, 32));
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
                                          "'; known presets: ",
                                          absl::StrJoin(names, ", ")));
}

absl::StatusOr<InitScheme> ParseInitScheme(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  using Kind = InitScheme::Kind;
  if (text == "reference") return InitScheme{Kind::kReference, 0};
  if (text == "xavier_uniform") return InitScheme{Kind::kXavierUniform, 0};
  if (text == "xavier_normal") return InitScheme{Kind::kXavierNormal, 0};
  if (text == "kaiming_normal") return InitScheme{Kind::kKaimingNormal, 0};
  for (auto [prefix, kind] : {std::pair{"normal(", Kind::kNormal},
                              std::pair{"uniform(", Kind::kUniform}}) {
    absl::string_view rest = text;
    if (!absl::ConsumePrefix(&rest, prefix)) continue;
    double param = 0;
    if (!absl::ConsumeSuffix(&rest, ")") || !absl::SimpleAtod(rest, &param) ||
        !std::isfinite(param) || param <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("init scheme '", text, "': expected ", prefix,
                       "X) with X a positive number"));
    }
    return InitScheme{kind, param};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown init scheme '", text,
      "'; known: reference, normal(STD), uniform(A), xavier_uniform, "
      "xavier_normal, kaiming_normal"));
}

}  // namespace layerflow::worker

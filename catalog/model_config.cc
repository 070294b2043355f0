#include "catalog/model_config.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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
std::vector<std::string> AlternatingAttention(int64_t layers) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < layers; ++i) out.push_back(i % 2 == 0 ? "global" : "local");
  return out;
}

ModelPreset GptNeo(std::string name, int64_t hidden, int64_t layers, int64_t heads) {
  ModelPreset preset;
  preset.name = std::move(name);
  preset.config.architecture = "gpt_neo";
  GptNeoConfig& c = preset.config.gpt_neo;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.attention_layers = AlternatingAttention(layers);
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

namespace {

absl::Status BadSize(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("model '", name, "': ", what));
}

// An attention model's hidden size and heads after width= / heads=: heads
// given, or the preset's head size (hidden / heads) kept.
absl::Status ResizeAttention(absl::string_view name, int64_t width, int64_t heads,
                             int64_t& hidden, int64_t& num_heads) {
  if (width == 0 && heads == 0) return absl::OkStatus();
  const int64_t w = width > 0 ? width : hidden;
  int64_t h = heads;
  if (h == 0) {
    const int64_t head_size = hidden / num_heads;
    if (w % head_size != 0) {
      return BadSize(name, absl::StrCat("width ", w, " is not a multiple of the head size ",
                                        head_size, " (give heads= too)"));
    }
    h = w / head_size;
  }
  if (w % h != 0) return BadSize(name, absl::StrCat("width ", w, " is not a multiple of ", h, " heads"));
  hidden = w;
  num_heads = h;
  return absl::OkStatus();
}

// A preset resized by "?key=value&..." (docs/models.md, "Resized presets"):
// layers (blocks), width (hidden size; the feed-forward / inner widths
// follow the preset's ratio, attention keeps its head size unless heads= is
// given, Mamba-2 its head_dim), heads (attention only), state (the SSMs'
// state size). INVALID_ARGUMENT naming the key for anything else.
absl::Status Resize(absl::string_view name, absl::string_view query, ModelConfig& c) {
  int64_t layers = 0, width = 0, heads = 0, state = 0;
  std::vector<std::string> seen;
  for (absl::string_view item : absl::StrSplit(query, '&')) {
    const std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    const std::string key(kv.first);
    int64_t value = 0;
    if (!absl::SimpleAtoi(kv.second, &value) || value < 1 || value > 65536) {
      return BadSize(name, absl::StrCat(key, "=", kv.second, ": expected an integer in [1, 65536]"));
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return BadSize(name, absl::StrCat(key, " given twice"));
    }
    seen.push_back(key);
    if (key == "layers") {
      layers = value;
    } else if (key == "width") {
      width = value;
    } else if (key == "heads") {
      heads = value;
    } else if (key == "state") {
      state = value;
    } else {
      return BadSize(name, absl::StrCat("unknown size '", key, "'; known: layers, width, heads, state"));
    }
  }
  const bool attention = c.architecture == "gpt_neox" || c.architecture == "gpt_neo";
  if (attention && state > 0) return BadSize(name, "state: attention models have no state");
  if (!attention && heads > 0) {
    return BadSize(name, c.architecture == "mamba2"
                             ? "heads: Mamba-2's heads follow the width (expand * width / head_dim)"
                             : "heads: Mamba has no heads");
  }
  if (c.architecture == "gpt_neox") {
    GptNeoXConfig& g = c.gpt_neox;
    if (layers > 0) g.num_hidden_layers = layers;
    const int64_t ffn_ratio = g.intermediate_size / g.hidden_size;
    if (absl::Status s = ResizeAttention(name, width, heads, g.hidden_size, g.num_attention_heads);
        !s.ok()) {
      return s;
    }
    // Rotary embeds pairs of a head's dimensions.
    if (g.hidden_size / g.num_attention_heads % 2 != 0) {
      return BadSize(name, absl::StrCat("width ", g.hidden_size, " over ", g.num_attention_heads,
                                        " heads needs an even head size"));
    }
    g.intermediate_size = ffn_ratio * g.hidden_size;
  } else if (c.architecture == "gpt_neo") {
    GptNeoConfig& g = c.gpt_neo;
    if (layers > 0) {
      g.num_layers = layers;
      g.attention_layers = AlternatingAttention(layers);
    }
    if (absl::Status s = ResizeAttention(name, width, heads, g.hidden_size, g.num_heads); !s.ok()) {
      return s;
    }
  } else if (c.architecture == "mamba") {
    if (layers > 0) c.mamba.num_hidden_layers = layers;
    if (width > 0) c.mamba.hidden_size = width;  // dt_rank: auto, ceil(width / 16)
    if (state > 0) c.mamba.state_size = state;
  } else if (c.architecture == "mamba2") {
    Mamba2Config& m = c.mamba2;
    if (layers > 0) m.num_hidden_layers = layers;
    if (width > 0) {
      if (m.expand * width % m.head_dim != 0) {
        return BadSize(name, absl::StrCat("width ", width, ": expand * width = ", m.expand * width,
                                          " is not a multiple of head_dim ", m.head_dim));
      }
      m.hidden_size = width;
      m.num_heads = m.expand * width / m.head_dim;
      if (m.num_heads % m.n_groups != 0) {
        return BadSize(name, absl::StrCat("width ", width, " gives ", m.num_heads,
                                          " heads, not a multiple of n_groups ", m.n_groups));
      }
    }
    if (state > 0) m.state_size = state;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelPreset> FindModelPreset(std::string_view name_in) {
  // Debian's abseil is built with its own string_view (not std::string_view).
  const absl::string_view full(name_in.data(), name_in.size());
  // "pythia-160m?layers=6&width=384": the preset resized (Resize).
  const size_t query = full.find('?');
  if (query != absl::string_view::npos && full.find('/') == absl::string_view::npos) {
    const absl::string_view preset = full.substr(0, query);
    absl::StatusOr<ModelPreset> base = FindModelPreset(std::string_view(preset.data(), preset.size()));
    if (!base.ok()) return base.status();
    if (query + 1 == full.size()) return BadSize(full, "nothing after '?'");
    ModelPreset resized = *std::move(base);
    if (absl::Status s = Resize(full, full.substr(query + 1), resized.config); !s.ok()) return s;
    resized.name = std::string(full);
    return resized;
  }
  const absl::string_view name = full;
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

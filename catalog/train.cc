#include "catalog/train.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace layerflow::catalog {
namespace {

constexpr double kPi = 3.14159265358979323846;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// value in [lo, hi], or 0 (the default).
absl::Status IntInRange(absl::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value == 0 || (value >= lo && value <= hi)) return absl::OkStatus();
  return Invalid(field,
                 absl::StrCat(value, " is outside [", lo, ", ", hi, "] (0 means the default)"));
}

// A finite value in (lo, hi] (or [lo, hi] when lo_inclusive), or 0.
absl::Status RealInRange(absl::string_view field, double value, double lo, double hi,
                         bool lo_inclusive = false) {
  if (value == 0) return absl::OkStatus();
  const bool above = lo_inclusive ? value >= lo : value > lo;
  if (std::isfinite(value) && above && value <= hi) return absl::OkStatus();
  return Invalid(field, absl::StrCat(value, " is outside ", lo_inclusive ? "[" : "(", lo, ", ", hi,
                                     "] (0 means the default)"));
}

}  // namespace

TrainSettings WithTrainDefaults(TrainSettings s) {
  if (s.task.empty()) s.task = std::string(kDefaultTrainTask);
  if (s.vocab == 0) s.vocab = kDefaultTrainVocab;
  if (s.length == 0) s.length = kDefaultTrainLength;
  if (s.pairs == 0) s.pairs = kDefaultTrainPairs;
  if (s.alpha == 0) s.alpha = kDefaultTrainAlpha;
  if (s.layers == 0) s.layers = kDefaultTrainLayers;
  if (s.width == 0) s.width = kDefaultTrainWidth;
  if (s.steps == 0) s.steps = kDefaultTrainSteps;
  if (s.batch == 0) s.batch = kDefaultTrainBatch;
  if (s.lr == 0) s.lr = kDefaultTrainLr;
  if (s.warmup == 0) s.warmup = s.steps / 20;
  if (s.weight_decay == 0) s.weight_decay = kDefaultTrainWeightDecay;
  if (s.clip == 0) s.clip = kDefaultTrainClip;
  if (s.target_accuracy == 0) s.target_accuracy = kDefaultTrainTargetAccuracy;
  if (s.eval_every == 0) s.eval_every = std::min(kDefaultTrainEvalEvery, s.steps);
  if (s.save_every == 0) s.save_every = 2 * s.eval_every;
  if (s.eval_examples == 0) s.eval_examples = kDefaultTrainEvalExamples;
  if (s.curriculum.empty()) s.curriculum = std::string(kTrainCurriculumNone);
  if (s.penalty.empty()) s.penalty = std::string(kTrainPenaltyNone);
  if (s.penalty == kTrainPenaltyVLoc && s.penalty_series.empty()) {
    s.penalty_series = std::string(kTrainPenaltyIntertokenCos);
  }
  return s;
}

namespace {

// The penalty fields of settings with defaults applied.
absl::Status ValidatePenalty(const TrainSettings& d) {
  const bool none = d.penalty == kTrainPenaltyNone;
  const bool cos = d.penalty == kTrainPenaltyIntertokenCos;
  const bool vloc = d.penalty == kTrainPenaltyVLoc;
  if (!none && !cos && !vloc) {
    return Invalid("penalty", absl::StrCat("unknown penalty '", d.penalty,
                                           "'; known: none, intertoken_cos, v_loc"));
  }
  if (none) {
    if (d.penalty_weight != 0) return Invalid("penalty_weight", "set without a penalty");
    if (!d.penalty_layers.empty()) return Invalid("penalty_layers", "set without a penalty");
    if (!d.penalty_series.empty()) return Invalid("penalty_series", "set without a penalty");
    return absl::OkStatus();
  }
  if (!(d.penalty_weight > 0 && d.penalty_weight <= kMaxTrainPenaltyWeight)) {
    return Invalid("penalty_weight", absl::StrCat(d.penalty_weight, " is outside (0, ",
                                                  kMaxTrainPenaltyWeight, "]"));
  }
  const int32_t last = d.layers + 1;  // the final norm's point
  if (cos) {
    if (!d.penalty_series.empty()) {
      return Invalid("penalty_series", "applies to penalty v_loc only");
    }
    if (d.penalty_layers.empty()) {
      return Invalid("penalty_layers",
                     absl::StrCat("penalty intertoken_cos needs at least one point (0 the "
                                  "embedding .. ",
                                  last, " the final norm; -1 the last)"));
    }
    std::vector<int32_t> seen;
    for (int32_t layer : d.penalty_layers) {
      if (layer < -(last + 1) || layer > last) {
        return Invalid("penalty_layers", absl::StrCat(layer, " is outside [", -(last + 1), ", ",
                                                      last, "] for ", d.layers, " layers"));
      }
      const int32_t point = layer < 0 ? layer + last + 1 : layer;
      if (std::find(seen.begin(), seen.end(), point) != seen.end()) {
        return Invalid("penalty_layers", absl::StrCat("point ", point, " named twice"));
      }
      seen.push_back(point);
    }
    return absl::OkStatus();
  }
  if (!d.penalty_layers.empty()) {
    return Invalid("penalty_layers", "applies to penalty intertoken_cos only (v_loc reads the "
                                     "whole series)");
  }
  const bool adjacent = d.penalty_series == kTrainPenaltySeriesAdjacentCos;
  if (!adjacent && d.penalty_series != kTrainPenaltyIntertokenCos) {
    return Invalid("penalty_series", absl::StrCat("unknown series '", d.penalty_series,
                                                  "'; known: intertoken_cos, adjacent_cos"));
  }
  // A cubic interpolates 4 points: v_loc needs 5 (server/derived).
  const int32_t points = adjacent ? d.layers : d.layers + 1;
  if (points < 5) {
    return Invalid("penalty_series",
                   absl::StrCat("v_loc of ", d.penalty_series, " needs a series of at least 5 "
                                "points and ", d.layers, " layers give ", points, " (layers >= ",
                                adjacent ? 5 : 4, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

TrainPenaltyPoints PenaltyPointsOf(const TrainSettings& settings) {
  const TrainSettings d = WithTrainDefaults(settings);
  TrainPenaltyPoints out;
  if (d.penalty == kTrainPenaltyIntertokenCos) {
    for (int32_t layer : d.penalty_layers) {
      out.points.push_back(layer < 0 ? layer + d.layers + 2 : layer);
    }
  } else if (d.penalty == kTrainPenaltyVLoc) {
    out.adjacent = d.penalty_series == kTrainPenaltySeriesAdjacentCos;
    for (int32_t l = 0; l <= d.layers; ++l) out.points.push_back(l);
  }
  return out;
}

absl::Status ValidateTrainSettings(const TrainSettings& s) {
  if (!s.task.empty() && s.task != kDefaultTrainTask) {
    return Invalid("task", absl::StrCat("unknown task '", s.task, "'; known tasks: mqar"));
  }
  if (absl::Status st = IntInRange("vocab", s.vocab, 4, 1 << 20); !st.ok()) return st;
  if (absl::Status st = IntInRange("length", s.length, 4, 65536); !st.ok()) return st;
  if (absl::Status st = IntInRange("pairs", s.pairs, 1, 1 << 16); !st.ok()) return st;
  if (absl::Status st = RealInRange("alpha", s.alpha, 0, 100); !st.ok()) return st;
  if (absl::Status st = IntInRange("layers", s.layers, 1, 64); !st.ok()) return st;
  if (absl::Status st = IntInRange("width", s.width, 8, 8192); !st.ok()) return st;
  if (absl::Status st = IntInRange("heads", s.heads, 1, 1024); !st.ok()) return st;
  if (absl::Status st = IntInRange("state_size", s.state_size, 1, 256); !st.ok()) return st;
  if (absl::Status st = IntInRange("steps", s.steps, 1, 100'000'000); !st.ok()) return st;
  if (absl::Status st = IntInRange("batch", s.batch, 1, 4096); !st.ok()) return st;
  if (absl::Status st = RealInRange("lr", s.lr, 0, 1); !st.ok()) return st;
  if (s.warmup < 0) return Invalid("warmup", absl::StrCat(s.warmup, " is negative"));
  if (absl::Status st = RealInRange("weight_decay", s.weight_decay, 0, 10, true); !st.ok()) {
    return st;
  }
  if (absl::Status st = RealInRange("clip", s.clip, 0, 1e12); !st.ok()) return st;
  if (absl::Status st = RealInRange("target_accuracy", s.target_accuracy, 0, 1); !st.ok()) {
    return st;
  }
  if (s.eval_every < 0) return Invalid("eval_every", absl::StrCat(s.eval_every, " is negative"));
  if (s.save_every < 0) return Invalid("save_every", absl::StrCat(s.save_every, " is negative"));
  if (absl::Status st = IntInRange("eval_examples", s.eval_examples, 1, 65536); !st.ok()) {
    return st;
  }
  if (!s.curriculum.empty() && s.curriculum != kTrainCurriculumNone &&
      s.curriculum != kTrainCurriculumZoology) {
    return Invalid("curriculum", absl::StrCat("unknown curriculum '", s.curriculum,
                                              "'; known: none, zoology"));
  }
  // The relations between fields, on the values that will run.
  const TrainSettings d = WithTrainDefaults(s);
  if (absl::Status st = ValidatePenalty(d); !st.ok()) return st;
  if (d.warmup >= d.steps) {
    return Invalid("warmup", absl::StrCat(d.warmup, " steps leave none of the ", d.steps,
                                          " steps for the cosine decay"));
  }
  if (d.eval_every > d.steps) {
    return Invalid("eval_every",
                   absl::StrCat(d.eval_every, " is more than the ", d.steps, " steps"));
  }
  if (d.save_every % d.eval_every != 0) {
    return Invalid("save_every",
                   absl::StrCat(d.save_every, " is not a multiple of eval_every ", d.eval_every,
                                " (a saved state sits at a chunk's end)"));
  }
  // MQAR's layout (worker/data/mqar.h): the pairs, then a query slot per
  // pair in the rest; keys from [1, vocab / 2).
  if (4LL * d.pairs > d.length) {
    return Invalid("pairs", absl::StrCat(d.pairs, " pairs need length >= 4 * pairs = ",
                                         4LL * d.pairs, "; length is ", d.length));
  }
  if (d.pairs > d.vocab / 2 - 1) {
    return Invalid("pairs",
                   absl::StrCat(d.pairs, " distinct keys from [1, ", d.vocab / 2,
                                ") need vocab >= ", 2LL * (d.pairs + 1), "; vocab is ", d.vocab));
  }
  return absl::OkStatus();
}

std::vector<TrainSegment> TrainSegments(const TrainSettings& settings) {
  const TrainSettings s = WithTrainDefaults(settings);
  if (s.curriculum != kTrainCurriculumZoology) return {{s.length, s.pairs, 1}};
  struct Scale {
    int32_t length_div, pairs_div, weight;
  };
  constexpr Scale kZoology[] = {{8, 16, 5}, {4, 8, 1}, {2, 4, 1}, {2, 2, 1}, {1, 1, 1}};
  std::vector<TrainSegment> segments;
  for (const Scale& k : kZoology) {
    TrainSegment g;
    g.pairs = std::max(1, s.pairs / k.pairs_div);
    // 4 * pairs <= length holds for the task (validated), so for each part.
    g.length = std::max(s.length / k.length_div, 4 * g.pairs);
    g.weight = k.weight;
    segments.push_back(g);
  }
  return segments;
}

size_t TrainSegmentOfStep(const TrainSettings& settings, int64_t step) {
  const std::vector<TrainSegment> segments = TrainSegments(settings);
  int64_t cycle = 0;
  for (const TrainSegment& g : segments) cycle += g.weight;
  int64_t slot = (step - 1) % cycle;
  for (size_t k = 0; k < segments.size(); ++k) {
    if (slot < segments[k].weight) return k;
    slot -= segments[k].weight;
  }
  return segments.size() - 1;
}

bool IsTrainArchitecture(absl::string_view name) {
  return name == "gpt_neox" || name == "gpt_neo" || name == "mamba" || name == "mamba2";
}

absl::StatusOr<ModelConfig> TrainModelConfig(absl::string_view architecture,
                                             const TrainSettings& settings) {
  const TrainSettings s = WithTrainDefaults(settings);
  ModelConfig config;
  config.architecture = std::string(architecture);
  const int64_t heads = s.heads > 0 ? s.heads : kDefaultTrainAttentionHeads;
  if (architecture == "gpt_neox" || architecture == "gpt_neo") {
    if (s.width % heads != 0) {
      return Invalid("heads", absl::StrCat(heads, " heads do not divide width ", s.width));
    }
    // GPT-NeoX rotates a quarter of each head in pairs.
    if (architecture == "gpt_neox" && (s.width / heads) % 8 != 0) {
      return Invalid("heads",
                     absl::StrCat("width ", s.width, " / ", heads, " heads = ", s.width / heads,
                                  " dims a head; gpt_neox needs a multiple of 8 "
                                  "(a quarter of them rotated in pairs)"));
    }
  }
  if (s.state_size > 0 && architecture != "mamba" && architecture != "mamba2") {
    return Invalid("state_size", absl::StrCat("only mamba and mamba2 have a state; '", architecture,
                                              "' is attention"));
  }
  if (s.heads > 0 && (architecture == "mamba" || architecture == "mamba2")) {
    return Invalid("heads", absl::StrCat("set for attention models only; ", architecture,
                                         architecture == "mamba2" ? " has 2 * width / 64 heads"
                                                                  : " has no heads"));
  }
  if (architecture == "gpt_neox") {
    GptNeoXConfig& c = config.gpt_neox;
    c.vocab_size = s.vocab;
    c.hidden_size = s.width;
    c.num_hidden_layers = s.layers;
    c.num_attention_heads = heads;
    c.intermediate_size = 4LL * s.width;
    c.rotary_pct = 0.25;
    c.max_position_embeddings = s.length;
  } else if (architecture == "gpt_neo") {
    GptNeoConfig& c = config.gpt_neo;
    c.vocab_size = s.vocab;
    c.hidden_size = s.width;
    c.num_layers = s.layers;
    c.num_heads = heads;
    c.intermediate_size = 0;
    c.max_position_embeddings = s.length;
    c.attention_layers.assign(s.layers, "global");
  } else if (architecture == "mamba") {
    MambaConfig& c = config.mamba;
    c.vocab_size = s.vocab;
    c.hidden_size = s.width;
    c.num_hidden_layers = s.layers;
    c.state_size = s.state_size > 0 ? s.state_size : kDefaultTrainMambaStateSize;
  } else if (architecture == "mamba2") {
    Mamba2Config& c = config.mamba2;
    if ((2LL * s.width) % kTrainMamba2HeadDim != 0) {
      return Invalid("width", absl::StrCat(s.width, ": mamba2 needs 2 * width a multiple of ",
                                           kTrainMamba2HeadDim, " (its head_dim)"));
    }
    c.vocab_size = s.vocab;
    c.hidden_size = s.width;
    c.num_hidden_layers = s.layers;
    c.head_dim = kTrainMamba2HeadDim;
    c.num_heads = 2LL * s.width / kTrainMamba2HeadDim;
    c.n_groups = 1;
    c.state_size = s.state_size > 0 ? s.state_size : kDefaultTrainMamba2StateSize;
    c.chunk_size = std::min<int64_t>(256, s.length);
  } else {
    return Invalid("model", absl::StrCat("'", architecture,
                                         "' is not an architecture a TRAIN job builds; "
                                         "known: gpt_neox, gpt_neo, mamba, mamba2"));
  }
  return config;
}

int64_t TrainChunkCount(const TrainSettings& settings) {
  const TrainSettings s = WithTrainDefaults(settings);
  return (s.steps + s.eval_every - 1) / s.eval_every;
}

int64_t TrainChunkEndStep(const TrainSettings& settings, int64_t chunk) {
  const TrainSettings s = WithTrainDefaults(settings);
  return std::min((chunk + 1) * s.eval_every, s.steps);
}

double TrainLearningRate(const TrainSettings& settings, int64_t step) {
  const TrainSettings s = WithTrainDefaults(settings);
  if (s.warmup > 0 && step <= s.warmup) {
    return s.lr * static_cast<double>(step) / static_cast<double>(s.warmup);
  }
  const double progress = static_cast<double>(step - s.warmup) /
                          static_cast<double>(std::max<int64_t>(1, s.steps - s.warmup));
  return s.lr * 0.5 * (1.0 + std::cos(kPi * std::min(1.0, progress)));
}

std::string TrainedModelName(absl::string_view train_job_id, bool init) {
  return absl::StrCat(kArtifactModelScheme, train_job_id, "/",
                      init ? kInitModelFolder : kTrainedModelFolder);
}

bool ParseTrainedModelName(absl::string_view model, std::string* train_job_id, bool* init) {
  if (!absl::ConsumePrefix(&model, kArtifactModelScheme)) return false;
  const size_t slash = model.rfind('/');
  if (slash == absl::string_view::npos || slash == 0) return false;
  const absl::string_view folder = model.substr(slash + 1);
  if (folder != kInitModelFolder && folder != kTrainedModelFolder) return false;
  *train_job_id = std::string(model.substr(0, slash));
  *init = folder == kInitModelFolder;
  return true;
}

}  // namespace layerflow::catalog

#include "server/core/chunk_validation.h"

#include <cmath>
#include <optional>
#include <utility>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catalog/analyses.h"
#include "catalog/chunks.h"
#include "catalog/model_config.h"
#include "catalog/train.h"
#include "common/api_limits.h"
#include "server/spec/sweep_spec.h"

namespace layerflow::server {
namespace {

using ::layerflow::catalog::kTrainRows;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status CheckSize(absl::string_view field, size_t size, int64_t max, const char* unit) {
  if (static_cast<int64_t>(size) <= max) return absl::OkStatus();
  return Invalid(field, absl::StrCat(size, " ", unit, ", more than the limit of ", max));
}

// A row name of the spectrum `prefix` (worker/analysis/spectrum.h):
// <prefix>_frac_<k>, <prefix>_mean_log, <prefix>_{min,q01,q50,q99,max}.
bool IsSpectrumRow(absl::string_view metric, absl::string_view prefix) {
  if (!absl::ConsumePrefix(&metric, prefix) || !absl::ConsumePrefix(&metric, "_")) return false;
  for (absl::string_view tail : {"mean_log", "min", "q01", "q50", "q99", "max"}) {
    if (metric == tail) return true;
  }
  int k = 0;
  return absl::ConsumePrefix(&metric, "frac_") && !metric.empty() && metric.size() <= 3 &&
         absl::SimpleAtoi(metric, &k) && k >= 0;
}

bool IsProbeRow(absl::string_view metric) {
  return absl::StartsWith(metric, "probe_") || absl::StartsWith(metric, "cka_example_");
}

}  // namespace

// A TRAIN chunk (catalog/train.h): rows of kTrainRows at layer 0, each at
// the step it ends at (position), at most the chunk's end step.
absl::Status ValidateTrainChunk(const layerflow::v1::ResultChunk& chunk,
                                const layerflow::v1::Job& job) {
  const catalog::TrainSettings settings =
      catalog::WithTrainDefaults(TrainSettingsOf(job.spec().train()));
  const int64_t end_step = catalog::TrainChunkEndStep(settings, chunk.sequence());
  const int64_t max_count = std::max<int64_t>(settings.eval_every, settings.eval_examples);
  for (int i = 0; i < chunk.stats_size(); ++i) {
    const layerflow::v1::MetricStat& stat = chunk.stats(i);
    const std::string field = absl::StrCat("chunk.stats[", i, "]");
    bool known = false;
    for (absl::string_view row : kTrainRows) known = known || stat.metric() == row;
    if (!known) {
      return Invalid(field + ".metric",
                     absl::StrCat("'", stat.metric(), "' is not a result of job ", job.job_id(),
                                  " (a TRAIN job: ", absl::StrJoin(kTrainRows, ", "), ")"));
    }
    if (stat.layer() != 0 || stat.has_layer_b() || stat.has_head()) {
      return Invalid(field + ".layer", "TRAIN rows sit at layer 0 with no layer_b or head");
    }
    if (!stat.has_position() || stat.position() < 1 || stat.position() > end_step) {
      return Invalid(field + ".position",
                     absl::StrCat(stat.has_position() ? absl::StrCat(stat.position()) : "unset",
                                  " is not a step in [1, ", end_step, "] (chunk ", chunk.sequence(),
                                  " ends at step ", end_step, ")"));
    }
    if (stat.count() > max_count) {
      return Invalid(field + ".count",
                     absl::StrCat(stat.count(), " values, more than the ", max_count,
                                  " steps or held-out sequences of a chunk"));
    }
  }
  if (chunk.prompt_tokens_size() != 0) {
    return Invalid("chunk.prompt_tokens", "a TRAIN chunk has no prompts");
  }
  return absl::OkStatus();
}

absl::Status ValidateChunkForJob(const layerflow::v1::ResultChunk& chunk,
                                 const layerflow::v1::Job& job) {
  const layerflow::v1::JobSpec& spec = job.spec();
  const bool probe = spec.kind() == layerflow::v1::JOB_KIND_PROBE;
  if (chunk.sequence() >= job.chunks_total()) {
    return Invalid("chunk.sequence", absl::StrCat(chunk.sequence(), " is outside [0, ",
                                                  job.chunks_total(), ") for job ", job.job_id()));
  }
  if (spec.kind() == layerflow::v1::JOB_KIND_TRAIN) return ValidateTrainChunk(chunk, job);
  // Representation points 0..L+1 (embedding, blocks, final norm).
  int64_t max_layer = kMaxCheckpointLayers;
  if (absl::StatusOr<catalog::ModelPreset> preset = catalog::FindModelPreset(spec.model());
      preset.ok()) {
    max_layer = preset->config.num_layers() + 1;
  }
  const catalog::PromptRange prompts =
      catalog::ChunkPrompts(chunk.sequence(), spec.num_prompts(), spec.prompts_per_chunk());
  const int64_t chunk_prompts = std::max<int64_t>(0, prompts.end - prompts.begin);
  // A PROBE row holds one value per seed, per label permutation, or one.
  const int64_t probe_max_count =
      std::max<int64_t>({1, spec.probe().seeds_size(), spec.probe().permutations()});
  absl::flat_hash_set<std::string> allowed_checked;  // metric names already accepted
  for (int i = 0; i < chunk.stats_size(); ++i) {
    const layerflow::v1::MetricStat& stat = chunk.stats(i);
    const std::string field = absl::StrCat("chunk.stats[", i, "]");
    if (!allowed_checked.contains(stat.metric())) {
      bool ok = false;
      if (probe) {
        ok = IsProbeRow(stat.metric());
      } else {
        for (const std::string& analysis : spec.analyses()) {
          ok = ok || (catalog::IsSpectrum(analysis)
                          ? IsSpectrumRow(stat.metric(), analysis)
                          : catalog::IsRowOfLayerMetric(stat.metric(), analysis));
        }
      }
      if (!ok) {
        return Invalid(
            field + ".metric",
            absl::StrCat(
                "'", stat.metric(), "' is not a result of job ", job.job_id(),
                probe
                    ? " (a PROBE job: probe_* and cka_example_* rows)"
                    : absl::StrCat(" (its analyses: ", absl::StrJoin(spec.analyses(), ", "), ")")));
      }
      allowed_checked.insert(stat.metric());
    }
    if (stat.layer() > max_layer) {
      return Invalid(field + ".layer", absl::StrCat(stat.layer(), " is outside [0, ", max_layer,
                                                    "] for model '", spec.model(), "'"));
    }
    if (stat.has_layer_b() && stat.layer_b() > max_layer) {
      return Invalid(field + ".layer_b", absl::StrCat(stat.layer_b(), " is outside [0, ", max_layer,
                                                      "] for model '", spec.model(), "'"));
    }
    if (!probe && stat.has_position() && stat.position() >= spec.context_length()) {
      return Invalid(field + ".position",
                     absl::StrCat(stat.position(), " is outside [0, ", spec.context_length(),
                                  ") (the job's context_length)"));
    }
    if (probe && stat.count() > probe_max_count) {
      return Invalid(field + ".count", absl::StrCat(stat.count(), " values, but a PROBE job of ",
                                                    spec.probe().seeds_size(), " seeds and ",
                                                    spec.probe().permutations(),
                                                    " permutations has at most ", probe_max_count));
    }
    if (!probe && stat.count() > chunk_prompts) {
      return Invalid(field + ".count",
                     absl::StrCat(stat.count(), " prompts, but chunk ", chunk.sequence(),
                                  " of job ", job.job_id(), " has ", chunk_prompts));
    }
  }
  if (!probe && chunk.prompt_tokens_size() != 0 && chunk.prompt_tokens_size() != chunk_prompts) {
    return Invalid(
        "chunk.prompt_tokens",
        absl::StrCat(chunk.prompt_tokens_size(), " entries, but chunk ", chunk.sequence(),
                     " of job ", job.job_id(), " has ", chunk_prompts, " prompts"));
  }
  return absl::OkStatus();
}

absl::Status ValidateResultChunk(const layerflow::v1::ResultChunk& chunk) {
  if (chunk.job_id().empty()) return Invalid("chunk.job_id", "required");
  if (chunk.lease_id().empty()) return Invalid("chunk.lease_id", "required");
  if (absl::Status s =
          CheckSize("chunk.job_id", chunk.job_id().size(), limits::kMaxIdBytes, "bytes");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckSize("chunk.lease_id", chunk.lease_id().size(), limits::kMaxIdBytes, "bytes");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckSize("chunk.stats", chunk.stats_size(), limits::kMaxStatsPerChunk, "entries");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckSize("chunk.prompt_tokens", chunk.prompt_tokens_size(), 4096, "entries");
      !s.ok()) {
    return s;
  }
  if (chunk.sequence() < 0) {
    return Invalid("chunk.sequence", absl::StrCat(chunk.sequence(), " is negative"));
  }
  if (absl::Status s = CheckSize("chunk.phase_times", chunk.phase_times_size(), 8, "entries");
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < chunk.phase_times_size(); ++i) {
    const layerflow::v1::PhaseTime& t = chunk.phase_times(i);
    const std::string field = absl::StrCat("chunk.phase_times[", i, "]");
    if (t.phase().empty()) return Invalid(field + ".phase", "empty");
    if (absl::Status s = CheckSize(field + ".phase", t.phase().size(), 32, "bytes"); !s.ok()) {
      return s;
    }
    if (!std::isfinite(t.seconds()) || t.seconds() < 0) {
      return Invalid(field + ".seconds", absl::StrCat(t.seconds(),
                                                      " is not a finite, "
                                                      "non-negative time"));
    }
    if (t.count() < 0) return Invalid(field + ".count", absl::StrCat(t.count(), " is negative"));
  }
  absl::flat_hash_set<std::pair<std::string, std::string>> seen;
  for (int i = 0; i < chunk.stats_size(); ++i) {
    const layerflow::v1::MetricStat& stat = chunk.stats(i);
    const std::string field = absl::StrCat("chunk.stats[", i, "]");
    if (stat.metric().empty()) return Invalid(field + ".metric", "empty");
    if (absl::Status s =
            CheckSize(field + ".metric", stat.metric().size(), limits::kMaxShortNameBytes, "bytes");
        !s.ok()) {
      return s;
    }
    if (stat.layer() < 0) {
      return Invalid(field + ".layer", absl::StrCat(stat.layer(), " is negative"));
    }
    if (stat.count() < 1) {
      return Invalid(field + ".count", absl::StrCat(stat.count(), " is not positive"));
    }
    if (!std::isfinite(stat.sum())) return Invalid(field + ".sum", "not finite");
    if (!std::isfinite(stat.sum_sq()) || stat.sum_sq() < 0) {
      return Invalid(field + ".sum_sq", "not a finite non-negative number");
    }
    // Optional key fields: absent = not applicable, present = >= 0.
    const std::pair<const char*, std::optional<int32_t>> keys[] = {
        {"layer_b", stat.has_layer_b() ? std::optional<int32_t>(stat.layer_b()) : std::nullopt},
        {"head", stat.has_head() ? std::optional<int32_t>(stat.head()) : std::nullopt},
        {"position", stat.has_position() ? std::optional<int32_t>(stat.position()) : std::nullopt}};
    std::string where = absl::StrCat(" at layer ", stat.layer());
    for (const auto& [name, value] : keys) {
      if (!value.has_value()) continue;
      if (*value < 0) {
        return Invalid(absl::StrCat(field, ".", name), absl::StrCat(*value, " is negative"));
      }
      absl::StrAppend(&where, " ", name, " ", *value);
    }
    if (!seen.emplace(stat.metric(), where).second) {
      return Invalid(field, absl::StrCat("duplicate metric '", stat.metric(), "'", where));
    }
  }
  for (int i = 0; i < chunk.prompt_tokens_size(); ++i) {
    if (chunk.prompt_tokens(i) < 0) {
      return Invalid(absl::StrCat("chunk.prompt_tokens[", i, "]"),
                     absl::StrCat(chunk.prompt_tokens(i), " is negative"));
    }
  }
  return absl::OkStatus();
}

}  // namespace layerflow::server

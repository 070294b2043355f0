#include "server/spec/sweep_spec.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "catalog/analyses.h"
#include "catalog/chunks.h"
#include "catalog/datasets.h"
#include "catalog/defaults.h"
#include "catalog/dtypes.h"
#include "catalog/layers.h"
#include "catalog/model_config.h"
#include "catalog/train.h"
#include "common/api_limits.h"
#include "common/status_macros.h"

namespace layerflow::server {
namespace {

using ::layerflow::catalog::AnalysisList;
using ::layerflow::catalog::TrainedModelName;
using ::layerflow::catalog::CheckContextFits;
using ::layerflow::catalog::ChunkCount;
using ::layerflow::catalog::DatasetHasClasses;
using ::layerflow::catalog::DtypeList;
using ::layerflow::catalog::FeatureDtypeList;
using ::layerflow::catalog::FindModelPreset;
using ::layerflow::catalog::InitScheme;
using ::layerflow::catalog::IsAnalysis;
using ::layerflow::catalog::IsDtype;
using ::layerflow::catalog::IsFeatureDtype;
using ::layerflow::catalog::IsJobDataset;
using ::layerflow::catalog::JobDatasetList;
using ::layerflow::catalog::kDefaultAnalyses;
using ::layerflow::catalog::kDefaultContextLength;
using ::layerflow::catalog::kDefaultDataset;
using ::layerflow::catalog::kDefaultDtype;
using ::layerflow::catalog::kDefaultFeatureDtype;
using ::layerflow::catalog::kDefaultInitScheme;
using ::layerflow::catalog::kDefaultNumClasses;
using ::layerflow::catalog::kDefaultNumPrompts;
using ::layerflow::catalog::kDefaultProbeEpochs;
using ::layerflow::catalog::kDefaultProbeLr;
using ::layerflow::catalog::kDefaultProbePermutations;
using ::layerflow::catalog::kDefaultProbeSeeds;
using ::layerflow::catalog::kDefaultProbeTrainFraction;
using ::layerflow::catalog::kDefaultProbeValFraction;
using ::layerflow::catalog::kDefaultProbeWeightDecay;
using ::layerflow::catalog::kDefaultPromptsPerChunk;
using ::layerflow::catalog::kDefaultSeed;
using ::layerflow::catalog::kJobDatasetNames;
using ::layerflow::catalog::ParseInitScheme;
using ::layerflow::v1::DatasetSpec;
using ::layerflow::v1::JobSpec;
using ::layerflow::v1::SweepSpec;

constexpr int kMaxNameLength = 64;
constexpr int32_t kMinContextLength = 16;
constexpr int32_t kMaxContextLength = 65536;
constexpr int32_t kMinNumClasses = 2;
constexpr int32_t kMaxNumClasses = 1000;
constexpr int32_t kMaxNumPrompts = 100000;
constexpr int32_t kMaxPromptsPerChunk = 4096;

constexpr int32_t kMaxProbeEpochs = 1000000;
// Each permutation reruns the whole probe pipeline: 1000 is a 1001x job.
constexpr int32_t kMaxProbePermutations = 1000;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

std::string Indexed(absl::string_view field, int i) { return absl::StrCat(field, "[", i, "]"); }

// The data sets whose prompts carry a gold class (what a probe can use),
// ", "-joined.
std::string ProbeableDatasets() {
  std::vector<std::string> names;
  for (std::string_view name : kJobDatasetNames) {
    if (DatasetHasClasses(name)) names.emplace_back(name);
  }
  return absl::StrJoin(names, ", ");
}

// OK when value is in [lo, hi], or is 0 and 0 stands for a default (`zero`
// says which, e.g. "0 means 1000"); else INVALID_ARGUMENT "<value> is
// outside [lo, hi] (<zero>)" for `field`.
absl::Status CheckInRange(absl::string_view field, int64_t value, int64_t lo, int64_t hi,
                          absl::string_view zero = "") {
  if ((value >= lo && value <= hi) || (value == 0 && !zero.empty())) {
    return absl::OkStatus();
  }
  return Invalid(field, absl::StrCat(value, " is outside [", lo, ", ", hi, "]",
                                     zero.empty() ? "" : absl::StrCat(" (", zero, ")")));
}

bool ValidNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Rejects a repeated value on one axis: a duplicate would expand to two
// identical jobs, which is never what the user meant.
template <typename Container, typename KeyFn>
absl::Status CheckNoDuplicates(absl::string_view field, const Container& items, KeyFn key) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < static_cast<int>(items.size()); ++i) {
    std::string k = key(items[i]);
    if (!seen.insert(k).second) {
      return Invalid(Indexed(field, i), absl::StrCat("duplicate value ", k));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateName(const std::string& name) {
  if (name.empty()) return Invalid("spec.name", "required");
  if (name.size() > kMaxNameLength) {
    return Invalid("spec.name", absl::StrCat("longer than ", kMaxNameLength, " characters"));
  }
  for (char c : name) {
    if (!ValidNameChar(c)) {
      return Invalid("spec.name", "may contain only letters, digits, '_', '.' and '-'");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDataset(const DatasetSpec& dataset, int i) {
  const std::string field = Indexed("spec.datasets", i);
  if (!IsJobDataset(dataset.name())) {
    return Invalid(absl::StrCat(field, ".name"),
                   absl::StrCat("unknown data set '", dataset.name(),
                                "'; known data sets: ", JobDatasetList()));
  }
  // A file on the workers, named relative to their roots: the coordinator
  // cannot read it, only keep it from naming anything outside them.
  const std::string path_field = absl::StrCat(field, ".path");
  if (catalog::DatasetMayReadFile(dataset.name())) {
    if (dataset.path().empty() && catalog::DatasetReadsFile(dataset.name())) {
      return Invalid(path_field, absl::StrCat("the ", dataset.name(),
                                              " data set needs a file (relative to the "
                                              "workers' model roots)"));
    }
    // (mdqa without a file: the synthetic generator.)
    if (!dataset.path().empty() && dataset.path().front() == '/') {
      return Invalid(path_field, absl::StrCat("'", dataset.path(),
                                              "' is absolute; name the file relative to the "
                                              "workers' model roots"));
    }
    for (absl::string_view part : absl::StrSplit(dataset.path(), '/')) {
      if (part == "..") {
        return Invalid(path_field, absl::StrCat("'", dataset.path(), "' climbs out with '..'"));
      }
    }
    if (!dataset.field().empty() && !catalog::DatasetReadsFile(dataset.name())) {
      return Invalid(absl::StrCat(field, ".field"),
                     absl::StrCat("only the text data set has a field; '", dataset.name(),
                                  "' records have their own keys (docs/datasets.md)"));
    }
  } else if (!dataset.path().empty() || !dataset.field().empty()) {
    return Invalid(dataset.path().empty() ? absl::StrCat(field, ".field") : path_field,
                   absl::StrCat("only the text and mdqa data sets read a file; '", dataset.name(),
                                "' is generated"));
  }
  return CheckInRange(absl::StrCat(field, ".num_classes"), dataset.num_classes(), kMinNumClasses,
                      kMaxNumClasses, absl::StrCat("0 means ", kDefaultNumClasses));
}

std::string Quoted(const std::string& s) { return absl::StrCat("'", s, "'"); }

// spec.layers: no entry twice as written, and every entry a point of every
// preset of the sweep (a checkpoint's depth is only known to the workers,
// which resolve the list again and fail the job naming `layers`).
absl::Status ValidateLayers(const SweepSpec& spec) {
  if (absl::Status s = CheckNoDuplicates("spec.layers", spec.layers(),
                                         [](int32_t v) { return absl::StrCat(v); });
      !s.ok()) {
    return s;
  }
  if (spec.layers().empty()) return absl::OkStatus();
  const std::vector<int32_t> layers(spec.layers().begin(), spec.layers().end());
  for (int i = 0; i < spec.models_size(); ++i) {
    absl::StatusOr<catalog::ModelPreset> preset = FindModelPreset(spec.models(i));
    if (!preset.ok()) continue;  // a checkpoint
    absl::StatusOr<std::vector<int32_t>> points = catalog::ResolveLayers(
        layers, preset->config.num_layers(), "spec.layers",
        absl::StrCat(Indexed("spec.models", i), " ", Quoted(spec.models(i))));
    if (!points.ok()) return points.status();
  }
  return absl::OkStatus();
}

// spec.probe (ProbeSpec): zero fields mean the defaults, so only what the
// user set is range-checked. `effective` is the spec with defaults applied
// (the data sets the jobs will run).
absl::Status ValidateProbe(const layerflow::v1::ProbeSpec& probe, const SweepSpec& effective) {
  if (probe.skip_training()) {
    return Invalid("spec.probe.skip_training",
                   "set by the coordinator only (for example_cka without a probe)");
  }
  if (probe.task().empty()) {
    return Invalid("spec.probe.task", "required (the data set to probe, e.g. kvpr)");
  }
  if (!DatasetHasClasses(probe.task())) {
    return Invalid(
        "spec.probe.task",
        absl::StrCat("data set '", probe.task(),
                     "' has no classes to probe; data sets with classes: ", ProbeableDatasets()));
  }
  bool found = false;
  for (int d = 0; d < effective.datasets_size(); ++d) {
    const DatasetSpec& dataset = effective.datasets(d);
    if (dataset.name() != probe.task()) continue;
    found = true;
    if (probe.classes() != 0 && probe.classes() != dataset.num_classes()) {
      return Invalid(
          "spec.probe.classes",
          absl::StrCat(probe.classes(), " does not match spec.datasets[", d, "].num_classes ",
                       dataset.num_classes(), " (0 means the data set's)"));
    }
  }
  if (!found) {
    std::vector<std::string> names;
    for (const DatasetSpec& d : effective.datasets()) names.push_back(d.name());
    return Invalid("spec.probe.task",
                   absl::StrCat("'", probe.task(), "' is not one of the sweep's data sets (",
                                absl::StrJoin(names, ", "), ")"));
  }
  if (probe.classes() < 0) {
    return Invalid("spec.probe.classes", absl::StrCat(probe.classes(), " is negative"));
  }
  for (int i = 0; i < probe.seeds_size(); ++i) {
    if (probe.seeds(i) < 0) {
      return Invalid(Indexed("spec.probe.seeds", i), absl::StrCat(probe.seeds(i), " is negative"));
    }
  }
  if (absl::Status s = CheckNoDuplicates("spec.probe.seeds", probe.seeds(),
                                         [](int64_t v) { return absl::StrCat(v); });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckInRange("spec.probe.epochs", probe.epochs(), 1, kMaxProbeEpochs,
                                    absl::StrCat("0 means ", kDefaultProbeEpochs));
      !s.ok()) {
    return s;
  }
  if (!std::isfinite(probe.lr()) || probe.lr() < 0) {
    return Invalid("spec.probe.lr", absl::StrCat(probe.lr(), " is not a positive number (0 means ",
                                                 kDefaultProbeLr, ")"));
  }
  if (!std::isfinite(probe.weight_decay()) || probe.weight_decay() < 0) {
    return Invalid("spec.probe.weight_decay",
                   absl::StrCat(probe.weight_decay(), " is not a positive number (0 means ",
                                kDefaultProbeWeightDecay, ")"));
  }
  if (!std::isfinite(probe.train_fraction()) || probe.train_fraction() < 0 ||
      probe.train_fraction() >= 1) {
    return Invalid("spec.probe.train_fraction",
                   absl::StrCat(probe.train_fraction(), " is outside (0, 1) (0 means ",
                                kDefaultProbeTrainFraction, ")"));
  }
  if (!std::isfinite(probe.val_fraction()) || probe.val_fraction() < 0 ||
      probe.val_fraction() >= 1) {
    return Invalid("spec.probe.val_fraction",
                   absl::StrCat(probe.val_fraction(), " is outside (0, 1) (0 means ",
                                kDefaultProbeValFraction, ")"));
  }
  {
    // The test set is what is left: the two shares as they will run must
    // leave some. The field named is the one the user set (val_fraction
    // when both are): train_fraction 0.8 alone was the old two-way default.
    const double train =
        probe.train_fraction() == 0 ? kDefaultProbeTrainFraction : probe.train_fraction();
    const double val = probe.val_fraction() == 0 ? kDefaultProbeValFraction : probe.val_fraction();
    if (!(train + val < 1)) {
      return Invalid(
          probe.val_fraction() == 0 && probe.train_fraction() != 0 ? "spec.probe.train_fraction"
                                                                   : "spec.probe.val_fraction",
          absl::StrCat("train_fraction ", train, probe.train_fraction() == 0 ? " (default)" : "",
                       " + val_fraction ", val, probe.val_fraction() == 0 ? " (default)" : "",
                       " = ", train + val, " leaves no test set; the sum must be below 1"));
    }
  }
  if (absl::Status s =
          CheckInRange("spec.probe.permutations", probe.permutations(), 1, kMaxProbePermutations,
                       absl::StrCat("0 means ", kDefaultProbePermutations));
      !s.ok()) {
    return s;
  }
  if (!probe.feature_dtype().empty() && !IsFeatureDtype(probe.feature_dtype())) {
    return Invalid("spec.probe.feature_dtype",
                   absl::StrCat("unknown feature dtype '", probe.feature_dtype(),
                                "'; known: ", FeatureDtypeList()));
  }
  return absl::OkStatus();
}

// The caps of common/api_limits.h on every string and repeated field,
// checked first: nothing below looks at an oversized value.
absl::Status ValidateSizes(const SweepSpec& spec) {
  auto length = [](const std::string& field, const std::string& value,
                   int64_t max) -> absl::Status {
    if (static_cast<int64_t>(value.size()) <= max) return absl::OkStatus();
    return Invalid(field, absl::StrCat(value.size(), " bytes, more than the limit of ", max));
  };
  auto count = [](absl::string_view field, int n) -> absl::Status {
    if (n <= limits::kMaxAxisValues) return absl::OkStatus();
    return Invalid(field,
                   absl::StrCat(n, " entries, more than the limit of ", limits::kMaxAxisValues));
  };
  LF_RETURN_IF_ERROR(count("spec.models", spec.models_size()));
  LF_RETURN_IF_ERROR(count("spec.init_schemes", spec.init_schemes_size()));
  LF_RETURN_IF_ERROR(count("spec.seeds", spec.seeds_size()));
  LF_RETURN_IF_ERROR(count("spec.datasets", spec.datasets_size()));
  LF_RETURN_IF_ERROR(count("spec.context_lengths", spec.context_lengths_size()));
  LF_RETURN_IF_ERROR(count("spec.analyses", spec.analyses_size()));
  LF_RETURN_IF_ERROR(count("spec.probe.seeds", spec.probe().seeds_size()));
  LF_RETURN_IF_ERROR(count("spec.layers", spec.layers_size()));
  for (int i = 0; i < spec.models_size(); ++i) {
    LF_RETURN_IF_ERROR(length(Indexed("spec.models", i), spec.models(i), limits::kMaxModelBytes));
  }
  for (int i = 0; i < spec.init_schemes_size(); ++i) {
    LF_RETURN_IF_ERROR(
        length(Indexed("spec.init_schemes", i), spec.init_schemes(i), limits::kMaxShortNameBytes));
  }
  for (int i = 0; i < spec.datasets_size(); ++i) {
    LF_RETURN_IF_ERROR(length(absl::StrCat(Indexed("spec.datasets", i), ".name"),
                              spec.datasets(i).name(), limits::kMaxShortNameBytes));
    LF_RETURN_IF_ERROR(length(absl::StrCat(Indexed("spec.datasets", i), ".path"),
                              spec.datasets(i).path(), limits::kMaxModelBytes));
    LF_RETURN_IF_ERROR(length(absl::StrCat(Indexed("spec.datasets", i), ".field"),
                              spec.datasets(i).field(), limits::kMaxShortNameBytes));
  }
  for (int i = 0; i < spec.analyses_size(); ++i) {
    LF_RETURN_IF_ERROR(
        length(Indexed("spec.analyses", i), spec.analyses(i), limits::kMaxShortNameBytes));
  }
  LF_RETURN_IF_ERROR(length("spec.dtype", spec.dtype(), limits::kMaxShortNameBytes));
  LF_RETURN_IF_ERROR(length("spec.probe.task", spec.probe().task(), limits::kMaxShortNameBytes));
  LF_RETURN_IF_ERROR(
      length("spec.probe.feature_dtype", spec.probe().feature_dtype(), limits::kMaxShortNameBytes));
  return absl::OkStatus();
}

// A TRAIN sweep (spec.train set): models name architectures, the extract
// axes do not apply, and the train fields are range-checked as submitted.
absl::Status ValidateTrainSweep(const SweepSpec& spec) {
  auto unused = [](absl::string_view field) {
    return Invalid(field,
                   "does not apply to a TRAIN sweep (spec.train is set; the task "
                   "and its sizes are train fields)");
  };
  if (spec.has_probe()) return unused("spec.probe");
  if (spec.example_cka()) return unused("spec.example_cka");
  if (spec.analyses().empty()) {
    // The extract fields shape the trained models' analyses, so they need
    // some.
    auto no_analyses = [](absl::string_view field) {
      return Invalid(field,
                     "applies to a TRAIN sweep only with spec.analyses (the analyses of "
                     "each trained model and its init); the task and its sizes are train "
                     "fields");
    };
    if (!spec.datasets().empty()) return no_analyses("spec.datasets");
    if (!spec.context_lengths().empty()) return no_analyses("spec.context_lengths");
    if (spec.num_prompts() != 0) return no_analyses("spec.num_prompts");
    if (spec.prompts_per_chunk() != 0) return no_analyses("spec.prompts_per_chunk");
    if (spec.batch_prompts() != 0) return no_analyses("spec.batch_prompts");
    if (!spec.layers().empty()) return no_analyses("spec.layers");
  }
  if (!spec.dtype().empty() && spec.dtype() != "fp32") {
    return Invalid("spec.dtype", absl::StrCat("'", spec.dtype(),
                                              "': TRAIN jobs train in fp32 (leave dtype unset)"));
  }
  const catalog::TrainSettings settings = TrainSettingsOf(spec.train());
  if (absl::Status s = catalog::ValidateTrainSettings(settings); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec.train.", s.message()));
  }
  for (int i = 0; i < spec.models_size(); ++i) {
    if (!catalog::IsTrainArchitecture(spec.models(i))) {
      return Invalid(Indexed("spec.models", i),
                     absl::StrCat("'", spec.models(i),
                                  "' is not an architecture; a TRAIN sweep names the "
                                  "architectures to train: gpt_neox, gpt_neo, mamba, mamba2"));
    }
    if (absl::StatusOr<catalog::ModelConfig> config =
            catalog::TrainModelConfig(spec.models(i), settings);
        !config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("spec.train.", config.status().message(),
                                                     " (for ", Indexed("spec.models", i), " '",
                                                     spec.models(i), "')"));
    }
  }
  for (int i = 0; i < spec.init_schemes_size(); ++i) {
    if (auto scheme = ParseInitScheme(spec.init_schemes(i)); !scheme.ok()) {
      return Invalid(Indexed("spec.init_schemes", i), scheme.status().message());
    }
  }
  for (int i = 0; i < spec.seeds_size(); ++i) {
    if (spec.seeds(i) < 0) {
      return Invalid(Indexed("spec.seeds", i), absl::StrCat(spec.seeds(i), " is negative"));
    }
  }
  auto same = [](const std::string& s) { return Quoted(s); };
  LF_RETURN_IF_ERROR(CheckNoDuplicates("spec.models", spec.models(), same));
  LF_RETURN_IF_ERROR(CheckNoDuplicates("spec.init_schemes", spec.init_schemes(), same));
  LF_RETURN_IF_ERROR(
      CheckNoDuplicates("spec.seeds", spec.seeds(), [](int64_t v) { return absl::StrCat(v); }));
  if (!spec.analyses().empty()) {
    // The analyses' fields are those of an EXTRACT sweep on a checkpoint,
    // checked as one (same field names in the messages).
    LF_RETURN_IF_ERROR(ValidateSweepSpec(TrainedAnalysisView(spec)));
  }
  if (const int64_t jobs = CountSweepJobs(spec); jobs > kMaxJobsPerSweep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec: sweep expands to ", jobs, " jobs, more than the limit ", kMaxJobsPerSweep));
  }
  return absl::OkStatus();
}

}  // namespace

SweepSpec TrainedAnalysisView(const SweepSpec& spec) {
  const catalog::TrainSettings settings =
      catalog::WithTrainDefaults(TrainSettingsOf(spec.train()));
  SweepSpec view = spec;
  view.clear_train();
  view.clear_models();
  // A checkpoint name (it has a '/'); the coordinator puts each TRAIN job's
  // id in it (TrainedModelName).
  view.add_models(TrainedModelName("sw-0-0", /*init=*/false));
  view.clear_init_schemes();  // a checkpoint brings its own weights
  if (view.datasets().empty()) view.add_datasets()->set_name(settings.task);
  if (view.context_lengths().empty()) view.add_context_lengths(settings.length);
  return view;
}

absl::Status ValidateSweepSpec(const SweepSpec& spec) {
  if (absl::Status s = ValidateSizes(spec); !s.ok()) return s;
  if (absl::Status s = ValidateName(spec.name()); !s.ok()) return s;

  if (spec.models().empty()) {
    return Invalid("spec.models", "at least one model is required");
  }
  if (spec.has_train()) return ValidateTrainSweep(spec);
  int first_checkpoint = -1;  // index into spec.models
  for (int i = 0; i < spec.models_size(); ++i) {
    // A name with a '/' is a checkpoint: a folder or an ORG/NAME repo id that
    // each worker resolves in its own file system or Hugging Face cache (the
    // job fails naming it where it is missing). Anything else is a preset.
    if (spec.models(i).find('/') != std::string::npos) {
      if (first_checkpoint < 0) first_checkpoint = i;
      continue;
    }
    if (auto preset = FindModelPreset(spec.models(i)); !preset.ok()) {
      // The lookup says NOT_FOUND; for a request it is a bad argument.
      return Invalid(Indexed("spec.models", i),
                     absl::StrCat(preset.status().message(),
                                  " (or a checkpoint: a folder or an ORG/NAME repo id)"));
    }
  }
  for (int i = 0; i < spec.init_schemes_size(); ++i) {
    auto scheme = ParseInitScheme(spec.init_schemes(i));
    if (!scheme.ok()) {
      return Invalid(Indexed("spec.init_schemes", i), scheme.status().message());
    }
    // Every model runs every scheme, and a checkpoint brings its own
    // weights: caught here rather than failing those jobs on a worker.
    if (first_checkpoint >= 0 && scheme->kind != InitScheme::Kind::kReference) {
      return Invalid(Indexed("spec.init_schemes", i),
                     absl::StrCat("'", spec.init_schemes(i), "' applies to presets only; ",
                                  Indexed("spec.models", first_checkpoint), " ('",
                                  spec.models(first_checkpoint),
                                  "') is a checkpoint, which brings its own weights "
                                  "(init schemes other than reference need a sweep of "
                                  "presets)"));
    }
  }
  for (int i = 0; i < spec.seeds_size(); ++i) {
    if (spec.seeds(i) < 0) {
      return Invalid(Indexed("spec.seeds", i), absl::StrCat(spec.seeds(i), " is negative"));
    }
  }
  for (int i = 0; i < spec.datasets_size(); ++i) {
    if (absl::Status s = ValidateDataset(spec.datasets(i), i); !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < spec.context_lengths_size(); ++i) {
    if (absl::Status s = CheckInRange(Indexed("spec.context_lengths", i), spec.context_lengths(i),
                                      kMinContextLength, kMaxContextLength);
        !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < spec.analyses_size(); ++i) {
    if (!IsAnalysis(spec.analyses(i))) {
      return Invalid(Indexed("spec.analyses", i),
                     absl::StrCat("unknown analysis '", spec.analyses(i),
                                  "'; known analyses: ", AnalysisList()));
    }
  }
  if (absl::Status s = CheckInRange("spec.num_prompts", spec.num_prompts(), 1, kMaxNumPrompts,
                                    absl::StrCat("0 means ", kDefaultNumPrompts));
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckInRange("spec.prompts_per_chunk", spec.prompts_per_chunk(), 1, kMaxPromptsPerChunk,
                       absl::StrCat("0 means ", kDefaultPromptsPerChunk));
      !s.ok()) {
    return s;
  }
  // 0 (as many prompts per batch as fit) is inside the range.
  if (absl::Status s =
          CheckInRange("spec.batch_prompts", spec.batch_prompts(), 0, kMaxPromptsPerChunk);
      !s.ok()) {
    return s;
  }
  if (!spec.dtype().empty() && !IsDtype(spec.dtype())) {
    return Invalid("spec.dtype",
                   absl::StrCat("unknown dtype '", spec.dtype(), "'; known dtypes: ", DtypeList()));
  }

  // Duplicates on any axis. Data sets compare after defaulting num_classes,
  // so {kvpr, 0} and {kvpr, 11} are the same point.
  auto same = [](const std::string& s) { return Quoted(s); };
  auto num = [](int64_t v) { return absl::StrCat(v); };
  if (absl::Status s = CheckNoDuplicates("spec.models", spec.models(), same); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckNoDuplicates("spec.init_schemes", spec.init_schemes(), same); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckNoDuplicates("spec.seeds", spec.seeds(), num); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckNoDuplicates(
          "spec.datasets", spec.datasets(),
          [](const DatasetSpec& d) {
            return absl::StrCat("{", d.name(), ", ",
                                d.num_classes() == 0 ? kDefaultNumClasses : d.num_classes(), "}");
          });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckNoDuplicates("spec.context_lengths", spec.context_lengths(), num);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckNoDuplicates("spec.analyses", spec.analyses(), same); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateLayers(spec); !s.ok()) return s;

  // A KVPR prompt must hold at least num_classes pairs (one per gold
  // position), an MDQA prompt num_classes documents, so a context length too
  // short for a data set is caught here, at submit, instead of failing every
  // job on a worker. Checked for the byte tokenizer (a preset's;
  // catalog::CheckContextFits); a checkpoint's own tokenizer is only on the
  // workers, which check every prompt again.
  // Checked against the axes as they will run, defaults included.
  const SweepSpec effective = WithDefaults(spec);
  if (spec.has_probe()) {
    if (absl::Status s = ValidateProbe(spec.probe(), effective); !s.ok()) {
      return s;
    }
  }
  for (int d = 0; d < effective.datasets_size(); ++d) {
    const int32_t classes = effective.datasets(d).num_classes();
    const std::string& name = effective.datasets(d).name();
    // A user's file is only on the workers: they check its prompts' fit.
    if (!effective.datasets(d).path().empty()) continue;
    for (int c = 0; c < effective.context_lengths_size(); ++c) {
      const absl::Status fits = CheckContextFits(name, classes, effective.context_lengths(c));
      if (!fits.ok()) {
        const std::string field = spec.context_lengths().empty()
                                      ? std::string("spec.context_lengths (default)")
                                      : Indexed("spec.context_lengths", c);
        return Invalid(field, absl::StrCat("too short for spec.datasets[", d, "] (", name, ", ",
                                           classes, " classes): ", fits.message()));
      }
    }
  }

  if (const int64_t jobs = CountSweepJobs(spec); jobs > kMaxJobsPerSweep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec: sweep expands to ", jobs, " jobs, more than the limit ", kMaxJobsPerSweep));
  }
  return absl::OkStatus();
}

SweepSpec WithDefaults(SweepSpec spec) {
  if (spec.init_schemes().empty()) spec.add_init_schemes(std::string(kDefaultInitScheme));
  if (spec.seeds().empty()) spec.add_seeds(kDefaultSeed);
  if (spec.has_train()) {
    // A TRAIN job's task is its train fields; the extract axes are those of
    // the trained models' analyses, set only when there are some.
    *spec.mutable_train() = TrainSpecOf(catalog::WithTrainDefaults(TrainSettingsOf(spec.train())));
    if (spec.dtype().empty()) spec.set_dtype(std::string(kDefaultDtype));
    if (spec.analyses().empty()) return spec;
    SweepSpec view = WithDefaults(TrainedAnalysisView(spec));
    *spec.mutable_datasets() = view.datasets();
    *spec.mutable_context_lengths() = view.context_lengths();
    spec.set_num_prompts(view.num_prompts());
    spec.set_prompts_per_chunk(view.prompts_per_chunk());
    return spec;
  }
  if (spec.datasets().empty()) spec.add_datasets()->set_name(std::string(kDefaultDataset));
  for (DatasetSpec& dataset : *spec.mutable_datasets()) {
    if (dataset.num_classes() == 0) dataset.set_num_classes(kDefaultNumClasses);
  }
  if (spec.context_lengths().empty()) {
    spec.add_context_lengths(kDefaultContextLength);
  }
  if (spec.analyses().empty()) {
    for (std::string_view a : kDefaultAnalyses) {
      spec.add_analyses(std::string(a));
    }
  }
  if (spec.num_prompts() == 0) spec.set_num_prompts(kDefaultNumPrompts);
  if (spec.prompts_per_chunk() == 0) {
    spec.set_prompts_per_chunk(kDefaultPromptsPerChunk);
  }
  if (spec.dtype().empty()) spec.set_dtype(std::string(kDefaultDtype));
  if (spec.has_probe()) {
    layerflow::v1::ProbeSpec& probe = *spec.mutable_probe();
    if (probe.seeds().empty()) {
      for (int64_t seed : kDefaultProbeSeeds) probe.add_seeds(seed);
    }
    if (probe.epochs() == 0) probe.set_epochs(kDefaultProbeEpochs);
    if (probe.lr() == 0) probe.set_lr(kDefaultProbeLr);
    if (probe.weight_decay() == 0) probe.set_weight_decay(kDefaultProbeWeightDecay);
    if (probe.train_fraction() == 0) {
      probe.set_train_fraction(kDefaultProbeTrainFraction);
    }
    if (probe.val_fraction() == 0) probe.set_val_fraction(kDefaultProbeValFraction);
    if (probe.permutations() == 0) probe.set_permutations(kDefaultProbePermutations);
    if (probe.feature_dtype().empty()) {
      probe.set_feature_dtype(std::string(kDefaultFeatureDtype));
    }
    if (probe.classes() == 0) {
      // The task's num_classes when its data sets agree; otherwise each job
      // takes its own data set's (ExpandSweepJobs).
      int32_t classes = 0;
      bool agree = true;
      for (const DatasetSpec& dataset : spec.datasets()) {
        if (dataset.name() != probe.task()) continue;
        if (classes != 0 && classes != dataset.num_classes()) agree = false;
        classes = dataset.num_classes();
      }
      if (agree) probe.set_classes(classes);
    }
  }
  return spec;
}

int64_t CountSweepJobs(const SweepSpec& spec) {
  auto axis = [](int size) { return static_cast<int64_t>(size == 0 ? 1 : size); };
  if (spec.has_train()) {
    const int64_t train_jobs =
        axis(spec.models_size()) * axis(spec.init_schemes_size()) * axis(spec.seeds_size());
    if (spec.analyses().empty()) return train_jobs;
    // Each TRAIN job's init and trained model on every data set and length.
    return train_jobs * (1 + 2 * axis(spec.datasets_size()) * axis(spec.context_lengths_size()));
  }
  // Each factor is bounded by the message size, so the product of five
  // int-sized factors can overflow int64 only for absurd inputs; clamp early.
  int64_t total = 1;
  for (int64_t n :
       {axis(spec.models_size()), axis(spec.init_schemes_size()), axis(spec.seeds_size()),
        axis(spec.datasets_size()), axis(spec.context_lengths_size())}) {
    total *= n;
    if (total > (int64_t{1} << 40)) return total;
  }
  if (spec.example_cka()) return 2 * total;  // a follow-up job for each
  if (spec.has_probe()) {
    // One PROBE job per EXTRACT job on the probe's data set.
    int64_t probed = 0;
    if (spec.datasets().empty()) {
      probed = spec.probe().task() == kDefaultDataset ? 1 : 0;
    } else {
      for (const DatasetSpec& d : spec.datasets()) {
        if (d.name() == spec.probe().task()) ++probed;
      }
    }
    const int64_t per_dataset = total / axis(spec.datasets_size());
    total += per_dataset * probed;
  }
  return total;
}

std::vector<ExpandedJob> ExpandSweepJobs(const SweepSpec& spec) {
  std::vector<ExpandedJob> jobs;
  jobs.reserve(static_cast<size_t>(CountSweepJobs(spec)));
  if (spec.has_train()) {
    for (const std::string& model : spec.models()) {
      for (const std::string& init : spec.init_schemes()) {
        for (int64_t seed : spec.seeds()) {
          JobSpec& job = jobs.emplace_back().spec;
          job.set_kind(layerflow::v1::JOB_KIND_TRAIN);
          job.set_model(model);
          job.set_init_scheme(init);
          job.set_seed(seed);
          // Rows are labelled with the task and its sequence length.
          job.mutable_dataset()->set_name(spec.train().task());
          job.set_context_length(spec.train().length());
          job.set_dtype(spec.dtype());
          *job.mutable_train() = spec.train();
        }
      }
    }
    if (spec.analyses().empty()) return jobs;
    // After every TRAIN job, in the same order: EXTRACT jobs on its init
    // model, then on its trained model, each depending on it (a failed
    // TRAIN job fails them). Their model names carry the TRAIN job's id,
    // which only the coordinator knows: a placeholder here (ExpandedJob).
    const int train_jobs = static_cast<int>(jobs.size());
    for (int i = 0; i < train_jobs; ++i) {
      for (const bool init : {true, false}) {
        for (const DatasetSpec& dataset : spec.datasets()) {
          for (int32_t context_length : spec.context_lengths()) {
            ExpandedJob& extract = jobs.emplace_back();
            extract.depends_on = i;
            JobSpec& job = extract.spec;
            job.set_kind(layerflow::v1::JOB_KIND_EXTRACT);
            job.set_model(TrainedModelName(absl::StrCat("<job ", i, ">"), init));
            job.set_init_scheme(std::string(kDefaultInitScheme));
            job.set_seed(jobs[i].spec.seed());
            *job.mutable_dataset() = dataset;
            job.set_context_length(context_length);
            *job.mutable_analyses() = spec.analyses();
            job.set_num_prompts(spec.num_prompts());
            job.set_prompts_per_chunk(spec.prompts_per_chunk());
            job.set_batch_prompts(spec.batch_prompts());
            *job.mutable_layers() = spec.layers();
            job.set_dtype(spec.dtype());
          }
        }
      }
    }
    return jobs;
  }
  for (const std::string& model : spec.models()) {
    for (const std::string& init : spec.init_schemes()) {
      for (int64_t seed : spec.seeds()) {
        for (const DatasetSpec& dataset : spec.datasets()) {
          for (int32_t context_length : spec.context_lengths()) {
            JobSpec& job = jobs.emplace_back().spec;
            job.set_model(model);
            job.set_init_scheme(init);
            job.set_seed(seed);
            *job.mutable_dataset() = dataset;
            job.set_context_length(context_length);
            *job.mutable_analyses() = spec.analyses();
            job.set_num_prompts(spec.num_prompts());
            job.set_prompts_per_chunk(spec.prompts_per_chunk());
            job.set_batch_prompts(spec.batch_prompts());
            *job.mutable_layers() = spec.layers();
            job.set_dtype(spec.dtype());
            job.set_kind(layerflow::v1::JOB_KIND_EXTRACT);
            if (spec.has_probe() && dataset.name() == spec.probe().task()) {
              layerflow::v1::ProbeSpec& probe = *job.mutable_probe();
              probe = spec.probe();
              if (probe.classes() == 0) probe.set_classes(dataset.num_classes());
            } else if (spec.example_cka()) {
              // Features for the example-view CKA only.
              layerflow::v1::ProbeSpec& probe = *job.mutable_probe();
              probe.set_task(dataset.name());
              probe.set_skip_training(true);
            }
          }
        }
      }
    }
  }
  // PROBE jobs after every EXTRACT job, so that EXTRACT job i is the same
  // point with or without probing.
  const int extract_jobs = static_cast<int>(jobs.size());
  for (int i = 0; i < extract_jobs; ++i) {
    if (!jobs[i].spec.has_probe()) continue;
    ExpandedJob probe_job{jobs[i].spec, i};
    probe_job.spec.set_kind(layerflow::v1::JOB_KIND_PROBE);
    jobs.push_back(std::move(probe_job));
  }
  return jobs;
}

std::vector<JobSpec> ExpandSweep(const SweepSpec& spec) {
  std::vector<JobSpec> specs;
  for (ExpandedJob& job : ExpandSweepJobs(spec)) {
    specs.push_back(std::move(job.spec));
  }
  return specs;
}

int64_t ChunksTotal(const JobSpec& job) {
  if (job.kind() == layerflow::v1::JOB_KIND_PROBE) return 1;
  if (job.kind() == layerflow::v1::JOB_KIND_TRAIN) {
    return catalog::TrainChunkCount(TrainSettingsOf(job.train()));
  }
  return ChunkCount(job.num_prompts(), job.prompts_per_chunk());
}

}  // namespace layerflow::server

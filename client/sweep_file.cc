#include "client/sweep_file.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sys/stat.h>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace layerflow::client {
namespace {

// Builds errors of the form "SOURCE:LINE:COL: field 'PATH': WHAT".
class Reporter {
 public:
  explicit Reporter(absl::string_view source) : source_(source) {}

  std::string Location(const YAML::Mark& mark) const {
    // yaml-cpp marks are 0-based; editors count from 1. A null mark (-1)
    // belongs to nodes that have no position, e.g. an empty document.
    if (mark.is_null() || mark.line < 0) return std::string(source_);
    return absl::StrCat(source_, ":", mark.line + 1, ":", mark.column + 1);
  }

  absl::Status FieldError(const YAML::Node& node, absl::string_view field,
                          absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(Location(node.Mark()), ": field '", field, "': ", what));
  }

  absl::Status Error(const YAML::Mark& mark, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(Location(mark), ": ", what));
  }

 private:
  absl::string_view source_;
};

// How a node is named in "expected X, got Y" messages.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar: {
      std::string text = node.Scalar();
      if (text.size() > 40) text = text.substr(0, 37) + "...";
      return absl::StrCat("'", text, "'");
    }
    default:
      return "an undefined value";
  }
}

std::string Expected(absl::string_view what, const YAML::Node& node) {
  return absl::StrCat("expected ", what, ", got ", Describe(node));
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean 'seeds'?)" for a near miss, else the list of known keys,
// so that the user never has to open the docs to fix a typo.
std::string Suggest(absl::string_view key, const std::vector<std::string>& known) {
  std::string normalized(key);
  std::replace(normalized.begin(), normalized.end(), '-', '_');
  std::transform(normalized.begin(), normalized.end(), normalized.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  const size_t threshold = std::max<size_t>(2, normalized.size() / 3);
  const std::string* best = nullptr;
  size_t best_distance = threshold + 1;
  for (const std::string& candidate : known) {
    size_t d = EditDistance(normalized, candidate);
    // A missing prefix or suffix ("classes" for "num_classes") is a near
    // miss too, however many characters it lacks.
    if (normalized.size() >= 4 && candidate.find(normalized) != std::string::npos) {
      d = std::min<size_t>(d, 1);
    }
    if (d < best_distance) {
      best_distance = d;
      best = &candidate;
    }
  }
  if (best != nullptr) return absl::StrCat(" (did you mean '", *best, "'?)");
  return absl::StrCat(" (known fields: ", absl::StrJoin(known, ", "), ")");
}

// The scalar parsers below are strict on purpose: "8.5" or "8 prompts" is a
// mistake worth reporting, not something to round or truncate.
absl::Status ParseInteger(const Reporter& r, const YAML::Node& node, absl::string_view field,
                          int64_t min, int64_t max, int64_t* out) {
  const std::string kind = min == 0 ? "a non-negative integer" : std::string("an integer");
  if (!node.IsScalar()) return r.FieldError(node, field, Expected(kind, node));
  absl::string_view text = node.Scalar();
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || end != text.data() + text.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return r.FieldError(node, field, Expected(kind, node));
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    return r.FieldError(node, field,
                        Expected(absl::StrCat(min == 0 ? "a non-negative integer" : "an integer",
                                              " in [", min, ", ", max, "]"),
                                 node));
  }
  *out = value;
  return absl::OkStatus();
}

// A real number ("0.005", "5e-3", "1"); as strict as ParseInteger.
absl::Status ParseDouble(const Reporter& r, const YAML::Node& node, absl::string_view field,
                         double* out) {
  if (!node.IsScalar()) return r.FieldError(node, field, Expected("a number", node));
  absl::string_view text = node.Scalar();
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || end != text.data() + text.size() || ec != std::errc() ||
      !std::isfinite(value)) {
    return r.FieldError(node, field, Expected("a number", node));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status ParseString(const Reporter& r, const YAML::Node& node, absl::string_view field,
                         std::string* out) {
  if (!node.IsScalar()) return r.FieldError(node, field, Expected("a string", node));
  *out = node.Scalar();
  return absl::OkStatus();
}

// YAML 1.2 core booleans: true / false (any case).
absl::Status ParseBool(const Reporter& r, const YAML::Node& node, absl::string_view field,
                       bool* out) {
  if (node.IsScalar()) {
    const std::string text = absl::AsciiStrToLower(node.Scalar());
    if (text == "true" || text == "false") {
      *out = text == "true";
      return absl::OkStatus();
    }
  }
  return r.FieldError(node, field, Expected("true or false", node));
}

// Calls `element(node, "field[i]")` for each element of a list, or once with
// `field` itself when a single value stands where a list is expected
// ("models: pythia-70m").
absl::Status ForEachElement(
    const Reporter& r, const YAML::Node& node, absl::string_view field,
    absl::string_view element_kind, bool allow_single_map,
    const std::function<absl::Status(const YAML::Node&, const std::string&)>& element) {
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      LF_RETURN_IF_ERROR(element(node[i], absl::StrCat(field, "[", i, "]")));
    }
    return absl::OkStatus();
  }
  if (node.IsScalar() || (allow_single_map && node.IsMap())) {
    return element(node, std::string(field));
  }
  return r.FieldError(node, field,
                      Expected(absl::StrCat(element_kind, " or a list of them"), node));
}

absl::Status ParseStringList(const Reporter& r, const YAML::Node& node, absl::string_view field,
                             google::protobuf::RepeatedPtrField<std::string>* out) {
  return ForEachElement(r, node, field, "a string", /*allow_single_map=*/false,
                        [&](const YAML::Node& e, const std::string& path) {
                          return ParseString(r, e, path, out->Add());
                        });
}

template <typename Int>
absl::Status ParseIntList(const Reporter& r, const YAML::Node& node, absl::string_view field,
                          int64_t min, google::protobuf::RepeatedField<Int>* out) {
  return ForEachElement(
      r, node, field, min == 0 ? "a non-negative integer" : "an integer",
      /*allow_single_map=*/false,
      [&](const YAML::Node& e, const std::string& path) -> absl::Status {
        int64_t value = 0;
        LF_RETURN_IF_ERROR(ParseInteger(r, e, path, min, std::numeric_limits<Int>::max(), &value));
        out->Add(static_cast<Int>(value));
        return absl::OkStatus();
      });
}

// Visits the keys of a map, rejecting unknown and repeated ones.
using FieldHandler = std::function<absl::Status(const YAML::Node& value, const std::string& path)>;

absl::Status ParseMap(const Reporter& r, const YAML::Node& node, absl::string_view prefix,
                      const std::vector<std::pair<std::string, FieldHandler>>& fields) {
  std::vector<std::string> known;
  for (const auto& [name, handler] : fields) known.push_back(name);
  std::map<std::string, int> seen_at_line;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies, not references: `it->` is a proxy destroyed at the end of the
    // statement, and a reference to its members dangles (found by
    // tests/fuzz/fuzz_sweep: stack-use-after-scope on every map).
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) {
      return r.Error(key.Mark(), Expected("a field name", key));
    }
    const std::string& name = key.Scalar();
    const std::string path = prefix.empty() ? name : absl::StrCat(prefix, ".", name);
    auto field =
        std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return f.first == name; });
    if (field == fields.end()) {
      return r.Error(key.Mark(), absl::StrCat("unknown field '", path, "'", Suggest(name, known)));
    }
    // yaml-cpp keeps both entries of a repeated key; silently taking one
    // would hide an edit that does not take effect.
    auto [seen, inserted] = seen_at_line.emplace(name, key.Mark().line + 1);
    if (!inserted) {
      return r.Error(key.Mark(), absl::StrCat("field '", path, "' repeated (first set on line ",
                                              seen->second, ")"));
    }
    LF_RETURN_IF_ERROR(field->second(value, path));
  }
  return absl::OkStatus();
}

absl::Status ParseDataset(const Reporter& r, const YAML::Node& node, const std::string& path,
                          v1::DatasetSpec* out) {
  if (node.IsScalar()) return ParseString(r, node, path, out->mutable_name());
  if (!node.IsMap()) {
    return r.FieldError(
        node, path, Expected("a data set name or a map {name, num_classes, path, field}", node));
  }
  return ParseMap(
      r, node, path,
      {{"name", [&](const YAML::Node& v,
                    const std::string& p) { return ParseString(r, v, p, out->mutable_name()); }},
       {"num_classes",
        [&](const YAML::Node& v, const std::string& p) -> absl::Status {
          int64_t value = 0;
          LF_RETURN_IF_ERROR(ParseInteger(r, v, p, 0, std::numeric_limits<int32_t>::max(), &value));
          out->set_num_classes(static_cast<int32_t>(value));
          return absl::OkStatus();
        }},
       // text: the user's file on the workers, and its JSONL key.
       {"path", [&](const YAML::Node& v,
                    const std::string& p) { return ParseString(r, v, p, out->mutable_path()); }},
       {"field", [&](const YAML::Node& v, const std::string& p) {
          return ParseString(r, v, p, out->mutable_field());
        }}});
}

// `probe: {task: kvpr, classes: 11, ...}`, or just `probe: kvpr`.
absl::Status ParseProbe(const Reporter& r, const YAML::Node& node, const std::string& path,
                        v1::ProbeSpec* out) {
  if (node.IsScalar()) return ParseString(r, node, path, out->mutable_task());
  if (!node.IsMap()) {
    return r.FieldError(node, path,
                        Expected("a data set name or a map {task, classes, ...}", node));
  }
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  auto number = [&](void (v1::ProbeSpec::*setter)(double)) {
    return [&r, out, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      double value = 0;
      LF_RETURN_IF_ERROR(ParseDouble(r, v, p, &value));
      (out->*setter)(value);
      return absl::OkStatus();
    };
  };
  auto int32_field = [&](void (v1::ProbeSpec::*setter)(int32_t)) {
    return [&r, out, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      int64_t value = 0;
      LF_RETURN_IF_ERROR(ParseInteger(r, v, p, 0, kInt32Max, &value));
      (out->*setter)(static_cast<int32_t>(value));
      return absl::OkStatus();
    };
  };
  LF_RETURN_IF_ERROR(ParseMap(
      r, node, path,
      {{"task", [&](const YAML::Node& v,
                    const std::string& p) { return ParseString(r, v, p, out->mutable_task()); }},
       {"classes", int32_field(&v1::ProbeSpec::set_classes)},
       {"seeds",
        [&](const YAML::Node& v, const std::string& p) {
          return ParseIntList(r, v, p, 0, out->mutable_seeds());
        }},
       {"epochs", int32_field(&v1::ProbeSpec::set_epochs)},
       {"lr", number(&v1::ProbeSpec::set_lr)},
       {"weight_decay", number(&v1::ProbeSpec::set_weight_decay)},
       {"train_fraction", number(&v1::ProbeSpec::set_train_fraction)},
       {"val_fraction", number(&v1::ProbeSpec::set_val_fraction)},
       {"permutations", int32_field(&v1::ProbeSpec::set_permutations)},
       {"feature_dtype", [&](const YAML::Node& v, const std::string& p) {
          return ParseString(r, v, p, out->mutable_feature_dtype());
        }}}));
  if (out->task().empty()) {
    return r.FieldError(node, path, "missing 'task' (the data set to probe, e.g. task: kvpr)");
  }
  return absl::OkStatus();
}

// `train: {task: mqar, steps: 20000, lr: 1e-3, ...}` (TrainSpec; zero or
// absent fields take the coordinator's defaults).
absl::Status ParseTrain(const Reporter& r, const YAML::Node& node, const std::string& path,
                        v1::TrainSpec* out) {
  if (!node.IsMap()) {
    return r.FieldError(node, path, Expected("a map {task, vocab, length, pairs, ...}", node));
  }
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
  auto number = [&](void (v1::TrainSpec::*setter)(double)) {
    return [&r, out, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      double value = 0;
      LF_RETURN_IF_ERROR(ParseDouble(r, v, p, &value));
      (out->*setter)(value);
      return absl::OkStatus();
    };
  };
  auto int32_field = [&](void (v1::TrainSpec::*setter)(int32_t)) {
    return [&r, out, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      int64_t value = 0;
      LF_RETURN_IF_ERROR(ParseInteger(r, v, p, 0, kInt32Max, &value));
      (out->*setter)(static_cast<int32_t>(value));
      return absl::OkStatus();
    };
  };
  auto int64_field = [&](void (v1::TrainSpec::*setter)(int64_t)) {
    return [&r, out, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      int64_t value = 0;
      LF_RETURN_IF_ERROR(ParseInteger(r, v, p, 0, kInt64Max, &value));
      (out->*setter)(value);
      return absl::OkStatus();
    };
  };
  return ParseMap(
      r, node, path,
      {{"task", [&](const YAML::Node& v,
                    const std::string& p) { return ParseString(r, v, p, out->mutable_task()); }},
       {"vocab", int32_field(&v1::TrainSpec::set_vocab)},
       {"length", int32_field(&v1::TrainSpec::set_length)},
       {"pairs", int32_field(&v1::TrainSpec::set_pairs)},
       {"alpha", number(&v1::TrainSpec::set_alpha)},
       {"layers", int32_field(&v1::TrainSpec::set_layers)},
       {"width", int32_field(&v1::TrainSpec::set_width)},
       {"heads", int32_field(&v1::TrainSpec::set_heads)},
       {"state_size", int32_field(&v1::TrainSpec::set_state_size)},
       {"steps", int64_field(&v1::TrainSpec::set_steps)},
       {"batch", int32_field(&v1::TrainSpec::set_batch)},
       {"lr", number(&v1::TrainSpec::set_lr)},
       {"warmup", int64_field(&v1::TrainSpec::set_warmup)},
       {"weight_decay", number(&v1::TrainSpec::set_weight_decay)},
       {"clip", number(&v1::TrainSpec::set_clip)},
       {"target_accuracy", number(&v1::TrainSpec::set_target_accuracy)},
       {"eval_every", int64_field(&v1::TrainSpec::set_eval_every)},
       {"save_every", int64_field(&v1::TrainSpec::set_save_every)},
       {"eval_examples", int32_field(&v1::TrainSpec::set_eval_examples)},
       {"curriculum",
        [&](const YAML::Node& v, const std::string& p) {
          return ParseString(r, v, p, out->mutable_curriculum());
        }},
       {"penalty",
        [&](const YAML::Node& v, const std::string& p) {
          return ParseString(r, v, p, out->mutable_penalty());
        }},
       {"penalty_weight", number(&v1::TrainSpec::set_penalty_weight)},
       {"penalty_layers",
        [&](const YAML::Node& v, const std::string& p) {
          return ParseIntList(r, v, p, std::numeric_limits<int32_t>::min(),
                              out->mutable_penalty_layers());
        }},
       {"penalty_series", [&](const YAML::Node& v, const std::string& p) {
          return ParseString(r, v, p, out->mutable_penalty_series());
        }}});
}

absl::Status ParseSpec(const Reporter& r, const YAML::Node& root, v1::SweepSpec* spec) {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
  auto int32_field = [&](int64_t min, void (v1::SweepSpec::*setter)(int32_t)) {
    return [&r, spec, min, setter](const YAML::Node& v, const std::string& p) -> absl::Status {
      int64_t value = 0;
      LF_RETURN_IF_ERROR(ParseInteger(r, v, p, min, kInt32Max, &value));
      (spec->*setter)(static_cast<int32_t>(value));
      return absl::OkStatus();
    };
  };
  // `kind: extract` as written, to point at it if a train: block follows.
  std::optional<YAML::Node> kind_extract;
  LF_RETURN_IF_ERROR(ParseMap(
      r, root, "",
      {
          {"name",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseString(r, v, p, spec->mutable_name());
           }},
          {"models",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseStringList(r, v, p, spec->mutable_models());
           }},
          {"init_schemes",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseStringList(r, v, p, spec->mutable_init_schemes());
           }},
          {"seeds",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseIntList(r, v, p, 0, spec->mutable_seeds());
           }},
          {"datasets",
           [&](const YAML::Node& v, const std::string& p) {
             return ForEachElement(r, v, p, "a data set", /*allow_single_map=*/true,
                                   [&](const YAML::Node& e, const std::string& ep) {
                                     return ParseDataset(r, e, ep, spec->add_datasets());
                                   });
           }},
          {"context_lengths",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseIntList(r, v, p, 0, spec->mutable_context_lengths());
           }},
          {"analyses",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseStringList(r, v, p, spec->mutable_analyses());
           }},
          {"num_prompts", int32_field(0, &v1::SweepSpec::set_num_prompts)},
          {"prompts_per_chunk", int32_field(0, &v1::SweepSpec::set_prompts_per_chunk)},
          {"batch_prompts", int32_field(0, &v1::SweepSpec::set_batch_prompts)},
          {"dtype",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseString(r, v, p, spec->mutable_dtype());
           }},
          {"priority", int32_field(kInt32Min, &v1::SweepSpec::set_priority)},
          // Seconds; the coordinator checks the range (at most 30 days).
          {"max_job_seconds",
           [&](const YAML::Node& v, const std::string& p) -> absl::Status {
             int64_t value = 0;
             LF_RETURN_IF_ERROR(
                 ParseInteger(r, v, p, 0, std::numeric_limits<int64_t>::max(), &value));
             spec->set_max_job_seconds(value);
             return absl::OkStatus();
           }},
          {"example_cka",
           [&](const YAML::Node& v, const std::string& p) -> absl::Status {
             bool value = false;
             LF_RETURN_IF_ERROR(ParseBool(r, v, p, &value));
             spec->set_example_cka(value);
             return absl::OkStatus();
           }},
          {"probe",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseProbe(r, v, p, spec->mutable_probe());
           }},
          // `kind: train` makes a training sweep (spec.train, defaults for
          // what `train:` leaves out); `kind: extract` is the default.
          {"kind",
           [&](const YAML::Node& v, const std::string& p) -> absl::Status {
             std::string kind;
             LF_RETURN_IF_ERROR(ParseString(r, v, p, &kind));
             if (kind == "train") {
               spec->mutable_train();
             } else if (kind != "extract") {
               return r.FieldError(
                   v, p, absl::StrCat("unknown kind '", kind, "'; known kinds: extract, train"));
             } else {
               kind_extract = v;
             }
             return absl::OkStatus();
           }},
          {"train",
           [&](const YAML::Node& v, const std::string& p) {
             return ParseTrain(r, v, p, spec->mutable_train());
           }},
          {"layers",
           [&](const YAML::Node& v, const std::string& p) -> absl::Status {
             // Unlike the axes, an empty list has no default to stand for:
             // `layers: []` would silently analyse every point.
             if (v.IsSequence() && v.size() == 0) {
               return r.FieldError(v, p,
                                   "empty list; list the points to keep (0 the embedding, "
                                   "-1 the final point) or leave the field out for all");
             }
             return ParseIntList(r, v, p, kInt32Min, spec->mutable_layers());
           }},
      }));
  if (kind_extract.has_value() && spec->has_train()) {
    return r.FieldError(*kind_extract, "kind",
                        "'extract' with a train: block; a training sweep says kind: train");
  }
  return absl::OkStatus();
}

// Where each YAML document starts and where its first node does.
class DocumentStarts final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnMapEnd() override {}

  std::vector<YAML::Mark> marks;
  std::vector<YAML::Mark> node_marks;  // of the documents' root nodes

 private:
  void Node(const YAML::Mark& mark) {
    if (node_marks.size() < marks.size()) node_marks.push_back(mark);
  }
};

// The documents of `text`, at most two (a sweep file holds one). Not
// YAML::LoadAll: yaml-cpp 0.7 reads an empty document without moving on when
// a ',' stands outside any flow collection (the file ",", found by
// tests/fuzz/fuzz_sweep), so LoadAll loops and allocates for ever. A second
// document starting where the first did is that case: a syntax error.
absl::StatusOr<std::vector<YAML::Node>> LoadDocuments(const Reporter& r, const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  if (starts.marks.size() < 2) return std::vector<YAML::Node>{YAML::Load(text)};
  const YAML::Mark& first = starts.marks[0];
  const YAML::Mark& second = starts.marks[1];
  if (second.pos == first.pos) {
    const size_t at = static_cast<size_t>(std::max(0, second.pos));
    const std::string token = at < text.size() ? std::string(1, text[at]) : std::string();
    return r.Error(second, absl::StrCat("YAML syntax error: unexpected '", token,
                                        "' outside a [...] or {...} collection"));
  }
  return r.Error(starts.node_marks.size() >= 2 ? starts.node_marks[1] : second,
                 "a sweep file holds one YAML document; found a second one");
}

}  // namespace

absl::StatusOr<v1::SweepSpec> ParseSweepYaml(absl::string_view yaml,
                                             absl::string_view source_name) {
  const Reporter r(source_name);
  std::vector<YAML::Node> documents;
  try {
    LF_ASSIGN_OR_RETURN(documents, LoadDocuments(r, std::string(yaml)));
  } catch (const YAML::ParserException& e) {
    return r.Error(e.mark, absl::StrCat("YAML syntax error: ", e.msg));
  } catch (const YAML::Exception& e) {
    return r.Error(e.mark, absl::StrCat("invalid YAML: ", e.msg));
  }
  if (documents.size() > 1) {
    return r.Error(documents[1].Mark(), "a sweep file holds one YAML document; found a second one");
  }
  if (documents.empty() || documents[0].IsNull()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name,
                     ": empty sweep file; expected a map of sweep fields "
                     "(name, models, ...; see docs/sweep-file.md)"));
  }
  const YAML::Node& root = documents[0];
  if (!root.IsMap()) {
    return r.Error(root.Mark(), Expected("a map of sweep fields (name: ..., models: [...])", root));
  }
  v1::SweepSpec spec;
  try {
    LF_RETURN_IF_ERROR(ParseSpec(r, root, &spec));
  } catch (const YAML::Exception& e) {
    // Not expected (every access above is type-checked first), but a YAML
    // exception must never escape as a crash.
    return r.Error(e.mark, absl::StrCat("invalid sweep file: ", e.msg));
  }
  return spec;
}

absl::StatusOr<v1::SweepSpec> ParseSweepFile(const std::string& path) {
  // POSIX stat, not std::filesystem: the `layerflow` binary links LibTorch,
  // whose libtorch.so exports its own (incompatible) std::filesystem symbols.
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("sweep file not found: ", path));
    }
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat("cannot read sweep file ", path, ": ", std::strerror(error)));
  }
  if (S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep file is a directory, not a file: ", path));
  }
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("cannot read sweep file ", text.status().message()));
  }
  return ParseSweepYaml(*text, path);
}

}  // namespace layerflow::client

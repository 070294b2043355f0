#include "catalog/datasets.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "catalog/names.h"

namespace layerflow::catalog {
namespace {

// KVPR (worker/data/kvpr.cc): instruction, `Key: "K"`, `JSON data:\n{`, the
// pairs `"K": "V"` joined by ", ", `}`, the key again and
// `Corresponding value:`, every key and value a 36-character UUID.
constexpr int64_t kUuidBytes = 36;
constexpr int64_t kKvprFixedBytes =
    80 /* instruction */ + 6 + kUuidBytes + 15 + 9 + kUuidBytes + 22;
constexpr int64_t kKvprPairBytes = 1 + kUuidBytes + 4 + kUuidBytes + 1;
constexpr int64_t kKvprSeparatorBytes = 2;

// MDQA's synthetic generator (worker/data/mdqa.cc) at its shortest: names of
// 4 letters, two-digit numbers, 4-letter adjectives, the shortest relation
// ("The capital of $0 is $1.") and the two shortest fillers. Fixed: the
// instruction, "\nQuestion: ", the question and "\nAnswer:"; per document:
// "Document [k](Title: T) " + text + "\n" without the digits of k.
constexpr int64_t kMdqaFixedMinBytes = 175;
constexpr int64_t kMdqaDocumentMinBytes = 143;

int64_t Digits(int64_t k) {
  int64_t digits = 1;
  for (; k >= 10; k /= 10) ++digits;
  return digits;
}

}  // namespace

bool IsKnownDataset(std::string_view name) { return Contains(kDatasetNames, name); }

bool IsJobDataset(std::string_view name) { return Contains(kJobDatasetNames, name); }

std::string JobDatasetList() { return JoinNames(kJobDatasetNames); }

bool DatasetHasClasses(std::string_view name) { return name == "kvpr" || name == "mdqa"; }

bool DatasetReadsFile(std::string_view name) { return name == "text"; }

bool DatasetMayReadFile(std::string_view name) { return name == "text" || name == "mdqa"; }

bool DatasetUsesTokenizer(std::string_view name) { return IsKnownDataset(name) && name != "mqar"; }

int32_t MqarVocabSize(int64_t model_vocab_size) {
  return static_cast<int32_t>(std::min<int64_t>(8192, model_vocab_size));
}

int32_t MqarKvPairs(int32_t context_length) {
  return std::max(1, std::min(16, context_length / 4));
}

int64_t MinContextLength(std::string_view name, int32_t num_classes) {
  const int64_t c = std::max(num_classes, 1);
  if (name == "kvpr") {
    return kKvprFixedBytes + c * kKvprPairBytes + (c - 1) * kKvprSeparatorBytes;
  }
  if (name == "mdqa") {
    int64_t bytes = kMdqaFixedMinBytes;
    for (int64_t k = 1; k <= c; ++k) bytes += kMdqaDocumentMinBytes + Digits(k);
    return bytes;
  }
  if (name == "mqar") return 4;
  if (name == "text") return 2;  // any file: its length is checked on the worker
  return -1;
}

absl::Status CheckContextFits(std::string_view name_in, int32_t num_classes,
                              int32_t context_length) {
  // Debian's abseil is built with its own string_view (not std::string_view).
  const absl::string_view name(name_in.data(), name_in.size());
  const int64_t needed = MinContextLength(name_in, num_classes);
  if (needed < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset: unknown '", name, "'; a job runs ", JobDatasetList()));
  }
  if (context_length >= needed) return absl::OkStatus();
  const std::string prefix =
      absl::StrCat("context_length: ", context_length, " tokens cannot hold ");
  if (name == "kvpr") {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, num_classes, " key-value pairs (one per gold position, num_classes=", num_classes,
        "); the KVPR prompt needs at least ", needed, " tokens with the byte tokenizer"));
  }
  if (name == "mdqa") {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, num_classes, " documents (one per gold position, num_classes=", num_classes,
        "); an MDQA prompt needs at least ", needed, " tokens with the byte tokenizer"));
  }
  if (name == "text") {
    return absl::InvalidArgumentError(absl::StrCat("context_length: ", context_length,
                                                   " is too short for a text prompt (at least ",
                                                   needed, " tokens)"));
  }
  return absl::InvalidArgumentError(absl::StrCat(prefix, "an MQAR prompt, which needs at least ",
                                                 needed, " (a key-value pair and its query slot)"));
}

}  // namespace layerflow::catalog

// The data sets, by name, and what the coordinator can know about them
// without building one (docs/datasets.md has the exact formats; worker/data
// builds them).
#ifndef LAYERFLOW_CATALOG_DATASETS_H_
#define LAYERFLOW_CATALOG_DATASETS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace layerflow::catalog {

// Every data set worker/data implements, sorted.
inline constexpr std::array<std::string_view, 4> kDatasetNames = {"kvpr", "mdqa", "mqar", "text"};
// The data sets a job runs (a sweep's `datasets`). text is the user's own
// file (DatasetSpec.path, under a worker's roots).
inline constexpr std::array<std::string_view, 4> kJobDatasetNames = {"kvpr", "mdqa", "mqar",
                                                                     "text"};
// Whether the data set reads a file a sweep names (DatasetSpec.path): text
// always; mdqa may (its records instead of the synthetic generator).
bool DatasetReadsFile(std::string_view name);
bool DatasetMayReadFile(std::string_view name);

bool IsKnownDataset(std::string_view name);
bool IsJobDataset(std::string_view name);
// kJobDatasetNames ", "-joined, for error messages.
std::string JobDatasetList();
// Whether the examples carry a gold class (a probing label): kvpr and mdqa.
bool DatasetHasClasses(std::string_view name);
// Whether the data set is read through a text tokenizer (all but mqar, which
// gives token ids directly).
bool DatasetUsesTokenizer(std::string_view name);

// A job's MQAR: token ids from the first min(8192, model_vocab_size) of the
// model's vocabulary, min(16, context_length / 4) key-value pairs (at least
// one).
int32_t MqarVocabSize(int64_t model_vocab_size);
int32_t MqarKvPairs(int32_t context_length);

// The fewest tokens, with the byte tokenizer (every preset's), that a job's
// prompt of data set `name` with `num_classes` gold positions can have:
// kvpr exactly (num_classes key-value pairs; its UUIDs have a fixed length),
// mdqa a lower bound (num_classes synthetic documents with the shortest
// names, numbers and fillers the generator can draw), mqar 4 (one pair and
// its query slot). -1 for a name that is not a job data set.
int64_t MinContextLength(std::string_view name, int32_t num_classes);

// OK when a job of data set `name` with `num_classes` classes can fit
// `context_length` tokens with the byte tokenizer (MinContextLength);
// otherwise INVALID_ARGUMENT in the worker's words, e.g. "context_length: 1081
// tokens cannot hold 11 key-value pairs (one per gold position,
// num_classes=11); the KVPR prompt needs at least 1082 tokens with the byte
// tokenizer". For mdqa a context that passes may still be too short for a
// given prompt: the worker checks every prompt with its own tokenizer.
absl::Status CheckContextFits(std::string_view name, int32_t num_classes, int32_t context_length);

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_DATASETS_H_

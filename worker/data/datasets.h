// The data sets of worker/data, by name (METHODS.md, "Data sets";
// docs/datasets.md has the exact formats).
#ifndef LAYERFLOW_WORKER_DATA_DATASETS_H_
#define LAYERFLOW_WORKER_DATA_DATASETS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

// {"kvpr", "mdqa", "mqar", "text"}, sorted.
std::vector<std::string> KnownDatasets();
bool IsKnownDataset(std::string_view name);
// Whether the examples carry a gold class (a probing label): kvpr and mdqa.
bool DatasetHasClasses(std::string_view name);
// Whether the data set is read through a text tokenizer (all but mqar, which
// gives token ids directly).
bool DatasetUsesTokenizer(std::string_view name);

// The data sets a job runs (a sweep's `datasets`): kvpr, mdqa, mqar; the
// list ", "-joined for error messages.
std::vector<std::string> JobDatasets();
bool IsJobDataset(std::string_view name);
std::string JobDatasetList();

// One prompt of a job, whatever data set it came from.
struct Prompt {
  int64_t index = 0;  // in the job
  std::vector<int32_t> token_ids;
  int32_t num_tokens = 0;
  int32_t gold_class = -1;  // -1: the data set has no classes
};
// Prompts [begin, end) of the job, deterministic from the job's seed.
using PromptSource =
    std::function<absl::StatusOr<std::vector<Prompt>>(int64_t begin, int64_t end)>;

// A job's data set, as the worker runs it and the coordinator checks it at
// submit: kvpr; mdqa from the built-in synthetic generator (K documents
// chosen to fit); mqar with token ids straight into the model's vocabulary
// (min(8192, model_vocab_size) ids, min(16, context / 4) pairs, at least
// one). INVALID_ARGUMENT for another name or a context that does not fit.
struct JobDatasetOptions {
  std::string name;
  int64_t seed = 0;
  int32_t num_classes = 0;
  int32_t context_length = 0;
  int64_t model_vocab_size = 8192;
};
absl::StatusOr<PromptSource> CreateJobDataset(const JobDatasetOptions& options,
                                              std::shared_ptr<const Tokenizer> tokenizer);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_DATASETS_H_

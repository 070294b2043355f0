// The data sets of worker/data, built by name (METHODS.md, "Data sets";
// docs/datasets.md has the exact formats). The names and what they imply
// (classes, tokenizer, job data sets) are the catalog's: catalog/datasets.h.
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

// One prompt of a job, whatever data set it came from.
struct Prompt {
  int64_t index = 0;  // in the job
  std::vector<int32_t> token_ids;
  int32_t num_tokens = 0;
  int32_t gold_class = -1;  // -1: the data set has no classes
};
// Prompts [begin, end) of the job, deterministic from the job's seed.
using PromptSource = std::function<absl::StatusOr<std::vector<Prompt>>(int64_t begin, int64_t end)>;

// A job's data set (catalog::kJobDatasetNames), as the worker runs it: kvpr;
// mdqa from the built-in synthetic generator (K documents chosen to fit);
// mqar with token ids straight into the model's vocabulary
// (catalog::MqarVocabSize ids, catalog::MqarKvPairs pairs). INVALID_ARGUMENT
// for another name or a context that does not fit. (The coordinator checks
// the fit at submit without building one: catalog::CheckContextFits.)
struct JobDatasetOptions {
  std::string name;
  int64_t seed = 0;
  int32_t num_classes = 0;
  int32_t context_length = 0;
  int64_t model_vocab_size = 8192;
  // text (and mdqa from a file): the file's name (for messages) and its
  // bytes, read by the caller (which confines the path); text's JSONL key
  // ("" = "text").
  std::string text_path;
  std::string text_contents;
  std::string text_field;
  // text: the prompts the job asks for (its file must hold as many
  // examples of context_length tokens); 0 = unchecked.
  int64_t num_prompts = 0;
};
absl::StatusOr<PromptSource> CreateJobDataset(const JobDatasetOptions& options,
                                              std::shared_ptr<const Tokenizer> tokenizer);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_DATASETS_H_

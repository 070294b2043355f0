#include "worker/data/datasets.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/data/kvpr.h"
#include "worker/data/mdqa.h"
#include "worker/data/mqar.h"

namespace layerflow::worker {
namespace {

template <typename Dataset>
PromptSource SourceOf(Dataset dataset) {
  return [dataset = std::move(dataset)](int64_t begin, int64_t end)
             -> absl::StatusOr<std::vector<Prompt>> {
    auto examples = dataset.GenerateRange(begin, end);
    if (!examples.ok()) return examples.status();
    std::vector<Prompt> prompts;
    for (auto& e : *examples) {
      prompts.push_back(Prompt{e.index, std::move(e.token_ids), e.num_tokens, e.gold_class});
    }
    return prompts;
  };
}

// A data set's own factory result as a PromptSource.
template <typename Dataset>
absl::StatusOr<PromptSource> SourceOf(absl::StatusOr<Dataset> dataset) {
  if (!dataset.ok()) return dataset.status();
  return SourceOf(*std::move(dataset));
}

}  // namespace

std::vector<std::string> KnownDatasets() {
  return {"kvpr", "mdqa", "mqar", "text"};
}

bool IsKnownDataset(std::string_view name) {
  const std::vector<std::string> known = KnownDatasets();
  return std::find(known.begin(), known.end(), name) != known.end();
}

bool DatasetHasClasses(std::string_view name) {
  return name == "kvpr" || name == "mdqa";
}

bool DatasetUsesTokenizer(std::string_view name) {
  return IsKnownDataset(name) && name != "mqar";
}

std::vector<std::string> JobDatasets() { return {"kvpr", "mdqa", "mqar"}; }

bool IsJobDataset(std::string_view name) {
  const std::vector<std::string> jobs = JobDatasets();
  return std::find(jobs.begin(), jobs.end(), name) != jobs.end();
}

std::string JobDatasetList() { return absl::StrJoin(JobDatasets(), ", "); }

absl::StatusOr<PromptSource> CreateJobDataset(const JobDatasetOptions& o,
                                              std::shared_ptr<const Tokenizer> tokenizer) {
  if (o.name == "kvpr") {
    return SourceOf(KvprDataset::Create(
        {.seed = o.seed, .num_classes = o.num_classes, .context_length = o.context_length},
        std::move(tokenizer)));
  }
  if (o.name == "mdqa") {  // K = 0: as many documents as fit
    return SourceOf(MdqaDataset::Create({.seed = o.seed,
                                         .num_classes = o.num_classes,
                                         .num_documents = 0,
                                         .context_length = o.context_length},
                                        std::move(tokenizer)));
  }
  if (o.name == "mqar") {
    return SourceOf(MqarDataset::Create(
        {.seed = o.seed,
         .vocab_size = static_cast<int32_t>(std::min<int64_t>(8192, o.model_vocab_size)),
         .seq_len = o.context_length,
         .num_kv_pairs = std::max(1, std::min(16, o.context_length / 4))}));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dataset: unknown '", o.name, "'; a job runs ", JobDatasetList()));
}

}  // namespace layerflow::worker

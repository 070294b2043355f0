#include "worker/data/datasets.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "catalog/datasets.h"
#include "worker/data/kvpr.h"
#include "worker/data/mdqa.h"
#include "worker/data/mqar.h"
#include "worker/data/text.h"

namespace layerflow::worker {
namespace {

template <typename Dataset>
PromptSource SourceOf(Dataset dataset) {
  return [dataset = std::move(dataset)](int64_t begin,
                                        int64_t end) -> absl::StatusOr<std::vector<Prompt>> {
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

absl::StatusOr<PromptSource> CreateJobDataset(const JobDatasetOptions& o,
                                              std::shared_ptr<const Tokenizer> tokenizer) {
  if (o.name == "kvpr") {
    return SourceOf(KvprDataset::Create(
        {.seed = o.seed, .num_classes = o.num_classes, .context_length = o.context_length},
        std::move(tokenizer)));
  }
  if (o.name == "mdqa") {  // K = 0: as many documents as fit
    MdqaOptions mdqa{.seed = o.seed,
                     .num_classes = o.num_classes,
                     .num_documents = 0,
                     .context_length = o.context_length};
    if (!o.text_path.empty()) {  // the user's JSONL records
      mdqa.path = o.text_path;
      mdqa.contents = o.text_contents;
    }
    return SourceOf(MdqaDataset::Create(mdqa, std::move(tokenizer)));
  }
  if (o.name == "mqar") {
    return SourceOf(MqarDataset::Create({.seed = o.seed,
                                         .vocab_size = catalog::MqarVocabSize(o.model_vocab_size),
                                         .seq_len = o.context_length,
                                         .num_kv_pairs = catalog::MqarKvPairs(o.context_length)}));
  }
  if (o.name == "text") {
    TextOptions text;
    text.path = o.text_path;
    text.contents = o.text_contents;
    if (!o.text_field.empty()) text.json_key = o.text_field;
    text.context_length = o.context_length;
    absl::StatusOr<TextDataset> dataset = TextDataset::Create(text, std::move(tokenizer));
    if (!dataset.ok()) return dataset.status();
    if (o.num_prompts > dataset->num_examples()) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_prompts: ", o.num_prompts, " prompts of ", o.context_length,
                       " tokens asked, but ", o.text_path, " holds ", dataset->num_examples(), " (",
                       dataset->num_stream_tokens(), " tokens)"));
    }
    return SourceOf(*std::move(dataset));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dataset: unknown '", o.name, "'; a job runs ", catalog::JobDatasetList()));
}

}  // namespace layerflow::worker

#include "worker/data/text.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/data/data_util.h"

namespace layerflow::worker {

absl::StatusOr<TextDataset> TextDataset::Create(const TextOptions& options,
                                                std::shared_ptr<const Tokenizer> tokenizer) {
  if (tokenizer == nullptr) {
    return absl::InvalidArgumentError("text: no tokenizer");
  }
  if (options.path.empty()) {
    return absl::InvalidArgumentError("path: the text data set needs a file");
  }
  if (options.context_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length: must be >= 1, got ", options.context_length));
  }
  const bool jsonl =
      options.format == TextFormat::kJsonl ||
      (options.format == TextFormat::kAuto && absl::EndsWithIgnoreCase(options.path, ".jsonl"));
  auto stream = std::make_shared<std::vector<int32_t>>();
  auto starts = std::make_shared<std::vector<std::pair<int64_t, int64_t>>>();
  if (jsonl) {
    if (options.json_key.empty()) {
      return absl::InvalidArgumentError("json_key: must not be empty");
    }
    absl::StatusOr<std::vector<NumberedLine>> lines =
        options.contents ? NonBlankLines(*options.contents) : ReadNonBlankLines(options.path);
    if (!lines.ok()) return lines.status();
    const std::vector<int32_t> separator = tokenizer->Encode(options.separator);
    for (const NumberedLine& line : *lines) {
      nlohmann::json record;
      try {
        record = nlohmann::json::parse(line.text);
      } catch (const nlohmann::json::exception& e) {
        return absl::InvalidArgumentError(
            absl::StrCat(options.path, ":", line.number, ": malformed JSON: ", e.what()));
      }
      if (!record.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(options.path, ":", line.number, ": the record must be a JSON object"));
      }
      auto it = record.find(options.json_key);
      if (it == record.end()) {
        return absl::InvalidArgumentError(absl::StrCat(options.path, ":", line.number,
                                                       ": missing key \"", options.json_key, "\""));
      }
      if (!it->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(options.path, ":", line.number, ": key \"",
                                                       options.json_key, "\" must be a string"));
      }
      if (!starts->empty()) {
        stream->insert(stream->end(), separator.begin(), separator.end());
      }
      starts->emplace_back(static_cast<int64_t>(stream->size()), line.number);
      const std::vector<int32_t> ids = tokenizer->Encode(it->get_ref<const std::string&>());
      stream->insert(stream->end(), ids.begin(), ids.end());
    }
  } else {
    absl::StatusOr<std::string> contents =
        options.contents ? *options.contents : ReadWholeFile(options.path);
    if (!contents.ok()) return contents.status();
    *stream = tokenizer->Encode(*contents);
  }
  const int64_t n = static_cast<int64_t>(stream->size());
  const int64_t length = options.context_length;
  int64_t examples = n / length;
  if (options.keep_partial && n % length != 0) ++examples;
  if (examples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.path, ": ", n, " tokens with the ", tokenizer->name(),
                     " tokenizer, fewer than context_length=", length,
                     options.keep_partial ? "" : " (keep_partial would keep them)"));
  }
  TextDataset dataset(options);
  dataset.stream_ = std::move(stream);
  dataset.starts_ = std::move(starts);
  dataset.num_examples_ = examples;
  return dataset;
}

absl::StatusOr<TextExample> TextDataset::Generate(int64_t index) const {
  if (index < 0 || index >= num_examples_) {
    return absl::OutOfRangeError(absl::StrCat("text: example ", index, " is outside [0, ",
                                              num_examples_, ") of ", options_.path));
  }
  const int64_t begin = index * options_.context_length;
  const int64_t end =
      std::min<int64_t>(begin + options_.context_length, static_cast<int64_t>(stream_->size()));
  TextExample example;
  example.index = index;
  example.token_ids.assign(stream_->begin() + begin, stream_->begin() + end);
  example.num_tokens = static_cast<int32_t>(example.token_ids.size());
  example.token_offset = begin;
  if (!starts_->empty()) {
    // Last record that starts at or before `begin`.
    auto it = std::upper_bound(starts_->begin(), starts_->end(), begin,
                               [](int64_t offset, const std::pair<int64_t, int64_t>& start) {
                                 return offset < start.first;
                               });
    example.source_line = std::prev(it)->second;
  }
  return example;
}

absl::StatusOr<std::vector<TextExample>> TextDataset::GenerateRange(int64_t begin,
                                                                    int64_t end) const {
  return GenerateRangeOf(*this, begin, end);
}

}  // namespace layerflow::worker

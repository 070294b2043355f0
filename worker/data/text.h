// Text: any plain-text or JSONL file cut into examples of a fixed token
// count, for the metrics that need no labels (METHODS.md, "Data sets").
//
// Documents: a plain-text file is one document (its bytes as they are); a
// JSONL file (format kJsonl, or kAuto and a name ending in ".jsonl") has one
// document per non-blank line, the string under options.json_key (default
// "text"). Errors name the file, and FILE:LINE and the key for JSONL
// (INVALID_ARGUMENT `data.jsonl:4: missing key "text"`).
//
// Token stream: each document is tokenized on its own and the documents are
// concatenated in file order, with Encode(options.separator) (default "\n\n")
// between two documents. Example i is the tokens
// [i * context_length, (i + 1) * context_length) of that stream; the tail
// shorter than context_length is dropped (or, with keep_partial, is one last
// shorter example whose num_tokens says how long it is). No randomness: the
// examples are a function of the file and the options (the seed is unused;
// there is none).
//
// Labels: none, gold_class is -1.
#ifndef LAYERFLOW_WORKER_DATA_TEXT_H_
#define LAYERFLOW_WORKER_DATA_TEXT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

enum class TextFormat { kAuto, kPlain, kJsonl };

struct TextOptions {
  // The file's name, read unless `contents` is given (then it only names
  // the file in messages: a worker reads a job's file through the confined
  // opener, common/confined_file.h, and hands the bytes over).
  std::string path;
  std::optional<std::string> contents;
  TextFormat format = TextFormat::kAuto;
  std::string json_key = "text";
  std::string separator = "\n\n";
  int32_t context_length = 2048;  // tokens per example
  bool keep_partial = false;
};

struct TextExample {
  int64_t index = 0;
  std::vector<int32_t> token_ids;
  int32_t num_tokens = 0;    // real token count (== token_ids.size())
  int32_t gold_class = -1;   // no labels
  int64_t token_offset = 0;  // first token's offset in the stream
  // 1-based line of the JSONL record that holds the first token (a
  // separator token counts to the record before it); 0 for plain text.
  int64_t source_line = 0;
};

class TextDataset {
 public:
  // Reads and tokenizes the whole file. NOT_FOUND if it cannot be opened;
  // INVALID_ARGUMENT for a bad JSONL line, for context_length < 1, and for a
  // file with fewer than context_length tokens (unless keep_partial and not
  // empty) — each naming the file.
  static absl::StatusOr<TextDataset> Create(const TextOptions& options,
                                            std::shared_ptr<const Tokenizer> tokenizer);

  const TextOptions& options() const { return options_; }
  int64_t num_examples() const { return num_examples_; }
  int64_t num_stream_tokens() const { return static_cast<int64_t>(stream_->size()); }

  // OUT_OF_RANGE (naming the file and num_examples) for an index outside
  // [0, num_examples).
  absl::StatusOr<TextExample> Generate(int64_t index) const;
  absl::StatusOr<std::vector<TextExample>> GenerateRange(int64_t begin, int64_t end) const;

 private:
  explicit TextDataset(const TextOptions& options) : options_(options) {}

  TextOptions options_;
  std::shared_ptr<const std::vector<int32_t>> stream_;
  // JSONL: (first stream offset, line) of each record, ascending.
  std::shared_ptr<const std::vector<std::pair<int64_t, int64_t>>> starts_;
  int64_t num_examples_ = 0;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_TEXT_H_

// MDQA: multi-document question answering (METHODS.md, "Data sets"), as in
// "lost in the middle" (Liu et al. 2023): K documents and a question; the
// gold document (the one that holds the answer) sits at one of C positions.
//
// Prompt text (documents numbered from 1, one per line):
//
//   Write a high-quality answer for the given question using only the
//   provided search results (some of which might be irrelevant).
//   <blank line>
//   Document [1](Title: <title>) <text>
//   Document [2](Title: <title>) <text>
//   ...
//   Document [K](Title: <title>) <text>
//   <blank line>
//   Question: <question>
//   Answer:
//
// (the instruction is one line; the prompt ends with "Answer:", no newline.)
//
// Sources:
//  * a JSONL file (options.path), one record per non-blank line:
//      {"question": str, "answers": [str, ...],
//       "ctxs": [{"title": str, "text": str, "isgold": bool,
//                 "hasanswer": bool}, ...]}
//    "isgold"/"hasanswer" are optional. The gold ctx is the first with
//    "isgold": true, or, if none has it, the first with "hasanswer": true.
//    The distractors are the other ctxs except those marked "isgold" or
//    "hasanswer" true (they would hold the answer too). Example i uses
//    record i mod R (R records, in file order). Every record is parsed and
//    checked in Create; errors are INVALID_ARGUMENT "FILE:LINE: ..." naming
//    the key (e.g. `data.jsonl:3: missing key "question"`,
//    `data.jsonl:5: ctxs[2]: key "title" must be a string`).
//  * otherwise a built-in synthetic generator: invented names (syllables),
//    one relation per example (e.g. "The capital of Zorvania is Plintak.",
//    question "What is the capital of Zorvania?", answer "Plintak"). Every
//    document states the same relation for a different invented entity,
//    with two filler sentences; all invented names in a prompt are distinct,
//    so only the gold document mentions the question's entity and the answer.
//
// Determinism: example i draws from std::mt19937_64(PromptRngSeed(seed, i))
// (kvpr.h). Synthetic: the relation, the gold document, then the distractors
// one after another (a stream, independent of K). JSONL: a Fisher-Yates
// shuffle (data_util.h) of the record's distractors. A prompt with K
// documents uses the first K - 1 distractors of that order, with the gold
// document inserted at position p: distractors[0..p), gold,
// distractors[p..K-1).
//
// Labels: example i has class c = i % C (classes cycle, so any C consecutive
// examples are balanced); the gold document sits at 0-based position
// p = KvprGoldPosition(c, C, K) = round(c (K - 1) / (C - 1)) (half up):
// C positions evenly spaced, first and last included; it is "Document [p+1]".
//
// Length: with context_length == 0, K = num_documents. With
// context_length > 0, K is the largest number of documents (at most
// num_documents when that is > 0, at most 1 + the record's distractors for
// JSONL) whose tokenized prompt has at most context_length tokens, searched
// per example as in KVPR. K < C is an error (positions would collide).
#ifndef LAYERFLOW_WORKER_DATA_MDQA_H_
#define LAYERFLOW_WORKER_DATA_MDQA_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

struct MdqaOptions {
  int64_t seed = 0;
  int32_t num_classes = 5;     // C
  int32_t num_documents = 20;  // K (an upper bound when fitting; 0 = none)
  int32_t context_length = 0;  // > 0: choose K to fit this many tokens
  std::string path;            // JSONL source; empty = synthetic
  // The JSONL file's bytes, read by the caller (then `path` only names it in
  // messages: a worker reads a job's file through the confined opener).
  std::optional<std::string> contents;
};

struct MdqaDocument {
  std::string title;
  std::string text;
};

struct MdqaExample {
  int64_t index = 0;
  std::string text;
  std::vector<int32_t> token_ids;
  int32_t num_tokens = 0;     // real token count (== token_ids.size())
  int32_t num_documents = 0;  // K
  int32_t gold_class = 0;     // index % C
  int32_t gold_position = 0;  // 0-based document index of the gold
  std::string question;
  std::vector<std::string> answers;
  std::vector<MdqaDocument> documents;  // in prompt order
  // Byte offset in `text` of each "Document [k]" line, in prompt order.
  std::vector<int64_t> document_offsets;
  int64_t source_line = 0;  // 1-based JSONL line; 0 for synthetic
};

// The prompt for a question and documents in the order given (the format in
// the header comment); exposed for tests and for other front ends.
std::string MdqaPrompt(const std::string& question, const std::vector<MdqaDocument>& documents,
                       std::vector<int64_t>* document_offsets = nullptr);

class MdqaDataset {
 public:
  // One parsed JSONL record.
  struct Record {
    int64_t line = 0;
    std::string question;
    std::vector<std::string> answers;
    MdqaDocument gold;
    std::vector<MdqaDocument> distractors;
  };

  // Validates the options (INVALID_ARGUMENT naming num_classes,
  // num_documents or context_length), reads and checks the JSONL file if
  // one is given (NOT_FOUND if it cannot be opened; INVALID_ARGUMENT
  // "FILE:LINE: ..." for a bad record, or a record with too few
  // distractors), and generates example 0 to check that it fits.
  static absl::StatusOr<MdqaDataset> Create(const MdqaOptions& options,
                                            std::shared_ptr<const Tokenizer> tokenizer);

  const MdqaOptions& options() const { return options_; }
  bool synthetic() const { return records_ == nullptr; }
  // JSONL records (0 when synthetic).
  int64_t num_records() const;
  // K of example 0.
  int32_t num_documents() const { return num_documents_; }

  absl::StatusOr<MdqaExample> Generate(int64_t index) const;
  // Examples [begin, end).
  absl::StatusOr<std::vector<MdqaExample>> GenerateRange(int64_t begin, int64_t end) const;

 private:
  MdqaDataset(const MdqaOptions& options, std::shared_ptr<const Tokenizer> tokenizer)
      : options_(options), tokenizer_(std::move(tokenizer)) {}

  MdqaOptions options_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::shared_ptr<const std::vector<Record>> records_;
  int32_t num_documents_ = 0;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_MDQA_H_

// KVPR: key-value pair retrieval prompts (METHODS.md, "Data sets"), in the
// style of the "lost in the middle" key-value task.
//
// Prompt text (the question is stated before AND after the JSON):
//
//   Extract the value corresponding to the specified key in the JSON object below.
//
//   Key: "<gold key>"
//
//   JSON data:
//   {"<key 0>": "<value 0>", "<key 1>": "<value 1>", ...}
//
//   Key: "<gold key>"
//   Corresponding value:
//
// Keys and values are random UUID4 strings (lowercase, 8-4-4-4-12); keys are
// distinct within a prompt.
//
// Determinism: prompt i is a pure function of (seed, i). Its generator is
//   std::mt19937_64(SplitMix64(SplitMix64(uint64(seed)) + uint64(i)))
// with SplitMix64 the finaliser of Steele et al.'s splitmix64 (see kvpr.cc),
// so any chunk of prompts can be generated alone, in any order.
// From that generator the pairs are drawn as one stream: pair j takes two
// 64-bit draws for its key then two for its value (a key equal to an earlier
// one is redrawn). A prompt with N pairs uses the first N pairs of its stream.
//
// Labels: prompt i has class c = i % C (balanced), and its gold key sits at
// pair position round(c * (N - 1) / (C - 1)) (half up; 0 when C == 1): C
// positions evenly spaced over the N pairs, first and last included.
//
// Length: N is the largest number of pairs whose tokenized prompt has at most
// context_length tokens (searched per prompt, so it is also right for
// tokenizers whose lengths vary; with the byte tokenizer every prompt has the
// same N and the same length). N < C would make positions collide, so it is
// an error that names the minimum context length.
#ifndef LAYERFLOW_WORKER_DATA_KVPR_H_
#define LAYERFLOW_WORKER_DATA_KVPR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

struct KvprOptions {
  int64_t seed = 0;
  int32_t num_classes = 11;       // C
  int32_t context_length = 2048;  // target tokens per prompt
};

struct KvprExample {
  int64_t index = 0;
  std::string text;
  std::vector<int32_t> token_ids;
  int32_t num_tokens = 0;     // real token count (== token_ids.size())
  int32_t num_pairs = 0;      // N
  int32_t gold_class = 0;     // index % C
  int32_t gold_position = 0;  // pair index of the gold key, 0..N-1
  std::string gold_key;
  std::string gold_value;
};

// splitmix64 finaliser; exposed so tests and other data sets share it.
uint64_t SplitMix64(uint64_t x);
// The generator seed of prompt `index` (see the header comment).
uint64_t PromptRngSeed(int64_t seed, int64_t index);
// round(c * (N - 1) / (C - 1)), half up; 0 when C == 1.
int32_t KvprGoldPosition(int32_t gold_class, int32_t num_classes, int32_t num_pairs);

class KvprDataset {
 public:
  // Validates the options (INVALID_ARGUMENT naming num_classes or
  // context_length) and checks that prompt 0 fits at least C pairs.
  static absl::StatusOr<KvprDataset> Create(const KvprOptions& options,
                                            std::shared_ptr<const Tokenizer> tokenizer);

  const KvprOptions& options() const { return options_; }
  // N of prompt 0 (the N of every prompt with the byte tokenizer).
  int32_t num_pairs() const { return num_pairs_; }

  absl::StatusOr<KvprExample> Generate(int64_t index) const;
  // Prompts [begin, end).
  absl::StatusOr<std::vector<KvprExample>> GenerateRange(int64_t begin, int64_t end) const;

 private:
  KvprDataset(const KvprOptions& options, std::shared_ptr<const Tokenizer> tokenizer)
      : options_(options), tokenizer_(std::move(tokenizer)) {}

  KvprOptions options_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int32_t num_pairs_ = 0;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_KVPR_H_

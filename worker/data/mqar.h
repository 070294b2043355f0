// MQAR: multi-query associative recall, as in the Zoology benchmark
// (Arora et al. 2023, zoology/data/associative_recall.py, multiquery_ar).
// Token ids directly: no text, no tokenizer.
//
// Sequence of seq_len ids (N = num_kv_pairs, V = vocab_size):
//   positions [0, 2N): the N key-value pairs, key at 2j, value at 2j + 1.
//     Keys are N distinct ids from [1, V/2), values N distinct ids from
//     [V/2, V) (disjoint halves; 0 is never a key).
//   positions [2N, seq_len): the queries. Each key is queried once, at
//     position 2N + 2 g for a gap g in [0, S), S = (seq_len - 2N) / 2; the N
//     gaps are distinct, drawn without replacement with P(g) proportional to
//     (g + 1)^(alpha - 1) (Zoology's power_a, default 0.01: small gaps are
//     likely). The query for pair j uses gap j of the draw, so the order of
//     the queries is random too.
//   Every other position in the query region holds a random id uniform in
//   [0, V) (random_non_queries, Zoology's default) or 0.
// targets[t] is the value paired with the key at query position t, -1 at
// every other position (Zoology's -100): the model should predict the value
// AT the query position (the next-token target), so accuracy at query
// positions is argmax(logits[t]) == targets[t] over t with targets[t] >= 0.
//
// Determinism: example i draws from std::mt19937_64(PromptRngSeed(seed, i))
// (kvpr.h) in this order: the N keys (sequential rejection of repeats, ids
// 1 + UniformBelow(V/2 - 1)), the N values (V/2 + UniformBelow(V - V/2),
// rejection of repeats), the N gaps (sequential weighted draws without
// replacement, u = UniformUnit), then the filler ids left to right. The
// distributions are Zoology's, the exact ids are not (numpy's generator is
// not reproduced).
//
// Labels: MQAR has no gold position class, so gold_class is -1.
#ifndef LAYERFLOW_WORKER_DATA_MQAR_H_
#define LAYERFLOW_WORKER_DATA_MQAR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow::worker {

struct MqarOptions {
  int64_t seed = 0;
  int32_t vocab_size = 8192;
  int32_t seq_len = 256;
  int32_t num_kv_pairs = 16;
  double alpha = 0.01;  // Zoology's power_a, > 0
  bool random_non_queries = true;
};

struct MqarQuery {
  int32_t position = 0;  // in the sequence, 2N + 2 * gap
  int32_t gap = 0;       // 0 .. S-1
  int32_t pair = 0;      // j: the key sits at 2j, its value at 2j + 1
  int32_t key = 0;
  int32_t value = 0;
};

struct MqarExample {
  int64_t index = 0;
  std::vector<int32_t> token_ids;  // seq_len ids in [0, vocab_size)
  std::vector<int32_t> targets;    // seq_len, value or -1
  int32_t num_tokens = 0;          // == seq_len
  int32_t gold_class = -1;         // no classes
  std::vector<MqarQuery> queries;  // sorted by position
};

class MqarDataset {
 public:
  // INVALID_ARGUMENT naming the option: vocab_size >= 4, num_kv_pairs >= 1,
  // 4 * num_kv_pairs <= seq_len (Zoology's bound), num_kv_pairs < V/2 (keys
  // from [1, V/2)) and <= V - V/2, alpha > 0.
  static absl::StatusOr<MqarDataset> Create(const MqarOptions& options);

  const MqarOptions& options() const { return options_; }
  // S = (seq_len - 2 * num_kv_pairs) / 2, the number of possible gaps.
  int32_t num_gaps() const;

  absl::StatusOr<MqarExample> Generate(int64_t index) const;
  absl::StatusOr<std::vector<MqarExample>> GenerateRange(int64_t begin, int64_t end) const;

 private:
  explicit MqarDataset(const MqarOptions& options) : options_(options) {}

  MqarOptions options_;
  std::vector<double> gap_weights_;  // (g + 1)^(alpha - 1), g = 0 .. S-1
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_MQAR_H_

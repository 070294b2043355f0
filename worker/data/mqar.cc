#include "worker/data/mqar.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/data_util.h"
#include "worker/data/kvpr.h"

namespace layerflow::worker {
namespace {

// n distinct ids base + UniformBelow(range), drawn one after another.
std::vector<int32_t> DistinctIds(std::mt19937_64& rng, int32_t n, int32_t base, int32_t range) {
  std::vector<int32_t> ids;
  std::unordered_set<int32_t> seen;
  while (static_cast<int32_t>(ids.size()) < n) {
    const int32_t id = base + static_cast<int32_t>(UniformBelow(rng, static_cast<uint64_t>(range)));
    if (seen.insert(id).second) ids.push_back(id);
  }
  return ids;
}

}  // namespace

int32_t MqarDataset::num_gaps() const { return (options_.seq_len - 2 * options_.num_kv_pairs) / 2; }

absl::StatusOr<MqarDataset> MqarDataset::Create(const MqarOptions& options) {
  const int32_t v = options.vocab_size;
  const int32_t n = options.num_kv_pairs;
  if (v < 4) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: must be >= 4 for mqar, got ", v));
  }
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_pairs: must be >= 1, got ", n));
  }
  if (options.seq_len < 4LL * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_len: must be >= 4 * num_kv_pairs = ", 4LL * n, " (pairs, then ",
                     "one query slot per pair in the rest), got ", options.seq_len));
  }
  if (n > v / 2 - 1 || n > v - v / 2) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_pairs: ", n, " distinct keys from [1, ",
                                                   v / 2, ") need vocab_size >= ", 2LL * (n + 1),
                                                   ", got vocab_size=", v));
  }
  if (!(options.alpha > 0) || !std::isfinite(options.alpha)) {
    return absl::InvalidArgumentError(absl::StrCat("alpha: must be > 0, got ", options.alpha));
  }
  MqarDataset dataset(options);
  const int32_t s = dataset.num_gaps();
  dataset.gap_weights_.resize(s);
  for (int32_t g = 0; g < s; ++g) {
    dataset.gap_weights_[g] = std::pow(static_cast<double>(g + 1), options.alpha - 1);
  }
  return dataset;
}

absl::StatusOr<MqarExample> MqarDataset::Generate(int64_t index) const {
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("mqar: example index ", index, " is negative"));
  }
  const int32_t v = options_.vocab_size;
  const int32_t n = options_.num_kv_pairs;
  const int32_t len = options_.seq_len;
  std::mt19937_64 rng(PromptRngSeed(options_.seed, index));
  const std::vector<int32_t> keys = DistinctIds(rng, n, 1, v / 2 - 1);
  const std::vector<int32_t> values = DistinctIds(rng, n, v / 2, v - v / 2);

  // Weighted draws without replacement: one pass over the remaining weights
  // per draw (S is at most seq_len / 2).
  std::vector<double> weights = gap_weights_;
  double total = 0;
  for (double w : weights) total += w;
  std::vector<int32_t> gaps;
  gaps.reserve(n);
  for (int32_t j = 0; j < n; ++j) {
    const double u = UniformUnit(rng) * total;
    double acc = 0;
    int32_t chosen = -1;
    int32_t last_left = -1;
    for (int32_t g = 0; g < static_cast<int32_t>(weights.size()); ++g) {
      if (weights[g] == 0) continue;
      last_left = g;
      acc += weights[g];
      if (u < acc) {
        chosen = g;
        break;
      }
    }
    if (chosen < 0) chosen = last_left;  // rounding at the top end
    gaps.push_back(chosen);
    total -= weights[chosen];
    weights[chosen] = 0;
    if (total <= 0) {  // recompute against drift
      total = 0;
      for (double w : weights) total += w;
    }
  }

  MqarExample example;
  example.index = index;
  example.num_tokens = len;
  example.token_ids.assign(len, -1);
  example.targets.assign(len, -1);
  for (int32_t j = 0; j < n; ++j) {
    example.token_ids[2 * j] = keys[j];
    example.token_ids[2 * j + 1] = values[j];
    MqarQuery query;
    query.gap = gaps[j];
    query.position = 2 * n + 2 * gaps[j];
    query.pair = j;
    query.key = keys[j];
    query.value = values[j];
    example.token_ids[query.position] = keys[j];
    example.targets[query.position] = values[j];
    example.queries.push_back(query);
  }
  for (int32_t t = 2 * n; t < len; ++t) {
    if (example.token_ids[t] >= 0) continue;
    example.token_ids[t] = options_.random_non_queries
                               ? static_cast<int32_t>(UniformBelow(rng, static_cast<uint64_t>(v)))
                               : 0;
  }
  std::sort(example.queries.begin(), example.queries.end(),
            [](const MqarQuery& a, const MqarQuery& b) { return a.position < b.position; });
  return example;
}

absl::StatusOr<std::vector<MqarExample>> MqarDataset::GenerateRange(int64_t begin,
                                                                    int64_t end) const {
  return GenerateRangeOf(*this, begin, end);
}

}  // namespace layerflow::worker

#include "worker/data/kvpr.h"

#include <random>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/data_util.h"

namespace layerflow::worker {
namespace {

constexpr char kInstruction[] =
    "Extract the value corresponding to the specified key in the JSON object "
    "below.\n\n";

// A UUID4 from 128 random bits: version nibble 4, variant bits 10.
std::string RandomUuid4(std::mt19937_64& rng) {
  uint8_t bytes[16];
  const uint64_t hi = rng();
  const uint64_t lo = rng();
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0f]);
  }
  return out;
}

// The pair stream of one prompt; grows lazily, never depends on N.
class PairStream {
 public:
  explicit PairStream(uint64_t rng_seed) : rng_(rng_seed) {}
  // The reference is valid until a later pair is drawn.
  const std::pair<std::string, std::string>& at(size_t j) {
    while (pairs_.size() <= j) {
      std::string key = RandomUuid4(rng_);
      while (!keys_.insert(key).second) key = RandomUuid4(rng_);
      std::string value = RandomUuid4(rng_);
      pairs_.emplace_back(std::move(key), std::move(value));
    }
    return pairs_[j];
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::pair<std::string, std::string>> pairs_;
  std::unordered_set<std::string> keys_;
};

std::string BuildPrompt(PairStream& pairs, int32_t num_pairs, int32_t gold_position) {
  pairs.at(num_pairs - 1);  // draw the whole prefix before taking references
  const std::string& gold_key = pairs.at(gold_position).first;
  std::string text = absl::StrCat(kInstruction, "Key: \"", gold_key, "\"\n\nJSON data:\n{");
  for (int32_t j = 0; j < num_pairs; ++j) {
    const auto& [key, value] = pairs.at(j);
    absl::StrAppend(&text, j == 0 ? "" : ", ", "\"", key, "\": \"", value, "\"");
  }
  absl::StrAppend(&text, "}\n\nKey: \"", gold_key, "\"\nCorresponding value:");
  return text;
}

}  // namespace

uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t PromptRngSeed(int64_t seed, int64_t index) {
  return SplitMix64(SplitMix64(static_cast<uint64_t>(seed)) + static_cast<uint64_t>(index));
}

int32_t KvprGoldPosition(int32_t gold_class, int32_t num_classes, int32_t num_pairs) {
  if (num_classes <= 1) return 0;
  const int64_t num = 2LL * gold_class * (num_pairs - 1) + (num_classes - 1);
  return static_cast<int32_t>(num / (2LL * (num_classes - 1)));
}

absl::StatusOr<KvprDataset> KvprDataset::Create(const KvprOptions& options,
                                                std::shared_ptr<const Tokenizer> tokenizer) {
  if (tokenizer == nullptr) {
    return absl::InvalidArgumentError("kvpr: no tokenizer");
  }
  if (options.num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes: must be >= 1 for kvpr, got ", options.num_classes));
  }
  if (options.context_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length: must be >= 1, got ", options.context_length));
  }
  KvprDataset dataset(options, std::move(tokenizer));
  auto first = dataset.Generate(0);
  if (!first.ok()) return first.status();
  dataset.num_pairs_ = first->num_pairs;
  return dataset;
}

absl::StatusOr<KvprExample> KvprDataset::Generate(int64_t index) const {
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("kvpr: prompt index ", index, " is negative"));
  }
  const int32_t classes = options_.num_classes;
  const int32_t gold_class = static_cast<int32_t>(index % classes);
  PairStream pairs(PromptRngSeed(options_.seed, index));
  auto length = [&](int32_t n) {
    const int32_t gold = KvprGoldPosition(gold_class, classes, n);
    return static_cast<int64_t>(tokenizer_->Encode(BuildPrompt(pairs, n, gold)).size());
  };

  // Largest N with length(N) <= context_length. Length grows with N, so
  // double to bracket it, then bisect: fits(lo), !fits(hi).
  const int64_t target = options_.context_length;
  if (length(classes) > target) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length: ", target, " tokens cannot hold ", classes,
                     " key-value pairs (one per gold position, num_classes=", classes,
                     "); the KVPR prompt needs at least ", length(classes), " tokens with the ",
                     tokenizer_->name(), " tokenizer"));
  }
  int32_t lo = classes;
  int32_t hi = classes * 2;
  while (length(hi) <= target) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const int32_t mid = lo + (hi - lo) / 2;
    (length(mid) <= target ? lo : hi) = mid;
  }

  KvprExample example;
  example.index = index;
  example.num_pairs = lo;
  example.gold_class = gold_class;
  example.gold_position = KvprGoldPosition(gold_class, classes, lo);
  example.gold_key = pairs.at(example.gold_position).first;
  example.gold_value = pairs.at(example.gold_position).second;
  example.text = BuildPrompt(pairs, lo, example.gold_position);
  example.token_ids = tokenizer_->Encode(example.text);
  example.num_tokens = static_cast<int32_t>(example.token_ids.size());
  return example;
}

absl::StatusOr<std::vector<KvprExample>> KvprDataset::GenerateRange(int64_t begin,
                                                                    int64_t end) const {
  return GenerateRangeOf(*this, begin, end);
}

}  // namespace layerflow::worker

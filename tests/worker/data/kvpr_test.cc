#include "worker/data/kvpr.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

KvprDataset MakeDataset(int64_t seed, int32_t classes, int32_t context) {
  KvprOptions options;
  options.seed = seed;
  options.num_classes = classes;
  options.context_length = context;
  auto dataset = KvprDataset::Create(options, std::make_shared<ByteTokenizer>());
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

TEST(KvprTest, SplitMix64MatchesReferenceValue) {
  // First output of Vigna's splitmix64 with state 0.
  EXPECT_EQ(SplitMix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_NE(PromptRngSeed(1, 0), PromptRngSeed(0, 1));
}

TEST(KvprTest, GoldPositionsEvenlySpacedFirstAndLastIncluded) {
  // N = 21, C = 11: every other pair.
  for (int c = 0; c < 11; ++c) EXPECT_EQ(KvprGoldPosition(c, 11, 21), 2 * c);
  // N = 4, C = 3: 0, round(1.5) = 2 (half up), 3.
  EXPECT_EQ(KvprGoldPosition(0, 3, 4), 0);
  EXPECT_EQ(KvprGoldPosition(1, 3, 4), 2);
  EXPECT_EQ(KvprGoldPosition(2, 3, 4), 3);
  EXPECT_EQ(KvprGoldPosition(0, 1, 7), 0);
}

TEST(KvprTest, SameSeedSamePromptsInAnyOrder) {
  KvprDataset a = MakeDataset(42, 5, 1500);
  KvprDataset b = MakeDataset(42, 5, 1500);
  auto forward = a.GenerateRange(0, 12);
  ASSERT_TRUE(forward.ok());
  // Chunk 3 alone, then the rest backwards, on another instance.
  auto chunk = b.GenerateRange(9, 12);
  ASSERT_TRUE(chunk.ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*chunk)[i].text, (*forward)[9 + i].text);
  for (int64_t i = 11; i >= 0; --i) {
    auto one = b.Generate(i);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->text, (*forward)[i].text);
    EXPECT_EQ(one->token_ids, (*forward)[i].token_ids);
    EXPECT_EQ(one->gold_position, (*forward)[i].gold_position);
  }
  KvprDataset other = MakeDataset(43, 5, 1500);
  EXPECT_NE(other.Generate(0)->text, (*forward)[0].text);
  EXPECT_NE((*forward)[0].text, (*forward)[1].text);
}

TEST(KvprTest, LengthFitsTargetAndIsClose) {
  for (int32_t context : {1100, 1500, 2048, 4096}) {
    KvprDataset dataset = MakeDataset(7, 11, context);
    auto examples = dataset.GenerateRange(0, 11);
    ASSERT_TRUE(examples.ok());
    for (const KvprExample& e : *examples) {
      EXPECT_LE(e.num_tokens, context);
      // One more pair adds exactly 80 bytes: ", " + "<36>": "<36>" (2 + 78).
      EXPECT_GT(e.num_tokens, context - 80);
      EXPECT_EQ(e.num_tokens, static_cast<int32_t>(e.token_ids.size()));
      EXPECT_EQ(e.num_pairs, dataset.num_pairs());
    }
  }
}

TEST(KvprTest, ClassesBalancedAndPositionsCoverFirstAndLast) {
  KvprDataset dataset = MakeDataset(3, 11, 2048);
  auto examples = dataset.GenerateRange(0, 33);
  ASSERT_TRUE(examples.ok());
  std::map<int32_t, int> per_class;
  std::set<int32_t> positions;
  for (const KvprExample& e : *examples) {
    EXPECT_EQ(e.gold_class, e.index % 11);
    ++per_class[e.gold_class];
    positions.insert(e.gold_position);
  }
  ASSERT_EQ(per_class.size(), 11u);
  for (const auto& [c, n] : per_class) EXPECT_EQ(n, 3) << "class " << c;
  EXPECT_EQ(positions.size(), 11u);
  EXPECT_EQ(*positions.begin(), 0);
  EXPECT_EQ(*positions.rbegin(), dataset.num_pairs() - 1);
}

TEST(KvprTest, JsonWellFormedWithGoldKeyAtStatedPosition) {
  const std::regex uuid4("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  KvprDataset dataset = MakeDataset(11, 11, 2048);
  auto examples = dataset.GenerateRange(0, 11);
  ASSERT_TRUE(examples.ok());
  for (const KvprExample& e : *examples) {
    const std::string open = "JSON data:\n";
    const size_t begin = e.text.find(open);
    const size_t end = e.text.find("\n\nKey: ", begin);
    ASSERT_NE(begin, std::string::npos);
    ASSERT_NE(end, std::string::npos);
    // ordered_json keeps the order of the pairs as written.
    const auto json = nlohmann::ordered_json::parse(
        e.text.substr(begin + open.size(), end - begin - open.size()));
    ASSERT_TRUE(json.is_object());
    ASSERT_EQ(static_cast<int32_t>(json.size()), e.num_pairs);
    int32_t position = 0;
    for (const auto& [key, value] : json.items()) {
      EXPECT_TRUE(std::regex_match(key, uuid4)) << key;
      EXPECT_TRUE(std::regex_match(value.get<std::string>(), uuid4));
      if (position == e.gold_position) {
        EXPECT_EQ(key, e.gold_key);
        EXPECT_EQ(value.get<std::string>(), e.gold_value);
      }
      ++position;
    }
    // The question is stated before and after the JSON.
    const std::string question = "Key: \"" + e.gold_key + "\"";
    const size_t first = e.text.find(question);
    ASSERT_NE(first, std::string::npos);
    EXPECT_LT(first, begin);
    EXPECT_GT(e.text.find(question, end), end);
    EXPECT_EQ(e.text.substr(e.text.size() - 20), "Corresponding value:");
  }
}

TEST(KvprTest, TooShortContextNamesTheField) {
  KvprOptions options;
  options.num_classes = 11;
  options.context_length = 256;
  auto dataset = KvprDataset::Create(options, std::make_shared<ByteTokenizer>());
  ASSERT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dataset.status().message().find("context_length"), std::string::npos);
  options.num_classes = 0;
  options.context_length = 2048;
  dataset = KvprDataset::Create(options, std::make_shared<ByteTokenizer>());
  ASSERT_EQ(dataset.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dataset.status().message().find("num_classes"), std::string::npos);
}

}  // namespace
}  // namespace layerflow::worker

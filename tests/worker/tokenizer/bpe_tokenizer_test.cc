// Hand-worked cases of the byte-level BPE tokenizer on a tiny tokenizer.json
// built here: ids 0..255 are the bytes, then a handful of merges.
#include "worker/tokenizer/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace layerflow::worker {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int32_t>;
using ::layerflow::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// GPT-2's byte -> code point map, written out independently of the library.
std::string ByteChar(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int k = 0; k < b; ++k) {
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE)) ++cp;
    }
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

constexpr int32_t kHe = 256, kLl = 257, kHell = 258, kHello = 259, kSpaceW = 260, kEot = 261,
                  kPad = 262;

Json TinyConfig(bool pair_merges = false) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {ByteChar(' '), "w"}};
  Json merges_json = Json::array();
  int32_t id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merges_json.push_back(pair_merges ? Json::array({a, b}) : Json(a + " " + b));
  }
  return Json{
      {"version", "1.0"},
      {"added_tokens", Json::array({
                           {{"id", kEot},
                            {"content", "<|endoftext|>"},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", true}},
                           {{"id", kPad},
                            {"content", "<pad>"},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", true}},
                       })},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges_json}}},
  };
}

std::unique_ptr<Tokenizer> Load(const Json& config) {
  auto tok = LoadBpeTokenizerFromJson(config.dump(), "tiny.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

TEST(BpeTokenizerTest, KnownMergesGiveKnownIds) {
  for (bool pair_merges : {false, true}) {
    SCOPED_TRACE(pair_merges ? "[a, b] merges" : "\"a b\" merges");
    auto tok = Load(TinyConfig(pair_merges));
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->name(), "bpe");
    EXPECT_EQ(tok->vocab_size(), 263);
    EXPECT_EQ(tok->Encode("hello"), (Ids{kHello}));
    // " hello" is one word "Ġhello": no merge joins the space to "hello".
    EXPECT_EQ(tok->Encode("hello hello"), (Ids{kHello, ' ', kHello}));
    EXPECT_EQ(tok->Encode(" world"), (Ids{kSpaceW, 'o', 'r', 'l', 'd'}));
    // Lowest rank first, leftmost on ties: "lll" -> "ll" + "l".
    EXPECT_EQ(tok->Encode("lll"), (Ids{kLl, 'l'}));
    EXPECT_EQ(tok->Encode("help"), (Ids{kHe, 'l', 'p'}));
    EXPECT_EQ(tok->Encode("hell"), (Ids{kHell}));
    // Contractions and punctuation are their own words.
    EXPECT_EQ(tok->Encode("he's!"), (Ids{kHe, '\'', 's', '!'}));
  }
}

TEST(BpeTokenizerTest, SpecialTokenInTheMiddle) {
  auto tok = Load(TinyConfig());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("hello<|endoftext|>hello"), (Ids{kHello, kEot, kHello}));
  EXPECT_EQ(tok->Encode("he <pad><|endoftext|> w"), (Ids{kHe, ' ', kPad, kEot, kSpaceW}));
  // A partial special token is ordinary text.
  EXPECT_EQ(tok->Encode("<pad"), (Ids{'<', 'p', 'a', 'd'}));
  EXPECT_EQ(*tok->Decode({kHello, kEot, kSpaceW}), "hello<|endoftext|> w");
}

TEST(BpeTokenizerTest, EmptyString) {
  auto tok = Load(TinyConfig());
  ASSERT_NE(tok, nullptr);
  EXPECT_TRUE(tok->Encode("").empty());
  EXPECT_EQ(*tok->Decode({}), "");
}

TEST(BpeTokenizerTest, EveryByteRoundTrips) {
  auto tok = Load(TinyConfig());
  ASSERT_NE(tok, nullptr);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    const std::string byte(1, static_cast<char>(b));
    auto decoded = tok->Decode({b});
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, byte) << "byte " << b;
    all += byte;
  }
  // Not valid UTF-8, yet Encode is total and Decode inverts it.
  EXPECT_EQ(*tok->Decode(tok->Encode(all)), all);
  for (const char* text : {"\xff\xfe hello", "caf\xc3", "\xe2\x82", "a\x80\x80 b"}) {
    EXPECT_EQ(*tok->Decode(tok->Encode(text)), text);
  }
}

TEST(BpeTokenizerTest, DecodeRejectsUnknownIds) {
  auto tok = Load(TinyConfig());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode({5, 263}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->Decode({-1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BpeTokenizerTest, WhitespaceRuns) {
  auto tok = Load(TinyConfig());
  ASSERT_NE(tok, nullptr);
  // "\s+(?!\S)" leaves the last space of a run to prefix the next word.
  EXPECT_EQ(tok->Encode("a   w"), (Ids{'a', ' ', ' ', kSpaceW}));
  EXPECT_EQ(tok->Encode("a\t\tw"), (Ids{'a', '\t', '\t', 'w'}));
  EXPECT_EQ(tok->Encode("a  "), (Ids{'a', ' ', ' '}));
}

TEST(BpeTokenizerTest, AddedTokenFlags) {
  Json config = TinyConfig();
  config["added_tokens"].push_back({{"id", 263},
                                    {"content", "<m>"},
                                    {"single_word", false},
                                    {"lstrip", true},
                                    {"rstrip", true},
                                    {"normalized", false},
                                    {"special", true}});
  config["added_tokens"].push_back({{"id", 264},
                                    {"content", "ll"},
                                    {"single_word", true},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", true},
                                    {"special", false}});
  auto tok = Load(config);
  ASSERT_NE(tok, nullptr);
  // lstrip/rstrip swallow the spaces around the token.
  EXPECT_EQ(tok->Encode("he  <m>  he"), (Ids{kHe, 263, kHe}));
  // single_word: only where "ll" is not inside a word.
  EXPECT_EQ(tok->Encode("ll"), (Ids{264}));
  EXPECT_EQ(tok->Encode("hell"), (Ids{kHell}));
  EXPECT_EQ(tok->Encode("a ll."), (Ids{'a', ' ', 264, '.'}));
}

TEST(BpeTokenizerTest, NfcNormalizer) {
  Json config = TinyConfig();
  config["normalizer"] = {{"type", "NFC"}};
  auto tok = Load(config);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("e\xcc\x81"), tok->Encode("\xc3\xa9"));  // e + U+0301 -> U+00E9
  EXPECT_EQ(*tok->Decode(tok->Encode("e\xcc\x81")), "\xc3\xa9");
}

// Errors name the file (or source) and the key.
void ExpectError(const Json& config, absl::StatusCode code, const std::string& key) {
  auto tok = LoadBpeTokenizerFromJson(config.dump(), "bad.json");
  ASSERT_FALSE(tok.ok()) << key;
  EXPECT_THAT(tok.status(), StatusIs(code, AllOf(HasSubstr("bad.json"), HasSubstr(key))));
}

// A checkpoint directory without tokenizer.json has no tokenizer of its own
// (null: the caller's default); one whose tokenizer.json cannot be read as a
// file is an error naming it, not a silent fallback to the default.
TEST(BpeTokenizerTest, CheckpointTokenizerAbsentOrUnreadable) {
  absl::StatusOr<std::string> dir = MakeTempPath("lf_tokenizer", /*directory=*/true);
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> none = LoadCheckpointTokenizer(*dir);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, nullptr);
  const std::string path = *dir + "/tokenizer.json";
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);  // a directory where the file should be
  absl::StatusOr<std::unique_ptr<Tokenizer>> bad = LoadCheckpointTokenizer(*dir);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path), std::string::npos) << bad.status();
  RemoveTree(*dir);
}

TEST(BpeTokenizerTest, Errors) {
  {
    auto tok = LoadBpeTokenizer("/nonexistent/tokenizer.json");
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(tok.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
  }
  {
    auto tok = LoadBpeTokenizerFromJson("{\"model\": [1, 2", "bad.json");
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos);
  }
  Json config = TinyConfig();
  config["model"]["type"] = "WordPiece";
  ExpectError(config, absl::StatusCode::kUnimplemented, "model.type");

  config = TinyConfig();
  config["normalizer"] = {{"type", "Lowercase"}};
  ExpectError(config, absl::StatusCode::kUnimplemented, "normalizer.type");

  config = TinyConfig();
  config["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectError(config, absl::StatusCode::kUnimplemented, "pre_tokenizer.type");

  config = TinyConfig();
  config["model"]["merges"].push_back("hello w");  // "hellow" is not in the vocab
  ExpectError(config, absl::StatusCode::kInvalidArgument, "model.merges[5]");

  config = TinyConfig();
  config["model"]["merges"].push_back("x y z");
  ExpectError(config, absl::StatusCode::kInvalidArgument, "model.merges[5]");

  config = TinyConfig();
  config["model"].erase("vocab");
  ExpectError(config, absl::StatusCode::kInvalidArgument, "model.vocab");

  config = TinyConfig();
  config["model"]["dropout"] = 0.1;
  ExpectError(config, absl::StatusCode::kUnimplemented, "model.dropout");

  config = TinyConfig();
  config["added_tokens"][0]["id"] = "zero";
  ExpectError(config, absl::StatusCode::kInvalidArgument, "added_tokens[0].id");
}

}  // namespace
}  // namespace layerflow::worker

#include "worker/tokenizer/byte_tokenizer.h"

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace layerflow::worker {
namespace {

TEST(ByteTokenizerTest, EncodesUtf8BytesAsIds) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 256);
  // "é" is C3 A9 in UTF-8; bytes >= 0x80 must not come out negative.
  EXPECT_EQ(tok.Encode("a\xc3\xa9"), (std::vector<int32_t>{97, 195, 169}));
  EXPECT_TRUE(tok.Encode("").empty());
}

TEST(ByteTokenizerTest, RoundTripsEveryByteAndUnicode) {
  ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  for (const std::string& text :
       {all, std::string("Key: \"9f1c\" — 日本語 🙂\n"), std::string()}) {
    auto decoded = tok.Decode(tok.Encode(text));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
  }
}

TEST(ByteTokenizerTest, RejectsIdsOutsideVocab) {
  ByteTokenizer tok;
  for (int32_t bad : {-1, 256, 1000}) {
    auto decoded = tok.Decode({65, bad});
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(decoded.status().message().find("position 1"), std::string::npos);
  }
}

}  // namespace
}  // namespace layerflow::worker

// Parity with the reference `tokenizers` library: make_bpe_fixture.py writes
// tokenizer.json variants and the reference ids of >= 10,000 strings each
// into $LAYERFLOW_BPE_FIXTURE_DIR. Every string must encode to the same ids,
// decode to what the reference decodes (added tokens kept verbatim), and,
// for configs without normalizer or prefix space, decode back to itself.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/tokenizer/bpe_tokenizer.h"

namespace layerflow::worker {
namespace {

using Json = nlohmann::json;

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;  // the reference's decoding of `ids`
};

std::string Escaped(const std::string& text) {
  // JSON string escaping makes whitespace and control bytes visible.
  return Json(text).dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string IdList(const std::vector<int32_t>& ids) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? ", " : "") << ids[i];
  out << "]";
  return out.str();
}

std::string FixtureDir() {
  const char* dir = std::getenv("LAYERFLOW_BPE_FIXTURE_DIR");
  return dir == nullptr ? "" : dir;
}

std::vector<Case> ReadCases(const std::string& path) {
  std::vector<Case> cases;
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::string line;
  while (std::getline(in, line)) {
    const Json record = Json::parse(line);
    cases.push_back({record.at("text").get<std::string>(),
                     record.at("ids").get<std::vector<int32_t>>(),
                     record.at("decoded").get<std::string>()});
  }
  return cases;
}

class BpeParityTest : public testing::TestWithParam<std::string> {};

TEST_P(BpeParityTest, MatchesReferenceTokenForToken) {
  const std::string dir = FixtureDir();
  ASSERT_FALSE(dir.empty()) << "LAYERFLOW_BPE_FIXTURE_DIR is not set";
  const std::string name = GetParam();
  std::ifstream manifest_in(dir + "/manifest.json");
  ASSERT_TRUE(manifest_in) << "cannot open " << dir << "/manifest.json";
  const bool round_trip =
      Json::parse(manifest_in).at("configs").at(name).at("round_trip").get<bool>();
  auto tok = LoadBpeTokenizer(dir + "/tokenizer_" + name + ".json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<Case> cases = ReadCases(dir + "/fixture_" + name + ".jsonl");
  ASSERT_GE(cases.size(), 10000u);

  // Encode everything first, cold cache, to time it.
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> encoded;
  encoded.reserve(cases.size());
  for (const Case& c : cases) encoded.push_back((*tok)->Encode(c.text));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  constexpr int kShown = 5;
  int mismatches = 0;
  int decode_failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    if (encoded[i] != c.ids && ++mismatches <= kShown) {
      ADD_FAILURE() << name << " line " << i + 1 << ": " << Escaped(c.text)
                    << "\n  reference: " << IdList(c.ids)
                    << "\n  ours:      " << IdList(encoded[i]);
    }
    auto decoded = (*tok)->Decode(encoded[i]);
    const std::string& expected = round_trip ? c.text : c.decoded;
    if ((!decoded.ok() || *decoded != expected || c.decoded != expected) &&
        ++decode_failures <= kShown) {
      ADD_FAILURE() << name << " line " << i + 1 << ": " << Escaped(c.text)
                    << "\n  Decode(Encode(s)): "
                    << (decoded.ok() ? Escaped(*decoded) : decoded.status().ToString())
                    << "\n  expected:          " << Escaped(expected)
                    << "\n  reference decode:  " << Escaped(c.decoded);
    }
  }
  std::printf(
      "[ parity   ] %s: %zu strings, %d id mismatches, %d decode mismatches%s, "
      "encoded in %.3f s\n",
      name.c_str(), cases.size(), mismatches, decode_failures,
      round_trip ? " (checked Decode(Encode(s)) == s)" : "", seconds);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(decode_failures, 0);
  // Generous bound (shared CI machines); typically a few tens of ms.
  EXPECT_LT(seconds, 5.0);
}

INSTANTIATE_TEST_SUITE_P(Configs, BpeParityTest, testing::Values("gpt2", "neox", "sequence"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace layerflow::worker

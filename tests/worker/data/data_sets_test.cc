// MDQA, MQAR and Text data sets, and the catalog's fit check against them
// (plain C++).
#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "catalog/datasets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "worker/data/datasets.h"
#include "worker/data/kvpr.h"
#include "worker/data/mdqa.h"
#include "worker/data/mqar.h"
#include "worker/data/text.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::shared_ptr<const Tokenizer> Bytes() { return std::make_shared<ByteTokenizer>(); }

// Writes `contents` to a fresh file under the test temp dir.
std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/lf_data_", ::getpid(), "_", name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  return path;
}

// A parsed "Document [k](Title: T) text" line.
struct ParsedDoc {
  int number = 0;
  std::string title;
  std::string text;
};

// Parses the documents of an MDQA prompt back out of its text, checking the
// fixed frame (instruction, blank lines, "Question: ...\nAnswer:").
std::vector<ParsedDoc> ParsePrompt(const std::string& text, std::string* question) {
  std::vector<ParsedDoc> docs;
  const std::string instruction =
      "Write a high-quality answer for the given question using only the "
      "provided search results (some of which might be irrelevant).\n\n";
  EXPECT_EQ(text.substr(0, instruction.size()), instruction);
  size_t pos = instruction.size();
  while (text.compare(pos, 10, "Document [") == 0) {
    const size_t end = text.find('\n', pos);
    const std::string line = text.substr(pos, end - pos);
    ParsedDoc doc;
    const size_t close = line.find("](Title: ");
    doc.number = std::stoi(line.substr(10, close - 10));
    const size_t title_end = line.find(") ", close);
    doc.title = line.substr(close + 9, title_end - close - 9);
    doc.text = line.substr(title_end + 2);
    docs.push_back(doc);
    pos = end + 1;
  }
  EXPECT_EQ(text.compare(pos, 11, "\nQuestion: "), 0);
  const size_t answer = text.rfind("\nAnswer:");
  EXPECT_EQ(answer + 8, text.size());
  *question = text.substr(pos + 11, answer - pos - 11);
  return docs;
}

// ------------------------------------------- the catalog's fit check

// The coordinator checks at submit, without building a data set, whether a
// context can hold a data set (catalog::CheckContextFits). Against the real
// generators with the byte tokenizer: KVPR's minimum is exact, MDQA's a
// lower bound that every generated prompt respects (and is near).
TEST(DatasetsTest, CatalogKvprMinimumIsTheGeneratorsExactly) {
  for (int32_t classes : {1, 2, 5, 11, 40}) {
    const int64_t min = catalog::MinContextLength("kvpr", classes);
    for (int64_t seed : {0, 3}) {
      auto fits = CreateJobDataset({.name = "kvpr",
                                    .seed = seed,
                                    .num_classes = classes,
                                    .context_length = static_cast<int32_t>(min)},
                                   Bytes());
      ASSERT_TRUE(fits.ok()) << classes << ": " << fits.status();
      auto prompts = (*fits)(0, classes);
      ASSERT_TRUE(prompts.ok()) << prompts.status();
      // At the minimum every prompt holds exactly num_classes pairs.
      for (const Prompt& p : *prompts) EXPECT_EQ(p.num_tokens, min) << classes;
      const absl::Status short_by_one =
          CreateJobDataset({.name = "kvpr",
                            .seed = seed,
                            .num_classes = classes,
                            .context_length = static_cast<int32_t>(min - 1)},
                           Bytes())
              .status();
      EXPECT_EQ(
          short_by_one.message(),
          catalog::CheckContextFits("kvpr", classes, static_cast<int32_t>(min - 1)).message());
    }
  }
}

TEST(DatasetsTest, CatalogMdqaMinimumBoundsEveryGeneratedPrompt) {
  for (int32_t classes : {2, 5, 11}) {
    const int64_t bound = catalog::MinContextLength("mdqa", classes);
    int64_t shortest = std::numeric_limits<int64_t>::max();
    for (int64_t seed = 0; seed < 8; ++seed) {
      auto dataset = MdqaDataset::Create(
          {.seed = seed, .num_classes = classes, .num_documents = classes}, Bytes());
      ASSERT_TRUE(dataset.ok()) << dataset.status();
      for (int64_t i = 0; i < 2 * classes; ++i) {
        auto example = dataset->Generate(i);
        ASSERT_TRUE(example.ok()) << example.status();
        EXPECT_GE(example->num_tokens, bound) << classes << " seed " << seed << " #" << i;
        shortest = std::min<int64_t>(shortest, example->num_tokens);
      }
    }
    // A bound, but not a loose one: within 25% of the shortest prompt drawn.
    EXPECT_GT(static_cast<double>(bound), 0.75 * static_cast<double>(shortest)) << classes;
  }
}

TEST(DatasetsTest, CatalogMqarShapeIsWhatTheJobRuns) {
  auto dataset =
      CreateJobDataset({.name = "mqar", .context_length = 64, .model_vocab_size = 512}, Bytes());
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  auto prompts = (*dataset)(0, 1);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  EXPECT_EQ(prompts->at(0).num_tokens, 64);
  EXPECT_EQ(catalog::MqarKvPairs(64), 16);
  EXPECT_EQ(catalog::MqarVocabSize(512), 512);
  // Every id inside the first MqarVocabSize ids of the model's vocabulary.
  for (int32_t id : prompts->at(0).token_ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 512);
  }
}

// ---------------------------------------------------------------- MQAR

MqarDataset MakeMqar(const MqarOptions& options) {
  auto dataset = MqarDataset::Create(options);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

TEST(MqarTest, SameSeedSameSequencesInAnyOrderOtherSeedDiffers) {
  MqarOptions options;
  options.seed = 5;
  MqarDataset a = MakeMqar(options);
  MqarDataset b = MakeMqar(options);
  auto forward = a.GenerateRange(0, 8);
  ASSERT_TRUE(forward.ok());
  for (int64_t i = 7; i >= 0; --i) {
    auto one = b.Generate(i);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->token_ids, (*forward)[i].token_ids);
    EXPECT_EQ(one->targets, (*forward)[i].targets);
  }
  options.seed = 6;
  MqarDataset other = MakeMqar(options);
  EXPECT_NE(other.Generate(0)->token_ids, (*forward)[0].token_ids);
  EXPECT_NE((*forward)[0].token_ids, (*forward)[1].token_ids);
}

void CheckMqarExample(const MqarOptions& o, const MqarExample& e) {
  const int32_t v = o.vocab_size;
  const int32_t n = o.num_kv_pairs;
  ASSERT_EQ(static_cast<int32_t>(e.token_ids.size()), o.seq_len);
  ASSERT_EQ(static_cast<int32_t>(e.targets.size()), o.seq_len);
  EXPECT_EQ(e.num_tokens, o.seq_len);
  EXPECT_EQ(e.gold_class, -1);
  for (int32_t id : e.token_ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, v);
  }
  // Pairs first: keys from [1, V/2), values from [V/2, V), all distinct.
  std::map<int32_t, int32_t> value_of;  // key -> value
  std::map<int32_t, int32_t> pair_of;   // key -> pair index
  std::set<int32_t> values;
  for (int32_t j = 0; j < n; ++j) {
    const int32_t key = e.token_ids[2 * j];
    const int32_t value = e.token_ids[2 * j + 1];
    EXPECT_GE(key, 1);
    EXPECT_LT(key, v / 2);
    EXPECT_GE(value, v / 2);
    EXPECT_LT(value, v);
    EXPECT_TRUE(value_of.emplace(key, value).second) << "repeated key";
    EXPECT_TRUE(values.insert(value).second) << "repeated value";
    pair_of[key] = j;
    EXPECT_EQ(e.targets[2 * j], -1);
    EXPECT_EQ(e.targets[2 * j + 1], -1);
  }
  // Each target: a query of a key seen earlier, target = its value; every
  // key queried exactly once, at an even offset into the query region.
  std::set<int32_t> queried;
  std::vector<int32_t> query_positions;
  for (int32_t t = 2 * n; t < o.seq_len; ++t) {
    if (e.targets[t] < 0) {
      if (!o.random_non_queries) {
        EXPECT_EQ(e.token_ids[t], 0) << t;
      }
      continue;
    }
    EXPECT_EQ((t - 2 * n) % 2, 0) << t;
    const int32_t key = e.token_ids[t];
    ASSERT_TRUE(value_of.count(key)) << "query of an unknown key at " << t;
    EXPECT_EQ(e.targets[t], value_of[key]) << t;
    EXPECT_EQ(e.token_ids[2 * pair_of[key]], key);
    EXPECT_EQ(e.token_ids[2 * pair_of[key] + 1], e.targets[t]);
    EXPECT_TRUE(queried.insert(key).second) << "key queried twice";
    query_positions.push_back(t);
  }
  EXPECT_EQ(static_cast<int32_t>(queried.size()), n);
  // The reported queries match the targets.
  ASSERT_EQ(static_cast<int32_t>(e.queries.size()), n);
  for (int32_t q = 0; q < n; ++q) {
    const MqarQuery& query = e.queries[q];
    EXPECT_EQ(query.position, query_positions[q]);
    EXPECT_EQ(query.position, 2 * n + 2 * query.gap);
    EXPECT_EQ(query.key, e.token_ids[query.position]);
    EXPECT_EQ(query.value, e.targets[query.position]);
    EXPECT_EQ(e.token_ids[2 * query.pair], query.key);
    EXPECT_EQ(e.token_ids[2 * query.pair + 1], query.value);
  }
}

TEST(MqarTest, QueriesTargetTheValuePairedWithTheKeyEarlier) {
  for (bool random_fill : {true, false}) {
    for (auto [v, len, n] : std::vector<std::tuple<int, int, int>>{
             {8192, 256, 16}, {64, 128, 8}, {8, 17, 3}, {1024, 64, 16}}) {
      MqarOptions options;
      options.seed = 11;
      options.vocab_size = v;
      options.seq_len = len;
      options.num_kv_pairs = n;
      options.random_non_queries = random_fill;
      MqarDataset dataset = MakeMqar(options);
      auto examples = dataset.GenerateRange(0, 20);
      ASSERT_TRUE(examples.ok());
      for (const MqarExample& e : *examples) CheckMqarExample(options, e);
    }
  }
}

TEST(MqarTest, GapsFollowThePowerLaw) {
  // S = (256 - 2*8)/2 = 120 gaps. alpha = 0.01: P(g) ~ (g+1)^-0.99, so the
  // first 10 gaps take far more draws than the last 60; alpha = 1: uniform.
  auto histogram = [](double alpha) {
    MqarOptions options;
    options.seed = 3;
    options.vocab_size = 1024;
    options.seq_len = 256;
    options.num_kv_pairs = 8;
    options.alpha = alpha;
    MqarDataset dataset = MakeMqar(options);
    EXPECT_EQ(dataset.num_gaps(), 120);
    std::vector<int> count(120, 0);
    auto examples = dataset.GenerateRange(0, 500);
    EXPECT_TRUE(examples.ok());
    for (const MqarExample& e : *examples) {
      for (const MqarQuery& q : e.queries) ++count[q.gap];
    }
    return count;
  };
  auto sum = [](const std::vector<int>& c, int from, int to) {
    int s = 0;
    for (int g = from; g < to; ++g) s += c[g];
    return s;
  };
  const std::vector<int> skewed = histogram(0.01);
  EXPECT_GT(sum(skewed, 0, 10), sum(skewed, 60, 120));
  EXPECT_GT(skewed[0], 4 * skewed[119] + 1);
  const std::vector<int> uniform = histogram(1.0);
  // 4000 draws over 120 gaps: each half gets about 2000.
  EXPECT_NEAR(sum(uniform, 0, 60), 2000, 200);
}

TEST(MqarTest, BadOptionsNameTheField) {
  auto expect_error = [](MqarOptions options, const std::string& field) {
    auto dataset = MqarDataset::Create(options);
    ASSERT_THAT(dataset.status(), StatusIs(absl::StatusCode::kInvalidArgument, field));
  };
  MqarOptions o;
  o.seq_len = 60;  // < 4 * 16
  expect_error(o, "seq_len");
  o = MqarOptions();
  o.vocab_size = 32;  // 16 keys from [1, 16) impossible
  expect_error(o, "num_kv_pairs");
  o = MqarOptions();
  o.num_kv_pairs = 0;
  expect_error(o, "num_kv_pairs");
  o = MqarOptions();
  o.alpha = 0;
  expect_error(o, "alpha");
  o = MqarOptions();
  o.vocab_size = 2;
  expect_error(o, "vocab_size");
}

// ---------------------------------------------------------------- MDQA

MdqaDataset MakeMdqa(const MdqaOptions& options) {
  auto dataset = MdqaDataset::Create(options, Bytes());
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

// Parses the prompt back and checks it against the example's fields; the
// gold document is found by content (`is_gold`), independently of the
// reported position.
template <typename IsGold>
void CheckMdqaPrompt(const MdqaExample& e, int32_t classes, IsGold is_gold) {
  EXPECT_EQ(e.num_tokens, static_cast<int32_t>(e.token_ids.size()));
  EXPECT_EQ(e.token_ids, ByteTokenizer().Encode(e.text));
  EXPECT_EQ(e.gold_class, e.index % classes);
  EXPECT_EQ(e.gold_position, KvprGoldPosition(e.gold_class, classes, e.num_documents));
  std::string question;
  const std::vector<ParsedDoc> docs = ParsePrompt(e.text, &question);
  EXPECT_EQ(question, e.question);
  ASSERT_EQ(static_cast<int32_t>(docs.size()), e.num_documents);
  ASSERT_EQ(e.documents.size(), docs.size());
  ASSERT_EQ(e.document_offsets.size(), docs.size());
  int gold_found = -1;
  for (size_t k = 0; k < docs.size(); ++k) {
    EXPECT_EQ(docs[k].number, static_cast<int>(k) + 1);
    EXPECT_EQ(docs[k].title, e.documents[k].title);
    EXPECT_EQ(docs[k].text, e.documents[k].text);
    EXPECT_EQ(e.text.compare(e.document_offsets[k], 10, "Document ["), 0);
    if (is_gold(docs[k])) {
      EXPECT_EQ(gold_found, -1) << "two gold documents";
      gold_found = static_cast<int>(k);
    }
  }
  EXPECT_EQ(gold_found, e.gold_position) << e.text;
}

TEST(MdqaSyntheticTest, SameSeedSamePromptsInAnyOrderOtherSeedDiffers) {
  MdqaOptions options;
  options.seed = 9;
  MdqaDataset a = MakeMdqa(options);
  MdqaDataset b = MakeMdqa(options);
  auto forward = a.GenerateRange(0, 10);
  ASSERT_TRUE(forward.ok());
  for (int64_t i = 9; i >= 0; --i) {
    auto one = b.Generate(i);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->text, (*forward)[i].text);
    EXPECT_EQ(one->token_ids, (*forward)[i].token_ids);
    EXPECT_EQ(one->gold_position, (*forward)[i].gold_position);
  }
  options.seed = 10;
  EXPECT_NE(MakeMdqa(options).Generate(0)->text, (*forward)[0].text);
  EXPECT_NE((*forward)[0].text, (*forward)[1].text);
}

TEST(MdqaSyntheticTest, OnlyTheGoldDocumentHoldsTheAnswerAtTheClassPosition) {
  MdqaOptions options;
  options.seed = 1;
  options.num_classes = 5;
  options.num_documents = 20;
  MdqaDataset dataset = MakeMdqa(options);
  EXPECT_TRUE(dataset.synthetic());
  EXPECT_EQ(dataset.num_documents(), 20);
  auto examples = dataset.GenerateRange(0, 25);
  ASSERT_TRUE(examples.ok());
  std::set<int32_t> positions;
  for (const MdqaExample& e : *examples) {
    ASSERT_EQ(e.answers.size(), 1u);
    const std::string& answer = e.answers[0];
    // The question names the gold document's entity (its title).
    const std::string& entity = e.documents[e.gold_position].title;
    EXPECT_NE(e.question.find(entity), std::string::npos) << e.question;
    CheckMdqaPrompt(e, 5, [&](const ParsedDoc& d) {
      const bool has_answer = d.text.find(answer) != std::string::npos;
      const bool has_entity = (d.title + " " + d.text).find(entity) != std::string::npos;
      EXPECT_EQ(has_answer, has_entity) << d.text;
      return has_answer;
    });
    EXPECT_EQ(e.num_documents, 20);
    EXPECT_EQ(e.source_line, 0);
    positions.insert(e.gold_position);
  }
  // C = 5 over K = 20: 0, 5, 10, 14, 19 (round half up of 4.75 and 14.25).
  EXPECT_EQ(positions, (std::set<int32_t>{0, 5, 10, 14, 19}));
}

TEST(MdqaSyntheticTest, ClassesCycleAndAreBalanced) {
  MdqaOptions options;
  options.num_classes = 7;
  options.num_documents = 7;
  MdqaDataset dataset = MakeMdqa(options);
  auto examples = dataset.GenerateRange(0, 21);
  ASSERT_TRUE(examples.ok());
  std::map<int32_t, int> per_class;
  for (const MdqaExample& e : *examples) {
    EXPECT_EQ(e.gold_class, e.index % 7);
    EXPECT_EQ(e.gold_position, e.gold_class);  // K == C: every position
    ++per_class[e.gold_class];
  }
  ASSERT_EQ(per_class.size(), 7u);
  for (const auto& [c, n] : per_class) EXPECT_EQ(n, 3) << "class " << c;
}

TEST(MdqaSyntheticTest, FitsTheTargetTokenCount) {
  for (int32_t context : {1500, 2048, 4096}) {
    MdqaOptions options;
    options.seed = 4;
    options.num_classes = 5;
    options.num_documents = 0;  // no bound
    options.context_length = context;
    MdqaDataset dataset = MakeMdqa(options);
    auto examples = dataset.GenerateRange(0, 10);
    ASSERT_TRUE(examples.ok());
    for (const MdqaExample& e : *examples) {
      EXPECT_LE(e.num_tokens, context);
      // One more document (at most ~250 bytes) would not fit.
      EXPECT_GT(e.num_tokens, context - 300);
      EXPECT_GE(e.num_documents, 5);
      CheckMdqaPrompt(
          e, 5, [&](const ParsedDoc& d) { return d.text.find(e.answers[0]) != std::string::npos; });
    }
  }
  // num_documents bounds K when fitting.
  MdqaOptions bounded;
  bounded.num_documents = 6;
  bounded.context_length = 100000;
  EXPECT_EQ(MakeMdqa(bounded).Generate(3)->num_documents, 6);
}

TEST(MdqaSyntheticTest, BadOptionsNameTheField) {
  MdqaOptions options;
  options.num_classes = 5;
  options.num_documents = 4;
  auto dataset = MdqaDataset::Create(options, Bytes());
  ASSERT_THAT(dataset.status(), StatusIs(absl::StatusCode::kInvalidArgument, "num_documents"));
  options.num_documents = 20;
  options.context_length = 300;
  dataset = MdqaDataset::Create(options, Bytes());
  ASSERT_THAT(dataset.status(), StatusIs(absl::StatusCode::kInvalidArgument, "context_length"));
  options.context_length = 0;
  options.num_classes = 0;
  dataset = MdqaDataset::Create(options, Bytes());
  ASSERT_THAT(dataset.status(), StatusIs(absl::StatusCode::kInvalidArgument, "num_classes"));
}

// A lost-in-the-middle style record: ctx 0 is gold (flag `flag`), then
// `distractors` ctxs titled "L<line> D<j>", then one more ctx that has the
// answer without being gold (it must not be used as a distractor).
std::string Record(int line, int distractors, const std::string& flag) {
  nlohmann::json ctxs = nlohmann::json::array();
  ctxs.push_back({{"title", absl::StrCat("L", line, " gold")},
                  {"text", absl::StrCat("The answer to ", line, " is A", line, ".")},
                  {flag, true}});
  for (int j = 0; j < distractors; ++j) {
    ctxs.push_back({{"title", absl::StrCat("L", line, " D", j)},
                    {"text", absl::StrCat("Nothing about it (", j, ").")},
                    {"hasanswer", false},
                    {"isgold", false}});
  }
  if (flag == "isgold") {
    ctxs.push_back({{"title", absl::StrCat("L", line, " also")},
                    {"text", "Mentions the answer too."},
                    {"hasanswer", true},
                    {"isgold", false}});
  }
  nlohmann::json record = {{"question", absl::StrCat("What is the answer to ", line, "?")},
                           {"answers", {absl::StrCat("A", line)}},
                           {"ctxs", ctxs}};
  return record.dump();
}

TEST(MdqaJsonlTest, RecordsCycleGoldAtClassPositionShuffledDistractors) {
  // Line 2 is blank: line numbers are the file's.
  const std::string path = WriteTemp(
      "mdqa.jsonl", absl::StrCat(Record(1, 8, "isgold"), "\n\n", Record(3, 8, "hasanswer"), "\r\n",
                                 Record(4, 10, "isgold"), "\n"));
  MdqaOptions options;
  options.seed = 2;
  options.num_classes = 3;
  options.num_documents = 5;
  options.path = path;
  MdqaDataset dataset = MakeMdqa(options);
  EXPECT_FALSE(dataset.synthetic());
  EXPECT_EQ(dataset.num_records(), 3);
  auto examples = dataset.GenerateRange(0, 9);
  ASSERT_TRUE(examples.ok());
  const int64_t lines[] = {1, 3, 4};
  std::set<std::vector<std::string>> orders;
  for (const MdqaExample& e : *examples) {
    const int64_t line = lines[e.index % 3];
    EXPECT_EQ(e.source_line, line);
    EXPECT_EQ(e.question, absl::StrCat("What is the answer to ", line, "?"));
    EXPECT_EQ(e.answers, std::vector<std::string>{absl::StrCat("A", line)});
    EXPECT_EQ(e.num_documents, 5);
    CheckMdqaPrompt(
        e, 3, [&](const ParsedDoc& d) { return d.title == absl::StrCat("L", line, " gold"); });
    // Distractors: distinct, from this record, never the hasanswer ctx.
    std::set<std::string> titles;
    std::vector<std::string> order;
    for (int32_t k = 0; k < e.num_documents; ++k) {
      if (k == e.gold_position) continue;
      const std::string& title = e.documents[k].title;
      EXPECT_EQ(title.rfind(absl::StrCat("L", line, " D"), 0), 0u) << title;
      EXPECT_TRUE(titles.insert(title).second);
      order.push_back(title);
    }
    orders.insert(order);
  }
  // Seeded shuffles: the examples of one record do not all repeat one order.
  EXPECT_GT(orders.size(), 3u);

  // Same seed: same prompts; another seed: another order.
  MdqaDataset again = MakeMdqa(options);
  EXPECT_EQ(again.Generate(4)->text, (*examples)[4].text);
  options.seed = 3;
  MdqaDataset reseeded = MakeMdqa(options);
  bool differs = false;
  for (int i = 0; i < 9; ++i) {
    differs |= reseeded.Generate(i)->text != (*examples)[i].text;
  }
  EXPECT_TRUE(differs);
}

TEST(MdqaJsonlTest, FittingIsBoundedByTheRecordsDistractors) {
  const std::string path = WriteTemp(
      "mdqa_fit.jsonl", absl::StrCat(Record(1, 4, "isgold"), "\n", Record(2, 40, "isgold"), "\n"));
  MdqaOptions options;
  options.num_classes = 3;
  options.num_documents = 0;
  options.context_length = 1500;
  options.path = path;
  MdqaDataset dataset = MakeMdqa(options);
  auto first = dataset.Generate(0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->num_documents, 5);  // 1 gold + 4 distractors, all fit
  auto second = dataset.Generate(1);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second->num_documents, 5);
  EXPECT_LT(second->num_documents, 41);
  EXPECT_LE(second->num_tokens, 1500);
}

absl::Status MdqaFileStatus(const std::string& name, const std::string& contents,
                            int32_t num_documents = 3) {
  MdqaOptions options;
  options.num_classes = 3;
  options.num_documents = num_documents;
  options.path = WriteTemp(name, contents);
  return MdqaDataset::Create(options, Bytes()).status();
}

void ExpectFileError(const absl::Status& status, const std::string& where,
                     const std::string& what) {
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr(where), HasSubstr(what))));
}

// A sweep's {name: mdqa, path: ...}: the worker hands the file's bytes over
// (read through the confined opener); the job's prompts are those of the
// same file read by path, and its errors name the file as the sweep gave it.
TEST(MdqaJsonlTest, JobDatasetFromTheFilesBytesEqualsTheFileByPath) {
  const std::string contents =
      absl::StrCat(Record(1, 8, "isgold"), "\n", Record(2, 8, "hasanswer"), "\n");
  const std::string path = WriteTemp("job_mdqa.jsonl", contents);
  auto tokenizer = std::make_shared<ByteTokenizer>();
  auto by_path = MdqaDataset::Create(
      {.seed = 4, .num_classes = 3, .num_documents = 0, .context_length = 600, .path = path},
      tokenizer);
  ASSERT_TRUE(by_path.ok()) << by_path.status();
  auto job = CreateJobDataset({.name = "mdqa",
                               .seed = 4,
                               .num_classes = 3,
                               .context_length = 600,
                               .text_path = "corpora/nq.jsonl",
                               .text_contents = contents},
                              tokenizer);
  ASSERT_TRUE(job.ok()) << job.status();
  auto prompts = (*job)(0, 4);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  for (int64_t i = 0; i < 4; ++i) {
    const MdqaExample want = *by_path->Generate(i);
    EXPECT_EQ((*prompts)[i].token_ids, want.token_ids) << i;
    EXPECT_EQ((*prompts)[i].gold_class, want.gold_class) << i;
  }
  auto bad = CreateJobDataset({.name = "mdqa",
                               .num_classes = 3,
                               .context_length = 600,
                               .text_path = "corpora/nq.jsonl",
                               .text_contents = "{\"question\": 1}\n"},
                              tokenizer);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::StartsWith("corpora/nq.jsonl:1:"));
}

TEST(MdqaJsonlTest, ErrorsNameFileLineAndKey) {
  const std::string good = Record(1, 4, "isgold");
  ExpectFileError(MdqaFileStatus("bad_json.jsonl", good + "\n{\"question\": \n"),
                  "bad_json.jsonl:2: ", "malformed JSON");
  ExpectFileError(
      MdqaFileStatus("no_question.jsonl", good + "\n\n" + R"({"answers": ["x"], "ctxs": []})"),
      "no_question.jsonl:3: ", "missing key \"question\"");
  ExpectFileError(MdqaFileStatus("no_ctxs.jsonl", R"({"question": "q", "answers": ["x"]})"),
                  "no_ctxs.jsonl:1: ", "missing key \"ctxs\"");
  ExpectFileError(MdqaFileStatus("no_answers.jsonl", R"({"question": "q", "ctxs": []})"),
                  "no_answers.jsonl:1: ", "missing key \"answers\"");
  ExpectFileError(
      MdqaFileStatus("bad_answers.jsonl", R"({"question": "q", "answers": [1], "ctxs": []})"),
      "bad_answers.jsonl:1: ", "answers[0]");
  ExpectFileError(
      MdqaFileStatus("no_title.jsonl", R"({"question": "q", "answers": ["x"], "ctxs": [)"
                                       R"({"title": "t", "text": "x", "isgold": true},)"
                                       R"({"text": "y"}]})"),
      "no_title.jsonl:1: ", "ctxs[1]: missing key \"title\"");
  ExpectFileError(
      MdqaFileStatus("bad_text.jsonl", R"({"question": "q", "answers": ["x"], "ctxs": [)"
                                       R"({"title": "t", "text": 3}]})"),
      "bad_text.jsonl:1: ", "ctxs[0]: key \"text\" must be a string");
  ExpectFileError(
      MdqaFileStatus("bad_flag.jsonl", R"({"question": "q", "answers": ["x"], "ctxs": [)"
                                       R"({"title": "t", "text": "x", "isgold": "yes"}]})"),
      "bad_flag.jsonl:1: ", "\"isgold\"");
  ExpectFileError(MdqaFileStatus("no_gold.jsonl",
                                 R"({"question": "q", "answers": ["x"], "ctxs": [)"
                                 R"({"title": "t", "text": "x"}, {"title": "u", "text": "y"}]})"),
                  "no_gold.jsonl:1: ", "no gold document");
  ExpectFileError(MdqaFileStatus("not_object.jsonl", "[1, 2]"),
                  "not_object.jsonl:1: ", "JSON object");
  // Too few distractors for K = 6.
  ExpectFileError(MdqaFileStatus("few.jsonl", good, 6), "few.jsonl:1: ", "num_documents");
  ExpectFileError(MdqaFileStatus("empty.jsonl", "\n  \n"), "empty.jsonl", "no records");
  MdqaOptions missing;
  missing.num_documents = 5;
  missing.path = ::testing::TempDir() + "/lf_data_does_not_exist.jsonl";
  const absl::Status status = MdqaDataset::Create(missing, Bytes()).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, "lf_data_does_not_exist.jsonl"));
}

// ---------------------------------------------------------------- Text

TextDataset MakeText(const TextOptions& options) {
  auto dataset = TextDataset::Create(options, Bytes());
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *std::move(dataset);
}

TEST(TextTest, PlainFileCutIntoWindowsOfTheTargetLength) {
  std::string contents;
  for (int i = 0; i < 1050; ++i) contents.push_back(static_cast<char>('a' + i % 26));
  TextOptions options;
  options.path = WriteTemp("plain.txt", contents);
  options.context_length = 100;
  TextDataset dataset = MakeText(options);
  EXPECT_EQ(dataset.num_examples(), 10);
  auto examples = dataset.GenerateRange(0, 10);
  ASSERT_TRUE(examples.ok());
  for (const TextExample& e : *examples) {
    EXPECT_EQ(e.num_tokens, 100);
    EXPECT_EQ(e.num_tokens, static_cast<int32_t>(e.token_ids.size()));
    EXPECT_EQ(e.gold_class, -1);
    EXPECT_EQ(e.token_offset, e.index * 100);
    EXPECT_EQ(*ByteTokenizer().Decode(e.token_ids), contents.substr(e.index * 100, 100));
  }
  EXPECT_EQ(dataset.Generate(10).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(dataset.Generate(-1).status().code(), absl::StatusCode::kOutOfRange);
  // Deterministic: a second instance gives the same windows.
  EXPECT_EQ(MakeText(options).Generate(7)->token_ids, (*examples)[7].token_ids);

  options.keep_partial = true;
  TextDataset partial = MakeText(options);
  EXPECT_EQ(partial.num_examples(), 11);
  EXPECT_EQ(partial.Generate(10)->num_tokens, 50);
  EXPECT_EQ(partial.Generate(10)->token_ids.size(), 50u);
}

TEST(TextTest, JsonlRecordsJoinedWithTheSeparator) {
  const std::string path = WriteTemp("docs.jsonl",
                                     "{\"body\": \"first document\", \"text\": 1}\n"
                                     "\n"
                                     "{\"body\": \"second\"}\n"
                                     "{\"body\": \"the third one is longer\"}\n");
  TextOptions options;
  options.path = path;
  options.json_key = "body";
  options.separator = "||";
  options.context_length = 10;
  options.keep_partial = true;
  TextDataset dataset = MakeText(options);
  const std::string stream = "first document||second||the third one is longer";
  EXPECT_EQ(dataset.num_stream_tokens(), static_cast<int64_t>(stream.size()));
  EXPECT_EQ(dataset.num_examples(), 5);  // 47 tokens: 4 full + 7
  auto examples = dataset.GenerateRange(0, 5);
  ASSERT_TRUE(examples.ok());
  std::string joined;
  for (const TextExample& e : *examples) {
    joined += *ByteTokenizer().Decode(e.token_ids);
  }
  EXPECT_EQ(joined, stream);
  EXPECT_EQ((*examples)[4].num_tokens, 7);
  // Offsets 0, 10, 20, 30, 40: line 1 ("first document" ends at 14, its
  // separator at 14-15), line 3 (16..21), line 4 from 24.
  EXPECT_EQ((*examples)[0].source_line, 1);
  EXPECT_EQ((*examples)[1].source_line, 1);
  EXPECT_EQ((*examples)[2].source_line, 3);
  EXPECT_EQ((*examples)[3].source_line, 4);
  EXPECT_EQ((*examples)[4].source_line, 4);
}

TEST(TextTest, ErrorsNameTheFile) {
  auto status_of = [](const std::string& name, const std::string& contents, const std::string& key,
                      int32_t context) {
    TextOptions options;
    options.path = WriteTemp(name, contents);
    options.json_key = key;
    options.context_length = context;
    return TextDataset::Create(options, Bytes()).status();
  };
  ExpectFileError(status_of("t_bad.jsonl", "{\"text\": \"ok\"}\n{oops}\n", "text", 1),
                  "t_bad.jsonl:2: ", "malformed JSON");
  ExpectFileError(status_of("t_key.jsonl", "{\"text\": \"ok\"}\n", "body", 1),
                  "t_key.jsonl:1: ", "missing key \"body\"");
  ExpectFileError(status_of("t_type.jsonl", "{\"text\": [1]}\n", "text", 1),
                  "t_type.jsonl:1: ", "key \"text\" must be a string");
  ExpectFileError(status_of("t_short.txt", "tiny", "text", 100), "t_short.txt",
                  "context_length=100");
  TextOptions missing;
  missing.path = ::testing::TempDir() + "/lf_data_missing.txt";
  const absl::Status status = TextDataset::Create(missing, Bytes()).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, "lf_data_missing.txt"));
}

}  // namespace
}  // namespace layerflow::worker

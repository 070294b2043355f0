#include "worker/data/mdqa.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <random>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/substitute.h"
#include "nlohmann/json.hpp"
#include "worker/data/data_util.h"
#include "worker/data/kvpr.h"

namespace layerflow::worker {
namespace {

using json = nlohmann::json;

constexpr char kInstruction[] =
    "Write a high-quality answer for the given question using only the "
    "provided search results (some of which might be irrelevant).\n\n";

// ---- synthetic generator -------------------------------------------------

// $0: the entity (also the document title), $1: the answer.
struct Relation {
  const char* fact;
  const char* question;
};
constexpr Relation kRelations[] = {
    {"The capital of $0 is $1.", "What is the capital of $0?"},
    {"$0 was born in the city of $1.", "In which city was $0 born?"},
    {"The company $0 was founded by $1.", "Who founded the company $0?"},
    {"The river $0 flows into the lake $1.", "Into which lake does the river $0 flow?"},
    {"The ship $0 was built in the port of $1.", "In which port was the ship $0 built?"},
    {"The language spoken in $0 is called $1.", "What is the language spoken in $0 called?"},
};
constexpr int kNumRelations = sizeof(kRelations) / sizeof(kRelations[0]);

// $0: the entity, $1: another invented name, $2: a number, $3/$4: adjectives.
constexpr const char* kFillers[] = {
    "$0 is often mentioned in the old records of $1.",
    "Travellers describe $0 as $3 and $4.",
    "The first written account of $0 dates from the year $2.",
    "Scholars from $1 have studied $0 for $2 years.",
    "Many songs about $0 are still sung in $1.",
    "A survey counted $2 visitors to $0 last season.",
};
constexpr int kNumFillers = sizeof(kFillers) / sizeof(kFillers[0]);
constexpr const char* kAdjectives[] = {"quiet",  "windy", "ancient", "busy",     "green",  "remote",
                                       "famous", "cold",  "vast",    "colorful", "modest", "proud"};
constexpr int kNumAdjectives = sizeof(kAdjectives) / sizeof(kAdjectives[0]);

constexpr const char* kOnsets[] = {"b",  "br", "d",  "dr", "f", "g",  "gr", "k",
                                   "kr", "l",  "m",  "n",  "p", "pl", "r",  "s",
                                   "st", "t",  "th", "v",  "z", "zh", "qu", "sh"};
constexpr const char* kNuclei[] = {"a", "e", "i", "o", "u", "ae", "ou", "ia"};
constexpr const char* kCodas[] = {"", "", "n", "r", "s", "k", "l", "m", "x"};

template <typename T, size_t N>
const T& Pick(std::mt19937_64& rng, const T (&items)[N]) {
  return items[UniformBelow(rng, N)];
}

// The documents of one synthetic example, drawn as a stream.
class SyntheticStream {
 public:
  explicit SyntheticStream(uint64_t rng_seed) : rng_(rng_seed) {
    relation_ = static_cast<int>(UniformBelow(rng_, kNumRelations));
    std::string answer;
    gold_ = NextDocument(&entity_, &answer);
    answers_.push_back(answer);
    question_ = absl::Substitute(kRelations[relation_].question, entity_);
  }

  const std::string& question() const { return question_; }
  const std::vector<std::string>& answers() const { return answers_; }
  const MdqaDocument& gold() const { return gold_; }
  const MdqaDocument& distractor(size_t j) {
    while (distractors_.size() <= j) {
      distractors_.push_back(NextDocument(nullptr, nullptr));
    }
    return distractors_[j];
  }

 private:
  std::string NewName() {
    for (;;) {
      const int syllables = 2 + static_cast<int>(UniformBelow(rng_, 2));
      std::string name;
      for (int s = 0; s < syllables; ++s) {
        absl::StrAppend(&name, Pick(rng_, kOnsets), Pick(rng_, kNuclei));
      }
      name += Pick(rng_, kCodas);
      name[0] = absl::ascii_toupper(name[0]);
      // Distinct, and none a prefix of another, so that one name never
      // occurs inside another document's text by accident.
      bool clash = false;
      for (const std::string& other : names_) {
        if (other.rfind(name, 0) == 0 || name.rfind(other, 0) == 0) {
          clash = true;
          break;
        }
      }
      if (!clash) {
        names_.push_back(name);
        return name;
      }
    }
  }

  MdqaDocument NextDocument(std::string* entity_out, std::string* answer_out) {
    const std::string entity = NewName();
    const std::string answer = NewName();
    std::string text = absl::Substitute(kRelations[relation_].fact, entity, answer);
    const int first = static_cast<int>(UniformBelow(rng_, kNumFillers));
    int second = static_cast<int>(UniformBelow(rng_, kNumFillers - 1));
    if (second >= first) ++second;
    for (int f : {first, second}) {
      const std::string other = NewName();
      const uint64_t number = 10 + UniformBelow(rng_, 1990);
      const char* adj1 = Pick(rng_, kAdjectives);
      const char* adj2 = Pick(rng_, kAdjectives);
      absl::StrAppend(&text, " ", absl::Substitute(kFillers[f], entity, other, number, adj1, adj2));
    }
    if (entity_out != nullptr) *entity_out = entity;
    if (answer_out != nullptr) *answer_out = answer;
    return {entity, std::move(text)};
  }

  std::mt19937_64 rng_;
  std::vector<std::string> names_;
  int relation_ = 0;
  std::string entity_;
  std::string question_;
  std::vector<std::string> answers_;
  MdqaDocument gold_;
  std::vector<MdqaDocument> distractors_;
};

// ---- JSONL records ---------------------------------------------------------

absl::Status RecordError(const std::string& path, int64_t line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

absl::StatusOr<std::string> StringKey(const json& object, const char* key, const std::string& where,
                                      const std::string& path, int64_t line) {
  auto it = object.find(key);
  if (it == object.end()) {
    return RecordError(path, line, absl::StrCat(where, "missing key \"", key, "\""));
  }
  if (!it->is_string()) {
    return RecordError(path, line, absl::StrCat(where, "key \"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

// Absent = false; present must be a boolean.
absl::StatusOr<bool> FlagKey(const json& object, const char* key, const std::string& where,
                             const std::string& path, int64_t line) {
  auto it = object.find(key);
  if (it == object.end()) return false;
  if (!it->is_boolean()) {
    return RecordError(path, line, absl::StrCat(where, "key \"", key, "\" must be true or false"));
  }
  return it->get<bool>();
}

absl::StatusOr<MdqaDataset::Record> ParseRecord(const std::string& path, const NumberedLine& line) {
  json record;
  try {
    record = json::parse(line.text);
  } catch (const json::exception& e) {
    return RecordError(path, line.number, absl::StrCat("malformed JSON: ", e.what()));
  }
  if (!record.is_object()) {
    return RecordError(path, line.number, "the record must be a JSON object");
  }
  MdqaDataset::Record out;
  out.line = line.number;
  auto question = StringKey(record, "question", "", path, line.number);
  if (!question.ok()) return question.status();
  out.question = *std::move(question);

  auto answers = record.find("answers");
  if (answers == record.end()) {
    return RecordError(path, line.number, "missing key \"answers\"");
  }
  if (!answers->is_array()) {
    return RecordError(path, line.number, "key \"answers\" must be an array of strings");
  }
  for (size_t i = 0; i < answers->size(); ++i) {
    if (!(*answers)[i].is_string()) {
      return RecordError(path, line.number, absl::StrCat("answers[", i, "] must be a string"));
    }
    out.answers.push_back((*answers)[i].get<std::string>());
  }

  auto ctxs = record.find("ctxs");
  if (ctxs == record.end()) {
    return RecordError(path, line.number, "missing key \"ctxs\"");
  }
  if (!ctxs->is_array()) {
    return RecordError(path, line.number, "key \"ctxs\" must be an array of objects");
  }
  int64_t gold_isgold = -1;
  int64_t gold_hasanswer = -1;
  std::vector<MdqaDocument> docs;
  std::vector<bool> marked;
  for (size_t i = 0; i < ctxs->size(); ++i) {
    const json& ctx = (*ctxs)[i];
    const std::string where = absl::StrCat("ctxs[", i, "]: ");
    if (!ctx.is_object()) {
      return RecordError(path, line.number, absl::StrCat("ctxs[", i, "] must be an object"));
    }
    auto title = StringKey(ctx, "title", where, path, line.number);
    if (!title.ok()) return title.status();
    auto text = StringKey(ctx, "text", where, path, line.number);
    if (!text.ok()) return text.status();
    auto isgold = FlagKey(ctx, "isgold", where, path, line.number);
    if (!isgold.ok()) return isgold.status();
    auto hasanswer = FlagKey(ctx, "hasanswer", where, path, line.number);
    if (!hasanswer.ok()) return hasanswer.status();
    if (*isgold && gold_isgold < 0) gold_isgold = static_cast<int64_t>(i);
    if (*hasanswer && gold_hasanswer < 0) {
      gold_hasanswer = static_cast<int64_t>(i);
    }
    docs.push_back({*std::move(title), *std::move(text)});
    marked.push_back(*isgold || *hasanswer);
  }
  const int64_t gold = gold_isgold >= 0 ? gold_isgold : gold_hasanswer;
  if (gold < 0) {
    return RecordError(path, line.number,
                       "ctxs: no gold document (no ctx has \"isgold\" or "
                       "\"hasanswer\" true)");
  }
  out.gold = docs[gold];
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!marked[i]) out.distractors.push_back(std::move(docs[i]));
  }
  return out;
}

// ---- one example's documents, either source ---------------------------------

class ExampleDocs {
 public:
  ExampleDocs(uint64_t rng_seed, const MdqaDataset::Record* record) {
    if (record == nullptr) {
      synthetic_.emplace(rng_seed);
      return;
    }
    record_ = record;
    order_.resize(record->distractors.size());
    for (size_t j = 0; j < order_.size(); ++j) order_[j] = j;
    std::mt19937_64 rng(rng_seed);
    PortableShuffle(order_, rng);
  }

  const std::string& question() const {
    return record_ ? record_->question : synthetic_->question();
  }
  const std::vector<std::string>& answers() const {
    return record_ ? record_->answers : synthetic_->answers();
  }
  // Upper bound on K from the source.
  int64_t max_documents() const {
    return record_ ? 1 + static_cast<int64_t>(record_->distractors.size())
                   : std::numeric_limits<int32_t>::max();
  }

  std::vector<MdqaDocument> Documents(int32_t k, int32_t gold_position) {
    std::vector<MdqaDocument> docs;
    docs.reserve(k);
    for (int32_t j = 0; j + 1 < k; ++j) {
      if (j == gold_position) docs.push_back(gold());
      docs.push_back(distractor(j));
    }
    if (gold_position == k - 1) docs.push_back(gold());
    return docs;
  }

 private:
  const MdqaDocument& gold() const { return record_ ? record_->gold : synthetic_->gold(); }
  MdqaDocument distractor(size_t j) {
    if (record_) return record_->distractors[order_[j]];
    return synthetic_->distractor(j);
  }

  const MdqaDataset::Record* record_ = nullptr;
  std::vector<size_t> order_;
  std::optional<SyntheticStream> synthetic_;
};

}  // namespace

std::string MdqaPrompt(const std::string& question, const std::vector<MdqaDocument>& documents,
                       std::vector<int64_t>* document_offsets) {
  std::string text = kInstruction;
  if (document_offsets != nullptr) document_offsets->clear();
  for (size_t k = 0; k < documents.size(); ++k) {
    if (document_offsets != nullptr) {
      document_offsets->push_back(static_cast<int64_t>(text.size()));
    }
    absl::StrAppend(&text, "Document [", k + 1, "](Title: ", documents[k].title, ") ",
                    documents[k].text, "\n");
  }
  absl::StrAppend(&text, "\nQuestion: ", question, "\nAnswer:");
  return text;
}

int64_t MdqaDataset::num_records() const {
  return records_ == nullptr ? 0 : static_cast<int64_t>(records_->size());
}

absl::StatusOr<MdqaDataset> MdqaDataset::Create(const MdqaOptions& options,
                                                std::shared_ptr<const Tokenizer> tokenizer) {
  if (tokenizer == nullptr) {
    return absl::InvalidArgumentError("mdqa: no tokenizer");
  }
  if (options.num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes: must be >= 1 for mdqa, got ", options.num_classes));
  }
  if (options.context_length < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context_length: must be >= 0 (0: K = num_documents), got ", options.context_length));
  }
  const bool fit = options.context_length > 0;
  if (!fit || options.num_documents != 0) {
    if (options.num_documents < options.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_documents: must be >= num_classes = ", options.num_classes,
                       " (one document per gold position)", fit ? " or 0 (no bound)" : "", ", got ",
                       options.num_documents));
    }
  }
  MdqaDataset dataset(options, std::move(tokenizer));
  if (!options.path.empty()) {
    absl::StatusOr<std::vector<NumberedLine>> lines =
        options.contents ? NonBlankLines(*options.contents) : ReadNonBlankLines(options.path);
    if (!lines.ok()) return lines.status();
    if (lines->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.path, ": no records (the file is empty)"));
    }
    // K - 1 distractors per record; when fitting, at least C - 1.
    const int64_t needed = (fit ? options.num_classes : options.num_documents) - 1;
    auto records = std::make_shared<std::vector<Record>>();
    for (const NumberedLine& line : *lines) {
      auto record = ParseRecord(options.path, line);
      if (!record.ok()) return record.status();
      if (static_cast<int64_t>(record->distractors.size()) < needed) {
        return RecordError(options.path, line.number,
                           absl::StrCat("ctxs: ", record->distractors.size(),
                                        " distractors (ctxs without \"isgold\"/\"hasanswer\""
                                        " true), ",
                                        fit ? "num_classes" : "num_documents", "=", needed + 1,
                                        " needs ", needed));
      }
      records->push_back(*std::move(record));
    }
    dataset.records_ = std::move(records);
  }
  auto first = dataset.Generate(0);
  if (!first.ok()) return first.status();
  dataset.num_documents_ = first->num_documents;
  return dataset;
}

absl::StatusOr<MdqaExample> MdqaDataset::Generate(int64_t index) const {
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("mdqa: example index ", index, " is negative"));
  }
  const int32_t classes = options_.num_classes;
  const int32_t gold_class = static_cast<int32_t>(index % classes);
  const Record* record = records_ == nullptr ? nullptr : &(*records_)[index % records_->size()];
  ExampleDocs docs(PromptRngSeed(options_.seed, index), record);

  int32_t k = options_.num_documents;
  if (options_.context_length > 0) {
    auto length = [&](int32_t n) {
      const int32_t gold = KvprGoldPosition(gold_class, classes, n);
      return static_cast<int64_t>(
          tokenizer_->Encode(MdqaPrompt(docs.question(), docs.Documents(n, gold))).size());
    };
    const int64_t target = options_.context_length;
    int64_t kmax = docs.max_documents();
    if (options_.num_documents > 0) {
      kmax = std::min<int64_t>(kmax, options_.num_documents);
    }
    if (length(classes) > target) {
      return absl::InvalidArgumentError(absl::StrCat(
          "context_length: ", target, " tokens cannot hold ", classes,
          " documents (one per gold position, num_classes=", classes, "); this MDQA prompt needs ",
          length(classes), " tokens with the ", tokenizer_->name(), " tokenizer",
          record ? absl::StrCat(" (", options_.path, ":", record->line, ")") : ""));
    }
    // Largest K in [C, kmax] that fits: double to bracket, then bisect.
    int64_t lo = classes;
    int64_t hi = -1;
    while (hi < 0) {
      const int64_t next = std::min(lo * 2, kmax);
      if (next == lo) break;
      (length(static_cast<int32_t>(next)) <= target ? lo : hi) = next;
    }
    if (hi > 0) {
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        (length(static_cast<int32_t>(mid)) <= target ? lo : hi) = mid;
      }
    }
    k = static_cast<int32_t>(lo);
  }

  MdqaExample example;
  example.index = index;
  example.num_documents = k;
  example.gold_class = gold_class;
  example.gold_position = KvprGoldPosition(gold_class, classes, k);
  example.question = docs.question();
  example.answers = docs.answers();
  example.documents = docs.Documents(k, example.gold_position);
  example.text = MdqaPrompt(example.question, example.documents, &example.document_offsets);
  example.token_ids = tokenizer_->Encode(example.text);
  example.num_tokens = static_cast<int32_t>(example.token_ids.size());
  example.source_line = record ? record->line : 0;
  return example;
}

absl::StatusOr<std::vector<MdqaExample>> MdqaDataset::GenerateRange(int64_t begin,
                                                                    int64_t end) const {
  return GenerateRangeOf(*this, begin, end);
}

}  // namespace layerflow::worker

#include "worker/tokenizer/bpe_tokenizer.h"

#include <unistd.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerflow::worker {
namespace {

using Json = nlohmann::json;

// The pattern of GPT-2's pre-tokenizer; a Split step with exactly this regex
// is the same split that ByteLevel(use_regex=true) does.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Words longer than this (in bytes) are not cached, as in the reference.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

// ---------------------------------------------------------------------------
// Unicode classes of the GPT-2 pattern.

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// \s of the reference regex engine (Oniguruma) is the White_Space property,
// \p{L} the L* general categories and \p{N} the N* ones. Ill-formed UTF-8
// (c < 0) is none of them.
CharClass Classify(UChar32 c) {
  if (c < 0) return CharClass::kOther;
  if (u_isUWhiteSpace(c)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

const std::array<CharClass, 128>& AsciiClasses() {
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> t{};
    for (int c = 0; c < 128; ++c) t[c] = Classify(c);
    return t;
  }();
  return table;
}

// \w of the Rust regex crate (used by added tokens' single_word check).
bool IsWordChar(UChar32 c) {
  if (c < 0) return false;
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) ||
         u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

UChar32 NextCodePoint(std::string_view s, size_t* i) {
  UChar32 c;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto length = static_cast<int32_t>(s.size());
  auto pos = static_cast<int32_t>(*i);
  U8_NEXT(p, pos, length, c);
  *i = static_cast<size_t>(pos);
  return c;
}

UChar32 PrevCodePoint(std::string_view s, size_t* i) {
  UChar32 c;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  int32_t pos = static_cast<int32_t>(*i);
  U8_PREV(p, 0, pos, c);
  *i = static_cast<size_t>(pos);
  return c;
}

bool IsWhiteSpace(UChar32 c) { return c >= 0 && u_isUWhiteSpace(c); }

// ---------------------------------------------------------------------------
// GPT-2 pre-tokenization, written out by hand: at every position the first
// alternative of the pattern that matches wins, and every code point belongs
// to some alternative, so the matches tile the input.

struct CodePointInfo {
  uint32_t offset;  // byte offset of the code point
  CharClass cls;
  bool is_ascii_space;  // U+0020, the optional prefix ` ?`
};

void SplitGpt2(std::string_view text, std::vector<std::string_view>* words) {
  thread_local std::vector<CodePointInfo> cps;
  cps.clear();
  const auto& ascii = AsciiClasses();
  for (size_t i = 0; i < text.size();) {
    const auto offset = static_cast<uint32_t>(i);
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      cps.push_back({offset, ascii[byte], byte == ' '});
      ++i;
    } else {
      cps.push_back({offset, Classify(NextCodePoint(text, &i)), false});
    }
  }
  const size_t n = cps.size();
  auto offset_of = [&](size_t k) { return k < n ? cps[k].offset : text.size(); };
  auto run_end = [&](size_t k, CharClass cls) {
    while (k < n && cps[k].cls == cls) ++k;
    return k;
  };
  auto ascii_at = [&](size_t k, std::string_view s) {
    return text.substr(offset_of(k)).starts_with(s);
  };

  size_t i = 0;
  while (i < n) {
    size_t end;
    size_t j = (cps[i].is_ascii_space && i + 1 < n) ? i + 1 : i;
    if (ascii_at(i, "'s") || ascii_at(i, "'t") || ascii_at(i, "'m") || ascii_at(i, "'d")) {
      end = i + 2;
    } else if (ascii_at(i, "'re") || ascii_at(i, "'ve") || ascii_at(i, "'ll")) {
      end = i + 3;
    } else if (cps[j].cls != CharClass::kSpace) {
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
      end = run_end(j, cps[j].cls);
    } else {
      // `\s+(?!\S)` backtracks one code point when the run is followed by a
      // non-space; a run of one then falls through to `\s+`.
      end = run_end(i, CharClass::kSpace);
      if (end < n && end - i >= 2) --end;
    }
    words->push_back(text.substr(offset_of(i), offset_of(end) - offset_of(i)));
    i = end;
  }
}

// ---------------------------------------------------------------------------
// NFC, passing ill-formed UTF-8 bytes through unchanged (the reference only
// ever sees valid UTF-8; this keeps Encode total and round-trippable).

class NfcNormalizer {
 public:
  static absl::StatusOr<NfcNormalizer> Create() {
    UErrorCode error = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(error);
    if (U_FAILURE(error)) {
      return absl::InternalError(
          absl::StrCat("ICU NFC normalizer unavailable: ", u_errorName(error)));
    }
    return NfcNormalizer(nfc);
  }

  // Returns `text` itself when it is already NFC (the common case), else a
  // view into `*storage`.
  std::string_view Normalize(std::string_view text, std::string* storage) const {
    bool ascii = true;
    for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return text;
    UErrorCode error = U_ZERO_ERROR;
    if (nfc_->isNormalizedUTF8(icu::StringPiece(text.data(), text.size()), error) &&
        U_SUCCESS(error)) {
      return text;
    }
    storage->clear();
    size_t run_start = 0;
    auto flush = [&](size_t run_end) {
      if (run_end == run_start) return;
      icu::StringByteSink<std::string> sink(storage);
      UErrorCode e = U_ZERO_ERROR;
      nfc_->normalizeUTF8(0, icu::StringPiece(text.data() + run_start, run_end - run_start), sink,
                          nullptr, e);
      if (U_FAILURE(e)) storage->append(text.substr(run_start, run_end - run_start));
    };
    for (size_t i = 0; i < text.size();) {
      const size_t start = i;
      if (NextCodePoint(text, &i) < 0) {
        flush(start);
        storage->append(text.substr(start, i - start));
        run_start = i;
      }
    }
    flush(text.size());
    return *storage;
  }

 private:
  explicit NfcNormalizer(const icu::Normalizer2* nfc) : nfc_(nfc) {}
  const icu::Normalizer2* nfc_;  // owned by ICU
};

// ---------------------------------------------------------------------------
// GPT-2's reversible byte <-> printable code point map: printable Latin-1
// bytes map to themselves, the others to U+0100 upwards in byte order.

std::array<UChar32, 256> BytesToUnicode() {
  std::array<UChar32, 256> map{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  int next = 256;
  for (int b = 0; b < 256; ++b) map[b] = printable[b] ? b : next++;
  return map;
}

std::string EncodeUtf8(UChar32 c) {
  char buf[4];
  int32_t len = 0;
  U8_APPEND_UNSAFE(buf, len, c);  // c is one of our own valid code points
  return std::string(buf, len);
}

// ---------------------------------------------------------------------------
// Added tokens.

struct AddedToken {
  std::string content;  // as matched: normalized when `normalized` is set
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
};

// Leftmost-longest matching of a set of added tokens, as the reference's
// Aho-Corasick automaton does; the sets are small, so a first-byte index is
// enough.
class AddedTokenMatcher {
 public:
  void Add(AddedToken token) {
    if (token.content.empty()) return;
    tokens_.push_back(std::move(token));
  }

  void Finish() {
    for (auto& bucket : by_first_byte_) bucket.clear();
    for (size_t k = 0; k < tokens_.size(); ++k) {
      by_first_byte_[static_cast<unsigned char>(tokens_[k].content[0])].push_back(k);
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }

  bool empty() const { return tokens_.empty(); }

  // Calls `emit(piece, id)` for the pieces of `text` in order: id >= 0 for
  // an added token, -1 for text in between. Mirrors find_matches in the
  // reference, including its quirks (a rejected single_word match still
  // consumes its span from the search).
  template <typename Emit>
  void Split(std::string_view text, Emit&& emit) const {
    if (tokens_.empty()) {
      if (!text.empty()) emit(text, -1);
      return;
    }
    size_t emitted = 0;  // start of text not yet emitted
    size_t pos = 0;
    while (pos < text.size()) {
      size_t start = 0;
      const AddedToken* match = Find(text, pos, &start);
      if (match == nullptr) break;
      size_t stop = start + match->content.size();
      pos = stop;
      if (match->single_word) {
        size_t before = start;
        size_t after = stop;
        const bool start_ok = start == 0 || !IsWordChar(PrevCodePoint(text, &before));
        const bool stop_ok = stop == text.size() || !IsWordChar(NextCodePoint(text, &after));
        if (!start_ok || !stop_ok) continue;
      }
      if (match->lstrip) {
        size_t s = start;
        while (s > 0) {
          size_t prev = s;
          if (!IsWhiteSpace(PrevCodePoint(text, &prev))) break;
          s = prev;
        }
        start = std::max(s, emitted);
      }
      if (match->rstrip) {
        while (stop < text.size()) {
          size_t next = stop;
          if (!IsWhiteSpace(NextCodePoint(text, &next))) break;
          stop = next;
        }
      }
      if (emitted < start) emit(text.substr(emitted, start - emitted), -1);
      emit(text.substr(start, stop - start), match->id);
      emitted = stop;
    }
    if (emitted < text.size()) emit(text.substr(emitted), -1);
  }

 private:
  // The leftmost match at or after `from`, the longest there.
  const AddedToken* Find(std::string_view text, size_t from, size_t* start) const {
    for (size_t i = from; i < text.size(); ++i) {
      for (size_t k : by_first_byte_[static_cast<unsigned char>(text[i])]) {
        if (text.substr(i).starts_with(tokens_[k].content)) {
          *start = i;
          return &tokens_[k];
        }
      }
    }
    return nullptr;
  }

  std::vector<AddedToken> tokens_;
  std::array<std::vector<size_t>, 256> by_first_byte_;
};

// ---------------------------------------------------------------------------
// The tokenizer.

struct MergeTarget {
  int32_t rank;
  int32_t id;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class BpeTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bpe"; }
  std::vector<int32_t> Encode(std::string_view text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_bytes_.size()); }

 private:
  friend class BpeTokenizerLoader;

  void EncodeOrdinary(std::string_view text, std::vector<int32_t>* ids) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  // Model.
  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  std::array<std::string, 256> byte_chars_;  // byte -> its code point, UTF-8
  std::array<int32_t, 256> byte_ids_{};      // byte -> vocab id, -1 if absent
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  // Pipeline.
  std::optional<NfcNormalizer> nfc_;
  bool add_prefix_space_ = false;
  bool split_gpt2_ = true;
  AddedTokenMatcher raw_added_;         // normalized == false
  AddedTokenMatcher normalized_added_;  // normalized == true

  // Decode: the bytes of each id; `known_` marks ids that exist.
  std::vector<std::string> id_to_bytes_;
  std::vector<bool> known_;

  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  std::string normalized_storage;
  raw_added_.Split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    const std::string_view normalized = nfc_ ? nfc_->Normalize(piece, &normalized_storage) : piece;
    normalized_added_.Split(normalized, [&](std::string_view sub, int32_t sub_id) {
      if (sub_id >= 0) {
        ids.push_back(sub_id);
      } else {
        EncodeOrdinary(sub, &ids);
      }
    });
  });
  return ids;
}

void BpeTokenizer::EncodeOrdinary(std::string_view text, std::vector<int32_t>* ids) const {
  std::string prefixed;
  if (add_prefix_space_ && !text.starts_with(' ')) {
    prefixed.reserve(text.size() + 1);
    prefixed.append(" ").append(text);
    text = prefixed;
  }
  if (!split_gpt2_) {
    EncodeWord(text, ids);
    return;
  }
  thread_local std::vector<std::string_view> words;
  words.clear();
  SplitGpt2(text, &words);
  for (std::string_view word : words) EncodeWord(word, ids);
}

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    std::string mapped;
    for (char c : word) mapped += byte_chars_[static_cast<unsigned char>(c)];
    if (auto it = vocab_.find(mapped); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(absl::string_view(word.data(), word.size())); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kMaxCacheEntries) {
      cache_.try_emplace(std::string(word), ids->begin() + first, ids->end());
    }
  }
}

// The reference's Word::merge_all: always apply the lowest-ranked pair,
// leftmost first, until no adjacent pair has a merge.
void BpeTokenizer::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, true});
  };

  // Initial symbols: one per byte, with unk / byte-fallback handling for
  // bytes missing from the vocab (never the case for a byte-level vocab).
  bool pending_unk = false;
  for (char c : word) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte_ids_[byte] >= 0) {
      if (pending_unk) add(unk_id_);
      pending_unk = false;
      add(byte_ids_[byte]);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> fallback;
      for (char u : byte_chars_[byte]) {
        auto it = vocab_.find(absl::StrFormat("<0x%02X>", static_cast<unsigned char>(u)));
        if (it == vocab_.end()) break;
        fallback.push_back(it->second);
      }
      if (fallback.size() == byte_chars_[byte].size()) {
        for (int32_t id : fallback) add(id);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk && !fuse_unk_) add(unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(unk_id_);

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.id});
  };
  for (int32_t k = 0; k + 1 < static_cast<int32_t>(symbols.size()); ++k) push_pair(k);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Skip candidates made stale by an earlier merge.
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size() || !known_[id]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bpe tokenizer: id ", id, " at position ", i,
          id < 0 || id >= vocab_size() ? absl::StrCat(" is outside [0, ", vocab_size(), ")")
                                       : std::string(" is not assigned to any token")));
    }
    text += id_to_bytes_[id];
  }
  return text;
}

// ---------------------------------------------------------------------------
// Loading.

class BpeTokenizerLoader {
 public:
  explicit BpeTokenizerLoader(absl::string_view source) : source_(source) {}

  absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const Json& root);

 private:
  absl::Status Error(absl::string_view key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": '", key, "': ", what));
  }
  absl::Status Unsupported(absl::string_view key, absl::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(source_, ": '", key, "': ", what));
  }
  absl::StatusOr<bool> Bool(const Json& object, absl::string_view key, absl::string_view path,
                            bool default_value) const;
  absl::StatusOr<std::string> TypeOf(const Json& object, absl::string_view path) const;

  absl::Status LoadNormalizer(const Json& config, absl::string_view path);
  absl::Status LoadPreTokenizer(const Json& config, absl::string_view path);
  absl::Status LoadByteLevel(const Json& config, absl::string_view path);
  absl::Status LoadModel(const Json& model);
  absl::Status LoadAddedTokens(const Json& added);
  absl::Status CheckPassThrough(const Json& config, absl::string_view path);

  std::string source_;
  std::unique_ptr<BpeTokenizer> tok_ = std::make_unique<BpeTokenizer>();
  bool saw_byte_level_ = false;
  bool saw_gpt2_split_ = false;
};

absl::StatusOr<bool> BpeTokenizerLoader::Bool(const Json& object, absl::string_view key,
                                              absl::string_view path, bool default_value) const {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) return Error(absl::StrCat(path, ".", key), "expected a boolean");
  return it->get<bool>();
}

absl::StatusOr<std::string> BpeTokenizerLoader::TypeOf(const Json& object,
                                                       absl::string_view path) const {
  if (!object.is_object()) return Error(path, "expected an object");
  auto it = object.find("type");
  if (it == object.end() || !it->is_string()) {
    return Error(absl::StrCat(path, ".type"), "missing or not a string");
  }
  return it->get<std::string>();
}

absl::Status BpeTokenizerLoader::LoadNormalizer(const Json& config, absl::string_view path) {
  if (config.is_null()) return absl::OkStatus();
  LF_ASSIGN_OR_RETURN(const std::string type, TypeOf(config, path));
  if (type == "NFC") {
    if (!tok_->nfc_) {
      LF_ASSIGN_OR_RETURN(tok_->nfc_, NfcNormalizer::Create());
    }
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    auto it = config.find("normalizers");
    if (it == config.end() || !it->is_array()) {
      return Error(absl::StrCat(path, ".normalizers"), "expected an array");
    }
    for (size_t k = 0; k < it->size(); ++k) {
      LF_RETURN_IF_ERROR(LoadNormalizer((*it)[k], absl::StrCat(path, ".normalizers[", k, "]")));
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(path, ".type"),
                     absl::StrCat("normalizer '", type, "' is not supported (only NFC)"));
}

absl::Status BpeTokenizerLoader::LoadByteLevel(const Json& config, absl::string_view path) {
  if (saw_byte_level_) return Unsupported(path, "more than one ByteLevel pre-tokenizer");
  saw_byte_level_ = true;
  LF_ASSIGN_OR_RETURN(tok_->add_prefix_space_, Bool(config, "add_prefix_space", path, true));
  LF_ASSIGN_OR_RETURN(const bool use_regex, Bool(config, "use_regex", path, true));
  if (saw_gpt2_split_ && tok_->add_prefix_space_) {
    // The prefix would then go on every word of the split, not every piece.
    return Unsupported(absl::StrCat(path, ".add_prefix_space"),
                       "add_prefix_space after a Split pre-tokenizer");
  }
  // Splitting the GPT-2 words again with the same pattern changes nothing.
  tok_->split_gpt2_ = use_regex || saw_gpt2_split_;
  return absl::OkStatus();
}

absl::Status BpeTokenizerLoader::LoadPreTokenizer(const Json& config, absl::string_view path) {
  if (config.is_null())
    return Unsupported(path, "a byte-level BPE needs a ByteLevel pre-tokenizer");
  LF_ASSIGN_OR_RETURN(const std::string type, TypeOf(config, path));
  if (type == "ByteLevel") return LoadByteLevel(config, path);
  if (type == "Sequence") {
    auto it = config.find("pretokenizers");
    if (it == config.end() || !it->is_array()) {
      return Error(absl::StrCat(path, ".pretokenizers"), "expected an array");
    }
    for (size_t k = 0; k < it->size(); ++k) {
      const Json& step = (*it)[k];
      const std::string step_path = absl::StrCat(path, ".pretokenizers[", k, "]");
      LF_ASSIGN_OR_RETURN(const std::string step_type, TypeOf(step, step_path));
      if (step_type == "ByteLevel") {
        LF_RETURN_IF_ERROR(LoadByteLevel(step, step_path));
      } else if (step_type == "Split" && !saw_byte_level_ &&
                 step.value(Json::json_pointer("/pattern/Regex"), "") == kGpt2Pattern &&
                 step.value("behavior", "") == "Isolated" && !step.value("invert", false)) {
        saw_gpt2_split_ = true;
      } else {
        return Unsupported(absl::StrCat(step_path, ".type"),
                           absl::StrCat("pre-tokenizer '", step_type,
                                        "' is not supported in a Sequence (only ByteLevel, "
                                        "and before it a Split with the GPT-2 pattern)"));
      }
    }
    if (!saw_byte_level_) {
      return Unsupported(path, "a byte-level BPE needs a ByteLevel pre-tokenizer");
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(path, ".type"),
                     absl::StrCat("pre-tokenizer '", type, "' is not supported (only ByteLevel)"));
}

// post_processor and decoder: ByteLevel (or a Sequence of it) changes
// nothing that Encode/Decode produce here; anything else would.
absl::Status BpeTokenizerLoader::CheckPassThrough(const Json& config, absl::string_view path) {
  if (config.is_null()) return absl::OkStatus();
  LF_ASSIGN_OR_RETURN(const std::string type, TypeOf(config, path));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    for (const char* key : {"processors", "decoders"}) {
      auto it = config.find(key);
      if (it == config.end()) continue;
      if (!it->is_array()) return Error(absl::StrCat(path, ".", key), "expected an array");
      for (size_t k = 0; k < it->size(); ++k) {
        LF_RETURN_IF_ERROR(CheckPassThrough((*it)[k], absl::StrCat(path, ".", key, "[", k, "]")));
      }
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(path, ".type"),
                     absl::StrCat("'", type, "' is not supported (only ByteLevel)"));
}

absl::Status BpeTokenizerLoader::LoadModel(const Json& model) {
  LF_ASSIGN_OR_RETURN(const std::string type, TypeOf(model, "model"));
  if (type != "BPE") {
    return Unsupported("model.type",
                       absl::StrCat("model '", type, "' is not supported (only BPE)"));
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number()) return Error("model.dropout", "expected a number or null");
    if (it->get<double>() > 0) {
      return Unsupported("model.dropout", "BPE dropout is random; only null/0 is supported");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      return Unsupported(absl::StrCat("model.", key), "only null or \"\" is supported");
    }
  }
  LF_ASSIGN_OR_RETURN(tok_->fuse_unk_, Bool(model, "fuse_unk", "model", false));
  LF_ASSIGN_OR_RETURN(tok_->byte_fallback_, Bool(model, "byte_fallback", "model", false));
  LF_ASSIGN_OR_RETURN(tok_->ignore_merges_, Bool(model, "ignore_merges", "model", false));

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return Error("model.vocab", "missing or not an object");
  }
  tok_->vocab_.reserve(vocab_it->size());
  for (const auto& [token, id_json] : vocab_it->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return Error(absl::StrCat("model.vocab[\"", token, "\"]"), "expected an id >= 0");
    }
    tok_->vocab_.emplace(token, static_cast<int32_t>(id_json.get<int64_t>()));
  }

  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) return Error("model.unk_token", "expected a string or null");
    auto unk = tok_->vocab_.find(it->get<std::string>());
    if (unk == tok_->vocab_.end()) {
      return Error("model.unk_token",
                   absl::StrCat("'", it->get<std::string>(), "' is not in model.vocab"));
    }
    tok_->unk_id_ = unk->second;
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return Error("model.merges", "missing or not an array");
  }
  tok_->merges_.reserve(merges_it->size());
  auto lookup = [&](const std::string& token, absl::string_view key) -> absl::StatusOr<int32_t> {
    auto it = tok_->vocab_.find(token);
    if (it == tok_->vocab_.end()) {
      return Error(key, absl::StrCat("'", token, "' is not in model.vocab"));
    }
    return it->second;
  };
  for (size_t rank = 0; rank < merges_it->size(); ++rank) {
    const Json& merge = (*merges_it)[rank];
    const std::string key = absl::StrCat("model.merges[", rank, "]");
    std::string a, b;
    if (merge.is_string()) {
      const std::string& line = merge.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return Error(key, absl::StrCat("'", line, "' is not two tokens separated by one space"));
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return Error(key, "expected \"a b\" or [\"a\", \"b\"]");
    }
    LF_ASSIGN_OR_RETURN(const int32_t id_a, lookup(a, key));
    LF_ASSIGN_OR_RETURN(const int32_t id_b, lookup(b, key));
    LF_ASSIGN_OR_RETURN(const int32_t id_ab, lookup(a + b, key));
    // A repeated pair keeps its first (best) rank, as in the reference.
    tok_->merges_.try_emplace(PairKey(id_a, id_b), MergeTarget{static_cast<int32_t>(rank), id_ab});
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizerLoader::LoadAddedTokens(const Json& added) {
  if (added.is_null()) return absl::OkStatus();
  if (!added.is_array()) return Error("added_tokens", "expected an array");
  for (size_t k = 0; k < added.size(); ++k) {
    const Json& entry = added[k];
    const std::string path = absl::StrCat("added_tokens[", k, "]");
    if (!entry.is_object()) return Error(path, "expected an object");
    auto id_it = entry.find("id");
    auto content_it = entry.find("content");
    if (id_it == entry.end() || !id_it->is_number_integer() || id_it->get<int64_t>() < 0 ||
        id_it->get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return Error(absl::StrCat(path, ".id"), "missing or not an id >= 0");
    }
    if (content_it == entry.end() || !content_it->is_string()) {
      return Error(absl::StrCat(path, ".content"), "missing or not a string");
    }
    AddedToken token;
    token.id = static_cast<int32_t>(id_it->get<int64_t>());
    token.content = content_it->get<std::string>();
    LF_ASSIGN_OR_RETURN(const bool special, Bool(entry, "special", path, false));
    LF_ASSIGN_OR_RETURN(const bool normalized, Bool(entry, "normalized", path, !special));
    LF_ASSIGN_OR_RETURN(token.single_word, Bool(entry, "single_word", path, false));
    LF_ASSIGN_OR_RETURN(token.lstrip, Bool(entry, "lstrip", path, false));
    LF_ASSIGN_OR_RETURN(token.rstrip, Bool(entry, "rstrip", path, false));

    // Decode gives the content back verbatim (the reference would run it
    // through the byte-level decoder, which mangles non-ASCII content).
    if (static_cast<size_t>(token.id) >= tok_->id_to_bytes_.size()) {
      tok_->id_to_bytes_.resize(token.id + 1);
      tok_->known_.resize(token.id + 1);
    }
    tok_->id_to_bytes_[token.id] = token.content;
    tok_->known_[token.id] = true;

    if (normalized) {
      if (tok_->nfc_) {
        std::string storage;
        token.content = std::string(tok_->nfc_->Normalize(token.content, &storage));
      }
      tok_->normalized_added_.Add(std::move(token));
    } else {
      tok_->raw_added_.Add(std::move(token));
    }
  }
  tok_->raw_added_.Finish();
  tok_->normalized_added_.Finish();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> BpeTokenizerLoader::Load(const Json& root) {
  if (!root.is_object()) return Error("", "the top level is not an object");
  auto get = [&](const char* key) -> const Json& {
    static const Json kNull;
    auto it = root.find(key);
    return it == root.end() ? kNull : *it;
  };
  auto model_it = root.find("model");
  if (model_it == root.end()) return Error("model", "missing");

  // Normalizer first: normalized added tokens are matched in normalized form.
  LF_RETURN_IF_ERROR(LoadNormalizer(get("normalizer"), "normalizer"));
  LF_RETURN_IF_ERROR(LoadPreTokenizer(get("pre_tokenizer"), "pre_tokenizer"));
  LF_RETURN_IF_ERROR(CheckPassThrough(get("post_processor"), "post_processor"));
  LF_RETURN_IF_ERROR(CheckPassThrough(get("decoder"), "decoder"));
  LF_RETURN_IF_ERROR(LoadModel(*model_it));

  // Byte-level symbols and the bytes each model token decodes to.
  const std::array<UChar32, 256> byte_to_cp = BytesToUnicode();
  absl::flat_hash_map<UChar32, unsigned char> cp_to_byte;
  for (int b = 0; b < 256; ++b) {
    tok_->byte_chars_[b] = EncodeUtf8(byte_to_cp[b]);
    auto it = tok_->vocab_.find(tok_->byte_chars_[b]);
    tok_->byte_ids_[b] = it == tok_->vocab_.end() ? -1 : it->second;
    cp_to_byte[byte_to_cp[b]] = static_cast<unsigned char>(b);
  }
  int32_t max_id = -1;
  for (const auto& [token, id] : tok_->vocab_) max_id = std::max(max_id, id);
  tok_->id_to_bytes_.resize(max_id + 1);
  tok_->known_.resize(max_id + 1);
  for (const auto& [token, id] : tok_->vocab_) {
    // As the reference's ByteLevel decoder: a token with a code point
    // outside the byte map decodes to its own UTF-8.
    std::string bytes;
    bool mapped = true;
    for (size_t i = 0; i < token.size() && mapped;) {
      auto it = cp_to_byte.find(NextCodePoint(token, &i));
      if (it == cp_to_byte.end()) {
        mapped = false;
      } else {
        bytes.push_back(static_cast<char>(it->second));
      }
    }
    tok_->id_to_bytes_[id] = mapped ? std::move(bytes) : token;
    tok_->known_[id] = true;
  }
  // Added tokens last: their content overrides a model token of the same id.
  LF_RETURN_IF_ERROR(LoadAddedTokens(get("added_tokens")));
  return std::unique_ptr<Tokenizer>(std::move(tok_));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerFromJson(std::string_view json,
                                                                    std::string_view source) {
  const absl::string_view name(source.data(), source.size());
  // nlohmann reports errors by exception; none may leave this function.
  try {
    const Json root = Json::parse(json);
    return BpeTokenizerLoader(name).Load(root);
  } catch (const Json::parse_error& e) {
    // The position only: nlohmann's message quotes the text it last read.
    return absl::InvalidArgumentError(absl::StrCat(name, ": malformed JSON near byte ", e.byte));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": unexpected JSON value: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const std::string& dir) {
  absl::StatusOr<ConfinedDir> folder = ConfinedDir::Open(dir, dir, dir);
  if (!folder.ok()) return folder.status();
  return LoadCheckpointTokenizer(*folder, kMaxTokenizerJsonBytes);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const ConfinedDir& dir,
                                                                   int64_t max_bytes) {
  constexpr absl::string_view kName = "tokenizer.json";
  if (!dir.Exists(kName)) return std::unique_ptr<Tokenizer>();
  absl::StatusOr<std::string> content = dir.ReadFile(kName, max_bytes);
  if (!content.ok()) return content.status();
  const std::string source = dir.DisplayName(kName);
  return LoadBpeTokenizerFromJson(*content, source);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizer(
    const std::string& tokenizer_json_path) {
  absl::StatusOr<std::string> content = ReadWholeFile(tokenizer_json_path);
  if (!content.ok()) return content.status();
  return LoadBpeTokenizerFromJson(*content, tokenizer_json_path);
}

}  // namespace layerflow::worker

// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (GPT-2,
// GPT-NeoX/Pythia, GPT-Neo style). Encode gives the same ids as the reference
// `tokenizers` library (checked by tests/worker/tokenizer parity test).
//
// Supported tokenizer.json subset (anything else is rejected at load time
// with an error naming the file and the key, never silently mis-tokenized):
//   normalizer     null, NFC, or a Sequence of those
//   pre_tokenizer  ByteLevel (add_prefix_space, use_regex with the GPT-2
//                  pattern), or a Sequence of ByteLevel steps and Split steps
//                  whose regex is the GPT-2 pattern
//   model          BPE: vocab, merges ("a b" or ["a", "b"]), unk_token,
//                  fuse_unk, byte_fallback, ignore_merges; no dropout and no
//                  continuing_subword_prefix / end_of_word_suffix
//   added_tokens   special and non-special, with single_word / lstrip /
//                  rstrip / normalized
//   post_processor null or ByteLevel (adds no tokens)
//   decoder        null or ByteLevel
//
// Decode differs from the reference in two deliberate ways: special tokens
// are kept (so Decode(Encode(s)) == s), and bytes are returned as they are
// rather than with invalid UTF-8 replaced by U+FFFD.
#ifndef LAYERFLOW_WORKER_TOKENIZER_BPE_TOKENIZER_H_
#define LAYERFLOW_WORKER_TOKENIZER_BPE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/confined_file.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

// Reads and parses `tokenizer_json_path`.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizer(const std::string& tokenizer_json_path);

// The default size limit of a tokenizer.json (the worker's
// --max-metadata-file-bytes sets the one jobs use).
inline constexpr int64_t kMaxTokenizerJsonBytes = int64_t{64} << 20;

// A checkpoint folder's own tokenizer, its tokenizer.json; nullptr when the
// folder has none (the caller's default then applies). The file is opened
// through `dir` (common/confined_file.h: a regular file of at most
// max_bytes inside the folder's bound); errors name "tokenizer.json".
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const ConfinedDir& dir,
                                                                   int64_t max_bytes);
// A folder this process trusts (tests, tools); errors name <dir>/tokenizer.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const std::string& dir);

// Parses tokenizer.json content; `source` names it in error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerFromJson(
    std::string_view json, std::string_view source = "<memory>");

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_TOKENIZER_BPE_TOKENIZER_H_

// The tokenizer for models without one (random-init presets): each UTF-8
// byte is one token, id = byte value (0..255). Decode(Encode(s)) == s for
// every byte string, valid UTF-8 or not.
#ifndef LAYERFLOW_WORKER_TOKENIZER_BYTE_TOKENIZER_H_
#define LAYERFLOW_WORKER_TOKENIZER_BYTE_TOKENIZER_H_

#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int64_t kVocabSize = 256;

  std::string name() const override { return "byte"; }
  std::vector<int32_t> Encode(std::string_view text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return kVocabSize; }
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_TOKENIZER_BYTE_TOKENIZER_H_

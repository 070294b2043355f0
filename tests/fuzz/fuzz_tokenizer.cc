// tokenizer.json (worker/tokenizer/bpe_tokenizer.h). A tokenizer that loads
// encodes fixed texts and the input itself; every id is in [0, vocab_size)
// and decodes (Tokenizer: "Never fails", "INVALID_ARGUMENT for an id outside
// [0, vocab_size())").
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "worker/tokenizer/bpe_tokenizer.h"

namespace {

void EncodeDecode(const layerflow::worker::Tokenizer& tokenizer, std::string_view text) {
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) {
      std::fprintf(stderr, "Encode gave id %d outside [0, %lld)\n", id,
                   static_cast<long long>(tokenizer.vocab_size()));
      std::abort();
    }
  }
  auto decoded = tokenizer.Decode(ids);
  if (!decoded.ok()) {
    std::fprintf(stderr, "Decode of Encode's ids failed: %s\n",
                 decoded.status().ToString().c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto tokenizer = layerflow::worker::LoadBpeTokenizerFromJson(text, "tokenizer.json");
  if (!tokenizer.ok()) return 0;
  EncodeDecode(**tokenizer, "Hello, world! 12 apples\n\tcaf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
  EncodeDecode(**tokenizer, text.substr(0, 512));
  return 0;
}

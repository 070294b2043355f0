// Text <-> token ids. Plain C++ (no LibTorch): the data sets use it to size
// prompts, the runtime to feed the model.
#ifndef LAYERFLOW_WORKER_TOKENIZER_TOKENIZER_H_
#define LAYERFLOW_WORKER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow::worker {

// Interface so that a BPE tokenizer (tokenizer.json) can be added beside the
// byte tokenizer without touching the data sets or the runtime.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  // Never fails: every string has an encoding.
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  // INVALID_ARGUMENT for an id outside [0, vocab_size()).
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_TOKENIZER_TOKENIZER_H_

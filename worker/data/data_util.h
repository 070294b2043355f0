// Helpers shared by the data sets (plain C++, no LibTorch): portable random
// draws from std::mt19937_64 (the standard fixes the engine's output but not
// the algorithms of std::uniform_*_distribution or std::shuffle, so the data
// sets use these instead and give the same prompts with every standard
// library), and the line reader of the JSONL sources.
#ifndef LAYERFLOW_WORKER_DATA_DATA_UTIL_H_
#define LAYERFLOW_WORKER_DATA_DATA_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/file_util.h"

namespace layerflow::worker {

// Uniform integer in [0, n), n >= 1: Lemire's multiply-shift with rejection
// (unbiased). Consumes one or more 64-bit draws.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n);
// Uniform double in [0, 1) from the top 53 bits of one draw.
double UniformUnit(std::mt19937_64& rng);

// Fisher-Yates from the back: for i = n-1 .. 1, swap v[i] with
// v[UniformBelow(rng, i + 1)].
template <typename T>
void PortableShuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformBelow(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

// Examples [begin, end) of a data set, each from dataset.Generate(i): what
// every data set's GenerateRange is. Stops at the first error.
template <typename Dataset>
auto GenerateRangeOf(const Dataset& dataset, int64_t begin, int64_t end)
    -> absl::StatusOr<std::vector<typename decltype(dataset.Generate(0))::value_type>> {
  std::vector<typename decltype(dataset.Generate(0))::value_type> examples;
  for (int64_t i = begin; i < end; ++i) {
    auto example = dataset.Generate(i);
    if (!example.ok()) return example.status();
    examples.push_back(*std::move(example));
  }
  return examples;
}

// One line of a text file, with its 1-based line number.
struct NumberedLine {
  int64_t number = 0;
  std::string text;
};
// The lines of a file that hold something other than whitespace ("\n" and
// "\r\n" both end a line). NOT_FOUND naming the path if it cannot be opened.
absl::StatusOr<std::vector<NumberedLine>> ReadNonBlankLines(const std::string& path);
// The same of a file's contents already read.
std::vector<NumberedLine> NonBlankLines(const std::string& contents);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_DATA_UTIL_H_

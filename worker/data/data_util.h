// Helpers shared by the data sets (plain C++, no LibTorch): portable random
// draws from std::mt19937_64 (the standard fixes the engine's output but not
// the algorithms of std::uniform_*_distribution or std::shuffle, so the data
// sets use these instead and give the same prompts with every standard
// library), and the line reader of the JSONL sources.
#ifndef LAYERFLOW_WORKER_DATA_DATA_UTIL_H_
#define LAYERFLOW_WORKER_DATA_DATA_UTIL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
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
// every data set's GenerateRange is. The examples are made on up to
// kGenerateThreads threads (each depends only on its index: the result is
// the same on any number), and the first error in index order is returned.
// Generation is CPU work (KVPR tokenises a prompt ~15 times to fit it to the
// context) that a worker does while its device waits.
inline constexpr int64_t kGenerateThreads = 8;
template <typename Dataset>
auto GenerateRangeOf(const Dataset& dataset, int64_t begin, int64_t end)
    -> absl::StatusOr<std::vector<typename decltype(dataset.Generate(0))::value_type>> {
  using Example = typename decltype(dataset.Generate(0))::value_type;
  const int64_t count = std::max<int64_t>(0, end - begin);
  std::vector<absl::StatusOr<Example>> made(count, absl::UnknownError("not made"));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next++; i < count; i = next++) {
      try {
        made[i] = dataset.Generate(begin + i);
      } catch (const std::exception& e) {  // a helper thread must not end the process
        made[i] = absl::ResourceExhaustedError(
            absl::StrCat("prompt ", begin + i, ": ", e.what()));
      }
    }
  };
  const int64_t threads = std::min<int64_t>(
      {count, kGenerateThreads, std::max<int64_t>(1, std::thread::hardware_concurrency())});
  std::vector<std::thread> helpers;
  try {
    for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  } catch (const std::system_error&) {
    // No thread to be had: the ones started and this one do the rest.
  }
  work();
  for (std::thread& t : helpers) t.join();
  std::vector<Example> examples;
  examples.reserve(count);
  for (absl::StatusOr<Example>& example : made) {
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

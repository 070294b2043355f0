// What the bench binaries share: command-line flags (`--name value` pairs,
// no validation beyond what each bench does with the value) and timing.
#ifndef LAYERFLOW_BENCH_BENCH_UTIL_H_
#define LAYERFLOW_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace layerflow::bench {

// The value after `name`, or `fallback` when the flag is absent.
inline std::string Flag(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

// Wall milliseconds of run().
template <typename F>
double ElapsedMs(F&& run) {
  const auto t0 = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The median of ElapsedMs(run) over `reps` runs after `warmups` untimed ones
// (allocator, kernels, cuBLAS handles).
template <typename F>
double MedianMs(int reps, F&& run, int warmups = 1) {
  for (int i = 0; i < warmups; ++i) run();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) ms.push_back(ElapsedMs(run));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace layerflow::bench

#endif  // LAYERFLOW_BENCH_BENCH_UTIL_H_

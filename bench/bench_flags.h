// Command-line flags of the bench binaries: `--name value` pairs, no
// validation beyond what each bench does with the value.
#ifndef LAYERFLOW_BENCH_BENCH_FLAGS_H_
#define LAYERFLOW_BENCH_BENCH_FLAGS_H_

#include <cstring>
#include <string>

namespace layerflow::bench {

// The value after `name`, or `fallback` when the flag is absent.
inline std::string Flag(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

}  // namespace layerflow::bench

#endif  // LAYERFLOW_BENCH_BENCH_FLAGS_H_

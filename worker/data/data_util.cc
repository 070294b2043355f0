#include "worker/data/data_util.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerflow::worker {

uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  // 128-bit product; reject the low part below 2^64 mod n.
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double UniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

absl::StatusOr<std::vector<NumberedLine>> ReadNonBlankLines(const std::string& path) {
  auto contents = ReadWholeFile(path);
  if (!contents.ok()) return contents.status();
  return NonBlankLines(*contents);
}

std::vector<NumberedLine> NonBlankLines(const std::string& s) {
  std::vector<NumberedLine> lines;
  int64_t number = 0;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    ++number;
    std::string line = s.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r\f\v") != std::string::npos) {
      lines.push_back({number, std::move(line)});
    }
    start = end + 1;
  }
  return lines;
}

}  // namespace layerflow::worker

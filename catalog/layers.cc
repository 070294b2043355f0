#include "catalog/layers.h"

#include <algorithm>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerflow::catalog {

absl::StatusOr<std::vector<int32_t>> ResolveLayers(const std::vector<int32_t>& layers,
                                                   int64_t num_layers, absl::string_view field,
                                                   absl::string_view model) {
  const int64_t points = num_layers + 2;
  std::vector<int32_t> out;
  if (layers.empty()) {
    for (int64_t p = 0; p < points; ++p) out.push_back(static_cast<int32_t>(p));
    return out;
  }
  std::map<int64_t, size_t> first;  // point -> the entry that named it
  for (size_t i = 0; i < layers.size(); ++i) {
    const int64_t entry = layers[i];
    const std::string name = absl::StrCat(field, "[", i, "]");
    if (entry < -points || entry >= points) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", entry, " is out of range for ", model, " (", num_layers,
          " blocks: points 0..", points - 1, ", or -", points, "..-1 counting from the end)"));
    }
    const int64_t point = entry < 0 ? points + entry : entry;
    const auto [at, inserted] = first.emplace(point, i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", entry, " is point ", point, " of ",
                                                     model, ", the same as ", field, "[",
                                                     at->second, "] (", layers[at->second], ")"));
    }
    out.push_back(static_cast<int32_t>(point));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace layerflow::catalog

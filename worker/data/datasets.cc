#include "worker/data/datasets.h"

#include <algorithm>

namespace layerflow::worker {

std::vector<std::string> KnownDatasets() {
  return {"kvpr", "mdqa", "mqar", "text"};
}

bool IsKnownDataset(std::string_view name) {
  const std::vector<std::string> known = KnownDatasets();
  return std::find(known.begin(), known.end(), name) != known.end();
}

bool DatasetHasClasses(std::string_view name) {
  return name == "kvpr" || name == "mdqa";
}

bool DatasetUsesTokenizer(std::string_view name) {
  return IsKnownDataset(name) && name != "mqar";
}

}  // namespace layerflow::worker

// The data sets of worker/data, by name (METHODS.md, "Data sets";
// docs/datasets.md has the exact formats).
#ifndef LAYERFLOW_WORKER_DATA_DATASETS_H_
#define LAYERFLOW_WORKER_DATA_DATASETS_H_

#include <string>
#include <string_view>
#include <vector>

namespace layerflow::worker {

// {"kvpr", "mdqa", "mqar", "text"}, sorted.
std::vector<std::string> KnownDatasets();
bool IsKnownDataset(std::string_view name);
// Whether the examples carry a gold class (a probing label): kvpr and mdqa.
bool DatasetHasClasses(std::string_view name);
// Whether the data set is read through a text tokenizer (all but mqar, which
// gives token ids directly).
bool DatasetUsesTokenizer(std::string_view name);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_DATA_DATASETS_H_

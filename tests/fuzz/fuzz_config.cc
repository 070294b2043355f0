// config.json of a checkpoint (worker/model/config_json.h). Invariant: a
// config that parses serializes (CheckpointConfigJson) to a config.json that
// parses again as a model of the same shape.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include "absl/strings/string_view.h"

#include "worker/model/config_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = layerflow::worker::ParseCheckpointConfigJson(text, "config.json");
  if (!config.ok()) return 0;
  const std::string again = layerflow::worker::CheckpointConfigJson(config->model);
  auto reparsed = layerflow::worker::ParseCheckpointConfigJson(again, "written config.json");
  if (!reparsed.ok()) {
    std::fprintf(stderr, "a parsed config.json does not read back: %s\n%s\n",
                 reparsed.status().ToString().c_str(), again.c_str());
    std::abort();
  }
  return 0;
}

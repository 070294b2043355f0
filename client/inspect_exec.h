// `layerflow inspect`: runs the layerflow-inspect binary with the given
// arguments. layerflow-inspect links LibTorch, which the CLI never does
// (common/worker_process.h says why), so the CLI only starts it.
#ifndef LAYERFLOW_CLIENT_INSPECT_EXEC_H_
#define LAYERFLOW_CLIENT_INSPECT_EXEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow::client {

// $LAYERFLOW_INSPECT_BIN, else layerflow-inspect beside this executable or in
// ../worker/ (the build tree's layout, like layerflow-worker). NOT_FOUND
// lists where it looked.
absl::StatusOr<std::string> LocateInspectBinary();

// Runs it with `args` (stdin/stdout/stderr inherited) and waits; returns its
// exit status (128 + signal when killed).
absl::StatusOr<int> RunInspect(const std::vector<std::string>& args);

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_INSPECT_EXEC_H_

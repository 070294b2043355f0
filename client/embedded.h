// `layerflow run`'s embedded coordinator + in-process worker. Built only
// when the coordinator and worker libraries are (client/CMakeLists.txt).
#ifndef LAYERFLOW_CLIENT_EMBEDDED_H_
#define LAYERFLOW_CLIENT_EMBEDDED_H_

#include <memory>

#include "absl/status/statusor.h"
#include "client/cli.h"

namespace layerflow::client {

// Starts a coordinator on 127.0.0.1:<free port> with a SQLite store and a
// worker on this machine's devices (DetectDevices()). Matches
// EmbeddedStarter.
absl::StatusOr<std::unique_ptr<EmbeddedCluster>> StartEmbeddedCluster(
    const EmbeddedOptions& options, CallCanceller* canceller);

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_EMBEDDED_H_

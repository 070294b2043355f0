// Sweep files: the YAML a researcher writes, parsed into a SweepSpec.
//
// The client checks only shape and types (lists vs scalars, integers vs
// strings, unknown keys) so that a typo is reported with its file, line and
// column before anything is sent. Semantic checks (known model names, valid
// init schemes, ranges) are the coordinator's, so there is one source of
// truth for them. See docs/sweep-file.md for the format.
#ifndef LAYERFLOW_CLIENT_SWEEP_FILE_H_
#define LAYERFLOW_CLIENT_SWEEP_FILE_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::client {

// Parses YAML text. `source_name` prefixes every error location
// ("SOURCE:LINE:COL: field 'seeds[1]': expected an integer, got 'abc'");
// lines and columns are 1-based. Errors are INVALID_ARGUMENT.
absl::StatusOr<v1::SweepSpec> ParseSweepYaml(absl::string_view yaml, absl::string_view source_name);

// Reads and parses a sweep file. NOT_FOUND when the file does not exist,
// PERMISSION_DENIED when it cannot be read, INVALID_ARGUMENT otherwise.
absl::StatusOr<v1::SweepSpec> ParseSweepFile(const std::string& path);

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_SWEEP_FILE_H_

// Caps on the strings and repeated fields of requests (common/api_limits.h)
// and the coordinator's page tokens. INVALID_ARGUMENT naming the field, the
// size and the cap; the value itself is never repeated.
#ifndef LAYERFLOW_SERVER_CORE_REQUEST_LIMITS_H_
#define LAYERFLOW_SERVER_CORE_REQUEST_LIMITS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "layerflow/v1/worker.pb.h"

namespace layerflow::server {

// "<field>: 300 bytes, more than the limit of 256".
absl::Status CheckLength(absl::string_view field, absl::string_view value, int64_t max_bytes);
// "<field>: 2000 entries, more than the limit of 1024".
absl::Status CheckCount(absl::string_view field, int64_t count, int64_t max_count);

// RegisterWorker: name, capabilities.device_type, .architectures (count
// and each), gpu_count and gpu_memory_bytes >= 0.
absl::Status ValidateRegisterWorkerRequest(const layerflow::v1::RegisterWorkerRequest& request);

// LeaseJob's resident_models: at most limits::kMaxResidentModels entries,
// each with a model (required, within kMaxModelBytes) and init_scheme and
// dtype within kMaxShortNameBytes; "resident_models[3].model: ...".
// (worker_id is checked by the core like every id.)
absl::Status ValidateLeaseJobRequest(const layerflow::v1::LeaseJobRequest& request);

// page_size 0 -> `default_size`, above `max_size` -> `max_size`, negative:
// INVALID_ARGUMENT "page_size: ...".
absl::StatusOr<int32_t> EffectivePageSize(int32_t page_size, int32_t default_size,
                                          int32_t max_size);

// Where a paged listing continues: after the job `after_job_id` (empty: from
// the first), and for QueryResults a position inside it (`key`, opaque here,
// and `skip`). Encoded opaquely with a fingerprint of the request's filters
// (`kind` and `filters`), so a token cannot continue another listing; stable
// across coordinator restarts.
struct PageCursor {
  std::string after_job_id;
  int64_t skip = 0;
  std::string key;
};
std::string EncodePageToken(absl::string_view kind, const std::vector<std::string>& filters,
                            const PageCursor& cursor);
// Empty token -> the first page. INVALID_ARGUMENT "page_token: ..." for a
// token that does not decode or belongs to another listing.
absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, absl::string_view kind,
                                           const std::vector<std::string>& filters);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_CORE_REQUEST_LIMITS_H_

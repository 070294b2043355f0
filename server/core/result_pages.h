// QueryResults one page at a time: the store's merged rows, each job's
// derived rows (server/derived) after its own, resumable at any row from a
// page token (server/core/request_limits.h). The store is read by keyset
// (ResultFilter.after_job_id / after_key / row_limit), so a page costs about
// its own rows however large the sweep or the job, plus the rows of each job
// whose derived rows fall in the page.
#ifndef LAYERFLOW_SERVER_CORE_RESULT_PAGES_H_
#define LAYERFLOW_SERVER_CORE_RESULT_PAGES_H_

#include "absl/status/statusor.h"
#include "layerflow/v1/coordinator.pb.h"
#include "server/store/store.h"

namespace layerflow::server {

// One page of `request` (its page_size and page_token; the filters already
// checked by the caller). INVALID_ARGUMENT "page_size: ..." or
// "page_token: ..."; NOT_FOUND for an unknown sweep.
absl::StatusOr<layerflow::v1::QueryResultsResponse> QueryResultsPage(
    Store& store, const layerflow::v1::QueryResultsRequest& request);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_CORE_RESULT_PAGES_H_

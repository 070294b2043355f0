// Helpers of the tests that drive a CoordinatorCore (or a coordinator over
// gRPC) directly: a core on a fresh SQLite store, and the one-row chunk
// that completes a one-chunk job.
#ifndef LAYERFLOW_TESTS_SERVER_CORE_UTIL_H_
#define LAYERFLOW_TESTS_SERVER_CORE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "layerflow/v1/experiment.pb.h"
#include "layerflow/v1/worker.pb.h"
#include "server/core/coordinator_core.h"
#include "server/store/sqlite_store.h"

namespace layerflow::server::testing {

// A CoordinatorCore on a new SQLite store at `path`; `metrics` as for the
// core (may be null, else outlives it).
inline absl::StatusOr<std::unique_ptr<CoordinatorCore>> CoreOnSqlite(const std::string& path,
                                                                     const CoreOptions& options,
                                                                     Clock clock,
                                                                     Metrics* metrics = nullptr) {
  auto store = OpenSqliteStore(path);
  if (!store.ok()) return store.status();
  return std::make_unique<CoordinatorCore>(*std::move(store), options, std::move(clock), metrics);
}

// Chunk `sequence` of the leased job with one row: adjacent_cos at layer 0,
// sum 1, sum of squares 0.5, over 2 prompts.
inline v1::ResultChunk OneStatChunk(const v1::LeaseJobResponse& lease, int64_t sequence = 0) {
  v1::ResultChunk chunk;
  chunk.set_job_id(lease.job().job_id());
  chunk.set_lease_id(lease.lease_id());
  chunk.set_sequence(sequence);
  v1::MetricStat* stat = chunk.add_stats();
  stat->set_metric("adjacent_cos");
  stat->set_layer(0);
  stat->set_sum(1.0);
  stat->set_sum_sq(0.5);
  stat->set_count(2);
  return chunk;
}

}  // namespace layerflow::server::testing

#endif  // LAYERFLOW_TESTS_SERVER_CORE_UTIL_H_

// What `layerflow workers` and `layerflow watch` print about the pool:
// the workers table and a sweep's queue (docs/cli.md).
#ifndef LAYERFLOW_CLIENT_POOL_OUTPUT_H_
#define LAYERFLOW_CLIENT_POOL_OUTPUT_H_

#include <cstdint>
#include <string>

#include "layerflow/v1/coordinator.pb.h"

namespace layerflow::client {

// "idle", "running", "quarantined", "gone" ("?" for an unknown value).
std::string WorkerStateName(v1::WorkerState state);

// One row per worker (WORKER HOST DEVICE GPUS STATE JOB LAST-SEEN), a
// "reason:" line under a quarantined worker when the reply has one, then
// the totals: "N workers on H hosts: r running, i idle, q quarantined, g
// gone; GPUs b of t busy". `now_ms` dates "last seen".
std::string FormatWorkersTable(const v1::ListWorkersResponse& workers, int64_t now_ms);

// An expected start for people: "now", "in ~45 s", "in ~12 min",
// "in ~3.5 h", "unknown" (negative).
std::string FormatExpectedStart(double seconds);

// A sweep's queue: a summary line ("queue: 3 of this sweep's jobs queued;
// the pool: 4 queued, 1 running, 2 workers; recent jobs 10 s (1)"), then
// for each queued job of the sweep, at most `max_jobs` of them, its id,
// position and expected start ("blocked" when its dependency has not
// succeeded). Nothing queued: the summary line alone.
std::string FormatQueue(const v1::GetQueueResponse& queue, int max_jobs = 20);

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_POOL_OUTPUT_H_

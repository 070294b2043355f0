// gRPC message limits, past gRPC's 4 MiB default, in one place for the
// coordinator, the worker and the CLI (header-only).
#ifndef LAYERFLOW_COMMON_GRPC_LIMITS_H_
#define LAYERFLOW_COMMON_GRPC_LIMITS_H_

namespace layerflow {

// What the coordinator and a worker receive: a result chunk of a large
// model's spectra or heat maps (64 layers x 80 heads x 13 rows approaches
// 4 MiB), a job, an artifact chunk.
inline constexpr int kMaxChunkMessageBytes = 256 << 20;

// What the CLI receives: one page of QueryResults (at most 50000 rows,
// common/api_limits.h; a page of rows with spectra is a few MiB).
inline constexpr int kMaxQueryReplyBytes = 1 << 30;

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_GRPC_LIMITS_H_

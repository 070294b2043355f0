// Caps on the strings and repeated fields of every request (issue 14,
// "limits on everything"), in one place for the coordinator (which refuses
// a larger field with INVALID_ARGUMENT naming it, server/core/
// request_limits.h), the worker (which cuts its own error text to fit) and
// the CLI (page sizes). Header-only; the numbers are in docs/operations.md.
#ifndef LAYERFLOW_COMMON_API_LIMITS_H_
#define LAYERFLOW_COMMON_API_LIMITS_H_

#include <cstdint>
#include <string>

namespace layerflow::limits {

// Ids the coordinator hands out (sweep, job, lease, worker ids) and the
// filters naming them.
inline constexpr int64_t kMaxIdBytes = 128;
// Opaque page tokens (ListJobs, QueryResults).
inline constexpr int64_t kMaxPageTokenBytes = 1024;
// A model name: a preset, an ORG/NAME repo id or a worker-side path.
inline constexpr int64_t kMaxModelBytes = 4096;
// Short names: metric, analysis, init scheme, data set, dtype, device type,
// architecture, probe task, QueryResults' metric filter.
inline constexpr int64_t kMaxShortNameBytes = 256;
// RegisterWorker's free-form worker name.
inline constexpr int64_t kMaxWorkerNameBytes = 256;
// FailJob's error text (the worker cuts a longer one to fit).
inline constexpr int64_t kMaxErrorBytes = 8192;
// Values of each repeated axis of a sweep (models, seeds, context lengths,
// data sets, init schemes, analyses) and of probe.seeds: the most jobs a
// sweep may expand to.
inline constexpr int64_t kMaxAxisValues = 10000;
// RegisterWorker: entries of capabilities.architectures.
inline constexpr int64_t kMaxArchitectures = 64;
// LeaseJob: entries of resident_models (a worker reports its most recently
// used models first and drops the rest).
inline constexpr int64_t kMaxResidentModels = 64;
// A result chunk's stats (the 256 MiB message cap allows about this many).
inline constexpr int64_t kMaxStatsPerChunk = int64_t{1} << 22;
// Artifact names ("<job_id>/features/000003") and list prefixes.
inline constexpr int64_t kMaxArtifactNameBytes = 512;

// Paging (ListJobs, QueryResults): page_size 0 takes the default, a larger
// one than the maximum is served as the maximum (AIP-158).
inline constexpr int32_t kDefaultJobsPageSize = 500;
inline constexpr int32_t kMaxJobsPageSize = 5000;
inline constexpr int32_t kDefaultResultsPageSize = 5000;
inline constexpr int32_t kMaxResultsPageSize = 50000;

// `text` cut to at most `max_bytes` (> 11) bytes ending in " ... (cut)",
// never inside a UTF-8 sequence; unchanged when it fits.
inline std::string CutToLimit(std::string text, int64_t max_bytes) {
  if (static_cast<int64_t>(text.size()) <= max_bytes) return text;
  static constexpr char kCut[] = " ... (cut)";
  text.resize(static_cast<size_t>(max_bytes) - (sizeof(kCut) - 1));
  // Drop a trailing partial sequence: continuation bytes, then their lead.
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) {
    text.pop_back();
  }
  if (!text.empty() && (static_cast<unsigned char>(text.back()) & 0x80) != 0) text.pop_back();
  return text + kCut;
}

}  // namespace layerflow::limits

#endif  // LAYERFLOW_COMMON_API_LIMITS_H_

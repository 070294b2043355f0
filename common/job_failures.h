// How a job's error is judged (issue 14, "Failures"): the one place that
// decides whether a failed attempt fails the job for good or is retried on
// another worker, and how long a retried job waits. The coordinator applies
// it to every FailJob (the code and text a worker reports); header-only, no
// gRPC, no LibTorch, so worker and server tests share it. docs/operations.md
// ("Failures and retries") lists the rules.
#ifndef LAYERFLOW_COMMON_JOB_FAILURES_H_
#define LAYERFLOW_COMMON_JOB_FAILURES_H_

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/match.h"

namespace layerflow {

enum class JobErrorClass {
  // The spec itself is wrong: every worker would fail it the same way, so
  // retrying only burns GPU time. The job fails at once.
  kBadInput,
  // Something about the host that ran it (out of memory, a CUDA fault, a
  // file missing on that host, a broken disk): another worker may well
  // succeed. Retried elsewhere with backoff, up to the attempt limit.
  kHostError,
};

inline const char* JobErrorClassName(JobErrorClass c) {
  return c == JobErrorClass::kBadInput ? "bad input" : "host error";
}

// "Not found" is both "the spec names a model that does not exist" (bad
// input) and "this host lacks a file another host may have" (host error),
// and the worker's model loader reports either as INVALID_ARGUMENT naming
// the field ("model: ..."). The worker's host-local lookups say so in their
// text; nothing a spec gets wrong does.
inline bool NamesAFileMissingOnThisHost(absl::string_view message) {
  for (absl::string_view phrase :
       {"in this worker's Hugging Face cache", "under this worker's model folders",
        "under the worker's model roots", "no model roots on this worker", "on this host"}) {
    if (absl::StrContains(message, phrase)) return true;
  }
  return false;
}

inline JobErrorClass ClassifyJobError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
      return NamesAFileMissingOnThisHost(status.message()) ? JobErrorClass::kHostError
                                                           : JobErrorClass::kBadInput;
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kOutOfRange:
    // A name outside the worker's model roots: the spec asked for a path
    // no worker may open.
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kAlreadyExists:
      return JobErrorClass::kBadInput;
    // RESOURCE_EXHAUSTED (out of memory), INTERNAL and UNKNOWN (a CUDA
    // fault, an exception from LibTorch), UNAVAILABLE, DATA_LOSS (a disk
    // returning garbage), DEADLINE_EXCEEDED and anything new: retrying is
    // bounded by the attempt limit, failing a healthy job is not undoable.
    default:
      return JobErrorClass::kHostError;
  }
}

// The wait before attempt `attempts` + 1 of a job whose attempt number
// `attempts` (1-based) failed: base * 2^(attempts-1), at most cap (cap <= 0:
// no cap). Never overflows, never negative.
inline int64_t RetryBackoffMs(int64_t attempts, int64_t base_ms, int64_t cap_ms) {
  if (base_ms <= 0) return 0;
  const int64_t shift = std::clamp<int64_t>(attempts - 1, 0, 62);
  int64_t delay = base_ms;
  for (int64_t i = 0; i < shift; ++i) {
    if (delay > INT64_MAX / 2) {
      delay = INT64_MAX;
      break;
    }
    delay *= 2;
    if (cap_ms > 0 && delay >= cap_ms) break;
  }
  return cap_ms > 0 ? std::min(delay, cap_ms) : delay;
}

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_JOB_FAILURES_H_

// ClassifyJobError and RetryBackoffMs (common/job_failures.h). The bug they
// exist for (issue 14, failure 3): every job error was final, so a worker
// short of memory failed half a sweep for good. These pin which errors
// fail at once and which go to another worker, and how long a retry waits.
#include "common/job_failures.h"

#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace layerflow {
namespace {

JobErrorClass Classify(absl::StatusCode code, const char* message) {
  return ClassifyJobError(absl::Status(code, message));
}

TEST(ClassifyJobError, BadInputFailsAtOnce) {
  // Messages the worker really produces for a wrong spec.
  EXPECT_EQ(Classify(absl::StatusCode::kInvalidArgument, "context_length: 0 must be positive"),
            JobErrorClass::kBadInput);
  EXPECT_EQ(Classify(absl::StatusCode::kFailedPrecondition,
                     "dtype: bfloat16 needs a GPU; this worker has none"),
            JobErrorClass::kBadInput);
  EXPECT_EQ(Classify(absl::StatusCode::kUnimplemented, "analysis 'foo' is not implemented"),
            JobErrorClass::kBadInput);
  EXPECT_EQ(Classify(absl::StatusCode::kPermissionDenied,
                     "model '../etc': outside this worker's model folders"),
            JobErrorClass::kBadInput);
  // NOT_FOUND of a model that exists nowhere: no worker can run it.
  EXPECT_EQ(Classify(absl::StatusCode::kNotFound,
                     "model 'pythia-7z': not a preset (unknown model preset 'pythia-7z'); a "
                     "checkpoint is a folder path or an ORG/NAME repo id, with a '/'"),
            JobErrorClass::kBadInput);
  EXPECT_EQ(Classify(absl::StatusCode::kNotFound,
                     "model: 'artifact:j-1/model' names no stored checkpoint"),
            JobErrorClass::kBadInput);
  // Naming the worker is not enough: an unknown data set is the spec's.
  EXPECT_EQ(Classify(absl::StatusCode::kInvalidArgument,
                     "dataset: unknown 'kvpr2'; this worker runs: kvpr, mdqa, text"),
            JobErrorClass::kBadInput);
}

TEST(ClassifyJobError, HostErrorsRetryElsewhere) {
  EXPECT_EQ(Classify(absl::StatusCode::kResourceExhausted,
                     "CUDA out of memory. Tried to allocate 2.00 GiB"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kInternal, "CUDA error: an illegal memory access"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kUnknown, "c10::Error: ..."), JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kUnavailable, "NCCL unhandled system error"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kDataLoss, "model.safetensors: short read"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kDeadlineExceeded, "x"), JobErrorClass::kHostError);
  // NOT_FOUND of a file this host lacks: another host may have it.
  EXPECT_EQ(Classify(absl::StatusCode::kNotFound,
                     "model 'EleutherAI/pythia-14m' is not in this worker's Hugging Face cache"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kNotFound,
                     "model 'ckpt/a': no such checkpoint folder under this worker's model "
                     "folders (--model-root)"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kNotFound, "data.jsonl: missing on this host"),
            JobErrorClass::kHostError);
  // The worker's model loader reports a missing checkpoint as INVALID_ARGUMENT
  // naming the field (worker/runtime/model_loader.cc); the text still says
  // it is this host's cache (the real worker's message).
  EXPECT_EQ(Classify(absl::StatusCode::kInvalidArgument,
                     "model: model 'EleutherAI/pythia-14m' is not in this worker's Hugging Face "
                     "cache; this build never downloads: fetch it with `huggingface-cli "
                     "download EleutherAI/pythia-14m` or pass a checkpoint folder under the "
                     "worker's --model-root"),
            JobErrorClass::kHostError);
  EXPECT_EQ(Classify(absl::StatusCode::kInvalidArgument,
                     "dataset_path: 'corpus/a.txt' is not a file under the worker's model roots"),
            JobErrorClass::kHostError);
}

TEST(ClassifyJobError, NamesOfTheClasses) {
  EXPECT_STREQ(JobErrorClassName(JobErrorClass::kBadInput), "bad input");
  EXPECT_STREQ(JobErrorClassName(JobErrorClass::kHostError), "host error");
}

TEST(RetryBackoffMs, DoublesFromTheBaseUpToTheCap) {
  // base 1000, cap 60000: 1 s, 2 s, 4 s, ..., 32 s, then 60 s for ever.
  const int64_t expected[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
  for (int attempts = 1; attempts <= 8; ++attempts) {
    EXPECT_EQ(RetryBackoffMs(attempts, 1000, 60000), expected[attempts - 1]) << attempts;
  }
  // attempts 0 (never leased) waits the base, like attempt 1.
  EXPECT_EQ(RetryBackoffMs(0, 1000, 60000), 1000);
  // A cap below the base wins.
  EXPECT_EQ(RetryBackoffMs(1, 1000, 300), 300);
}

TEST(RetryBackoffMs, NoCapNeverOverflows) {
  EXPECT_EQ(RetryBackoffMs(11, 500, 0), 500 * 1024);
  EXPECT_EQ(RetryBackoffMs(1000, 1000, 0), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(RetryBackoffMs(1000, 1000, 60000), 60000);
  EXPECT_EQ(RetryBackoffMs(5, 0, 60000), 0);
}

}  // namespace
}  // namespace layerflow

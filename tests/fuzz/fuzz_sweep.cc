// A sweep file as `layerflow submit` parses it, and a SweepSpec as the
// coordinator receives it over gRPC (any bytes that parse as the message):
// validated, defaulted and expanded as CoordinatorCore::SubmitSweep does.
// Invariants: expansion yields CountSweepJobs jobs, each with a positive
// chunk count, and dependencies point at earlier jobs.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include "absl/strings/string_view.h"

#include "client/sweep_file.h"
#include "google/protobuf/stubs/logging.h"
#include "layerflow/v1/experiment.pb.h"
#include "server/spec/sweep_spec.h"

namespace {

using layerflow::v1::SweepSpec;

// Large sweeps are valid (up to the coordinator's caps) but expanding
// thousands of jobs per input only slows the search down.
constexpr int64_t kMaxExpanded = 2000;

[[noreturn]] void Violated(const char* what, long long a, long long b) {
  std::fprintf(stderr, "invariant violated: %s (%lld vs %lld)\n", what, a, b);
  std::abort();
}

void Check(const SweepSpec& spec) {
  if (!layerflow::server::ValidateSweepSpec(spec).ok()) return;
  const SweepSpec full = layerflow::server::WithDefaults(spec);
  // Defaults are idempotent and keep the spec valid.
  if (!layerflow::server::ValidateSweepSpec(full).ok()) Violated("defaulted spec invalid", 0, 0);
  const int64_t count = layerflow::server::CountSweepJobs(full);
  if (count < 1) Violated("CountSweepJobs < 1", count, 1);
  if (count > kMaxExpanded) return;
  const auto jobs = layerflow::server::ExpandSweepJobs(full);
  if (static_cast<int64_t>(jobs.size()) != count) {
    Violated("ExpandSweepJobs size != CountSweepJobs", static_cast<long long>(jobs.size()), count);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].depends_on >= static_cast<int>(i))
      Violated("depends on a later job", jobs[i].depends_on, i);
    if (layerflow::server::ChunksTotal(jobs[i].spec) < 1) {
      Violated("ChunksTotal < 1", layerflow::server::ChunksTotal(jobs[i].spec), 1);
    }
  }
}

}  // namespace

// Bytes that are no UTF-8 in a string field make protobuf log each time.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = layerflow::client::ParseSweepYaml(text, "fuzz.yaml");
  if (parsed.ok()) Check(*parsed);
  SweepSpec wire;
  if (wire.ParseFromArray(data, static_cast<int>(size))) Check(wire);
  return 0;
}

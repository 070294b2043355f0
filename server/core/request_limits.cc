#include "server/core/request_limits.h"

#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/api_limits.h"

namespace layerflow::server {
namespace {

// FNV-1a over the filters (with separators): stable across processes, unlike
// absl::Hash. Not a secret: it only tells tokens of different listings apart.
std::string Fingerprint(absl::string_view kind, const std::vector<std::string>& filters) {
  uint64_t h = 1469598103934665603ull;
  auto add = [&h](absl::string_view bytes) {
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // separator
    h *= 1099511628211ull;
  };
  add(kind);
  for (const std::string& f : filters) add(f);
  return absl::StrCat(absl::Hex(h, absl::kZeroPad16));
}

absl::Status BadToken(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("page_token: ", why));
}

}  // namespace

absl::Status CheckLength(absl::string_view field, absl::string_view value, int64_t max_bytes) {
  if (static_cast<int64_t>(value.size()) <= max_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", value.size(), " bytes, more than the limit of ", max_bytes));
}

absl::Status CheckCount(absl::string_view field, int64_t count, int64_t max_count) {
  if (count <= max_count) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", count, " entries, more than the limit of ", max_count));
}

absl::Status ValidateRegisterWorkerRequest(const layerflow::v1::RegisterWorkerRequest& request) {
  if (absl::Status s = CheckLength("name", request.name(), limits::kMaxWorkerNameBytes); !s.ok()) {
    return s;
  }
  const layerflow::v1::WorkerCapabilities& caps = request.capabilities();
  if (absl::Status s =
          CheckLength("capabilities.device_type", caps.device_type(), limits::kMaxShortNameBytes);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckCount("capabilities.architectures", caps.architectures_size(),
                                  limits::kMaxArchitectures);
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < caps.architectures_size(); ++i) {
    if (absl::Status s = CheckLength(absl::StrCat("capabilities.architectures[", i, "]"),
                                     caps.architectures(i), limits::kMaxShortNameBytes);
        !s.ok()) {
      return s;
    }
  }
  if (caps.gpu_count() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("capabilities.gpu_count: ", caps.gpu_count(), " is negative"));
  }
  if (caps.gpu_memory_bytes() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("capabilities.gpu_memory_bytes: ", caps.gpu_memory_bytes(), " is negative"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLeaseJobRequest(const layerflow::v1::LeaseJobRequest& request) {
  if (absl::Status s =
          CheckCount("resident_models", request.resident_models_size(), limits::kMaxResidentModels);
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < request.resident_models_size(); ++i) {
    const layerflow::v1::ResidentModel& m = request.resident_models(i);
    const std::string field = absl::StrCat("resident_models[", i, "]");
    // An entry without a model could never match a job: a worker bug.
    if (m.model().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".model: required"));
    }
    for (auto [name, value, max] : {std::tuple<const char*, const std::string&, int64_t>{
                                        "model", m.model(), limits::kMaxModelBytes},
                                    {"init_scheme", m.init_scheme(), limits::kMaxShortNameBytes},
                                    {"dtype", m.dtype(), limits::kMaxShortNameBytes}}) {
      if (absl::Status s = CheckLength(absl::StrCat(field, ".", name), value, max); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> EffectivePageSize(int32_t page_size, int32_t default_size,
                                          int32_t max_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: ", page_size, " is negative (0 means ", default_size, ")"));
  }
  if (page_size == 0) return default_size;
  return page_size > max_size ? max_size : page_size;
}

std::string EncodePageToken(absl::string_view kind, const std::vector<std::string>& filters,
                            const PageCursor& cursor) {
  // Length-prefixed fields: v1, fingerprint, skip, key, after_job_id.
  std::string raw;
  for (const std::string& field : {std::string("v1"), Fingerprint(kind, filters),
                                   absl::StrCat(cursor.skip), cursor.key, cursor.after_job_id}) {
    absl::StrAppend(&raw, field.size(), ":", field);
  }
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, absl::string_view kind,
                                           const std::vector<std::string>& filters) {
  PageCursor cursor;
  if (token.empty()) return cursor;
  if (absl::Status s = CheckLength("page_token", token, limits::kMaxPageTokenBytes); !s.ok()) {
    return s;
  }
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) {
    return BadToken("not a token this coordinator made");
  }
  std::vector<std::string> fields;
  absl::string_view rest = raw;
  while (!rest.empty() && fields.size() < 5) {
    const size_t colon = rest.find(':');
    size_t size = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, colon), &size) ||
        size > rest.size() - colon - 1) {
      return BadToken("not a token this coordinator made");
    }
    fields.emplace_back(rest.substr(colon + 1, size));
    rest.remove_prefix(colon + 1 + size);
  }
  if (fields.size() != 5 || !rest.empty() || fields[0] != "v1" ||
      !absl::SimpleAtoi(fields[2], &cursor.skip) || cursor.skip < 0) {
    return BadToken("not a token this coordinator made");
  }
  if (fields[1] != Fingerprint(kind, filters)) {
    return BadToken("belongs to another listing (the sweep or a filter changed)");
  }
  cursor.key = fields[3];
  cursor.after_job_id = fields[4];
  return cursor;
}

}  // namespace layerflow::server

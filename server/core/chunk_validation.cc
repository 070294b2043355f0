#include "server/core/chunk_validation.h"

#include <cmath>
#include <optional>
#include <utility>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace layerflow::server {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

}  // namespace

absl::Status ValidateResultChunk(const layerflow::v1::ResultChunk& chunk) {
  if (chunk.job_id().empty()) return Invalid("chunk.job_id", "required");
  if (chunk.lease_id().empty()) return Invalid("chunk.lease_id", "required");
  if (chunk.sequence() < 0) {
    return Invalid("chunk.sequence", absl::StrCat(chunk.sequence(), " is negative"));
  }
  absl::flat_hash_set<std::pair<std::string, std::string>> seen;
  for (int i = 0; i < chunk.stats_size(); ++i) {
    const layerflow::v1::MetricStat& stat = chunk.stats(i);
    const std::string field = absl::StrCat("chunk.stats[", i, "]");
    if (stat.metric().empty()) return Invalid(field + ".metric", "empty");
    if (stat.layer() < 0) {
      return Invalid(field + ".layer", absl::StrCat(stat.layer(), " is negative"));
    }
    if (stat.count() < 1) {
      return Invalid(field + ".count",
                     absl::StrCat(stat.count(), " is not positive"));
    }
    if (!std::isfinite(stat.sum())) return Invalid(field + ".sum", "not finite");
    if (!std::isfinite(stat.sum_sq()) || stat.sum_sq() < 0) {
      return Invalid(field + ".sum_sq", "not a finite non-negative number");
    }
    // Optional key fields: absent = not applicable, present = >= 0.
    const std::pair<const char*, std::optional<int32_t>> keys[] = {
        {"layer_b", stat.has_layer_b() ? std::optional<int32_t>(stat.layer_b())
                                       : std::nullopt},
        {"head", stat.has_head() ? std::optional<int32_t>(stat.head()) : std::nullopt},
        {"position", stat.has_position() ? std::optional<int32_t>(stat.position())
                                         : std::nullopt}};
    std::string where = absl::StrCat(" at layer ", stat.layer());
    for (const auto& [name, value] : keys) {
      if (!value.has_value()) continue;
      if (*value < 0) {
        return Invalid(absl::StrCat(field, ".", name),
                       absl::StrCat(*value, " is negative"));
      }
      absl::StrAppend(&where, " ", name, " ", *value);
    }
    if (!seen.emplace(stat.metric(), where).second) {
      return Invalid(field,
                     absl::StrCat("duplicate metric '", stat.metric(), "'", where));
    }
  }
  for (int i = 0; i < chunk.prompt_tokens_size(); ++i) {
    if (chunk.prompt_tokens(i) < 0) {
      return Invalid(absl::StrCat("chunk.prompt_tokens[", i, "]"),
                     absl::StrCat(chunk.prompt_tokens(i), " is negative"));
    }
  }
  return absl::OkStatus();
}

}  // namespace layerflow::server

// Derived result rows: functions of a job's merged layer series, computed by
// the coordinator at query time (they are not sums over chunks, so they are
// never stored). docs/metrics.md, "Derived metrics", is the reference.
//
// For each job and each base metric in kSeriesMetrics that the job has:
//   "v_loc(<base>)"  layer 0: mean squared residual of the cubic fit
//   "v_glob(<base>)" layer 0: population variance of the series
//   "cubic(<base>)"  layer k = 0..3: coefficient of x^k (constant first)
// with std 0 and count = the number of series points. Skipped when the
// series has fewer than kMinSeriesPoints points.
#ifndef LAYERFLOW_SERVER_DERIVED_DERIVED_ROWS_H_
#define LAYERFLOW_SERVER_DERIVED_DERIVED_ROWS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::server::derived {

enum class DerivedKind { kVLoc, kVGlob, kCubic };

struct DerivedMetricName {
  DerivedKind kind;
  std::string base;  // e.g. "intertoken_cos"
};

// The base metrics whose layer series get derived rows.
inline constexpr absl::string_view kSeriesMetrics[] = {"adjacent_cos", "cka_biased", "cka_unbiased",
                                                       "intertoken_cos"};

// "v_loc(intertoken_cos)" -> {kVLoc, "intertoken_cos"}; nullopt for any
// name that is not a derived metric of a kSeriesMetrics base.
std::optional<DerivedMetricName> ParseDerivedMetric(absl::string_view metric);
std::string DerivedMetricString(DerivedKind kind, absl::string_view base);

// The stored rows (job creation order, then metric, then layer, as
// Store::QueryResults returns them) with each job's derived rows appended
// after the job's own rows, sorted by metric then layer. `only`, when set,
// keeps the derived rows of that one name and drops every stored row.
std::vector<layerflow::v1::ResultRow> AppendDerivedRows(
    std::vector<layerflow::v1::ResultRow> rows,
    const std::optional<DerivedMetricName>& only = std::nullopt);

}  // namespace layerflow::server::derived

#endif  // LAYERFLOW_SERVER_DERIVED_DERIVED_ROWS_H_

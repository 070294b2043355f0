#include "server/derived/derived_rows.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/derived/cubic_fit.h"

namespace layerflow::server::derived {
namespace {

using ::layerflow::v1::ResultRow;

// Metrics whose highest layer is the final norm (docs/metrics.md): it is
// not a depth step and is left out of the series.
bool HasFinalNormRow(absl::string_view base) { return base == "intertoken_cos"; }

bool IsSeriesMetric(absl::string_view base) {
  for (absl::string_view m : kSeriesMetrics) {
    if (m == base) return true;
  }
  return false;
}

ResultRow DerivedRow(const ResultRow& like, std::string metric, int32_t layer, double value,
                     int64_t points) {
  ResultRow row;
  row.set_sweep_id(like.sweep_id());
  row.set_job_id(like.job_id());
  row.set_model(like.model());
  row.set_init_scheme(like.init_scheme());
  row.set_seed(like.seed());
  row.set_dataset(like.dataset());
  row.set_context_length(like.context_length());
  row.set_metric(std::move(metric));
  row.set_layer(layer);
  row.set_value(value);
  row.set_std(0);
  row.set_count(points);
  return row;
}

// Derived rows of one job, from its stored rows [begin, end).
std::vector<ResultRow> JobDerivedRows(absl::Span<const ResultRow> job_rows) {
  std::vector<ResultRow> out;
  for (absl::string_view base : kSeriesMetrics) {
    std::vector<std::pair<int32_t, double>> series;
    for (const ResultRow& row : job_rows) {
      // Only the plain per-layer rows (no layer_b / head / position key).
      if (row.metric() == base && row.count() > 0 && !row.has_layer_b() && !row.has_head() &&
          !row.has_position()) {
        series.emplace_back(row.layer(), row.value());
      }
    }
    std::sort(series.begin(), series.end());
    if (series.empty()) continue;
    // L, the model's number of blocks: pair metrics have layers 0..L-1;
    // point metrics 0..L plus the final norm at L+1, which is dropped.
    int32_t blocks = series.back().first + 1;
    if (HasFinalNormRow(base)) {
      series.pop_back();
      if (series.empty()) continue;
      blocks = series.back().first;
    }
    if (static_cast<int>(series.size()) < kMinSeriesPoints || blocks <= 0) continue;
    std::vector<double> x, y;
    for (const auto& [layer, value] : series) {
      x.push_back(static_cast<double>(layer) / blocks);
      y.push_back(value);
    }
    absl::StatusOr<CubicFit> fit = FitCubic(x, y);
    if (!fit.ok()) continue;  // non-finite or degenerate: no derived rows
    const int64_t n = static_cast<int64_t>(series.size());
    const ResultRow& like = job_rows.front();
    out.push_back(
        DerivedRow(like, DerivedMetricString(DerivedKind::kVLoc, base), 0, fit->v_loc, n));
    out.push_back(
        DerivedRow(like, DerivedMetricString(DerivedKind::kVGlob, base), 0, fit->v_glob, n));
    for (int32_t k = 0; k < 4; ++k) {
      out.push_back(DerivedRow(like, DerivedMetricString(DerivedKind::kCubic, base), k,
                               fit->coefficients[k], n));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const ResultRow& a, const ResultRow& b) {
    if (a.metric() != b.metric()) return a.metric() < b.metric();
    return a.layer() < b.layer();
  });
  return out;
}

}  // namespace

std::optional<DerivedMetricName> ParseDerivedMetric(absl::string_view metric) {
  static constexpr std::pair<absl::string_view, DerivedKind> kKinds[] = {
      {"v_loc(", DerivedKind::kVLoc},
      {"v_glob(", DerivedKind::kVGlob},
      {"cubic(", DerivedKind::kCubic}};
  for (const auto& [prefix, kind] : kKinds) {
    if (absl::StartsWith(metric, prefix) && absl::EndsWith(metric, ")")) {
      absl::string_view base = metric.substr(prefix.size(), metric.size() - prefix.size() - 1);
      if (IsSeriesMetric(base)) return DerivedMetricName{kind, std::string(base)};
    }
  }
  return std::nullopt;
}

std::string DerivedMetricString(DerivedKind kind, absl::string_view base) {
  switch (kind) {
    case DerivedKind::kVLoc:
      return absl::StrCat("v_loc(", base, ")");
    case DerivedKind::kVGlob:
      return absl::StrCat("v_glob(", base, ")");
    case DerivedKind::kCubic:
      return absl::StrCat("cubic(", base, ")");
  }
  return "";
}

std::vector<ResultRow> AppendDerivedRows(std::vector<ResultRow> rows,
                                         const std::optional<DerivedMetricName>& only) {
  std::vector<ResultRow> out;
  const std::string only_name = only.has_value() ? DerivedMetricString(only->kind, only->base) : "";
  size_t begin = 0;
  while (begin < rows.size()) {
    size_t end = begin;
    while (end < rows.size() && rows[end].job_id() == rows[begin].job_id()) ++end;
    std::vector<ResultRow> derived =
        JobDerivedRows(absl::MakeConstSpan(rows).subspan(begin, end - begin));
    if (!only.has_value()) {
      for (size_t i = begin; i < end; ++i) out.push_back(std::move(rows[i]));
    }
    for (ResultRow& row : derived) {
      if (!only.has_value() || row.metric() == only_name) out.push_back(std::move(row));
    }
    begin = end;
  }
  return out;
}

}  // namespace layerflow::server::derived

#include "report/output.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <utility>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "catalog/model_config.h"
#include "nlohmann/json.hpp"

namespace layerflow::report {
namespace {

// Terminal columns of a UTF-8 string: code points, not bytes ("±" and "·"
// are two bytes each but one column). Good enough for the text we print.
size_t DisplayWidth(absl::string_view s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

enum class Align { kLeft, kRight };

// Renders "a | b | c" rows under a header and a "--+--" rule, every column
// as wide as its widest cell. No trailing spaces on a left-aligned last column.
std::string RenderTable(const std::vector<std::string>& header, const std::vector<Align>& align,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = DisplayWidth(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], DisplayWidth(row[c]));
    }
  }
  std::string out;
  auto append_row = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) out += " | ";
      const std::string pad(width[c] - DisplayWidth(row[c]), ' ');
      const bool last = c + 1 == row.size();
      if (align[c] == Align::kRight) {
        absl::StrAppend(&out, pad, row[c]);
      } else {
        absl::StrAppend(&out, row[c], last ? "" : pad);
      }
    }
    // An empty last cell would leave trailing blanks.
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += '\n';
  };
  append_row(header);
  for (size_t c = 0; c < header.size(); ++c) {
    if (c > 0) out += '+';
    // The rule spans the cell and the spaces around the " | " separator.
    out += std::string(width[c] + (c > 0 ? 1 : 0) + (c + 1 < header.size() ? 1 : 0), '-');
  }
  out += '\n';
  for (const auto& row : rows) append_row(row);
  return out;
}

// Shortest text that parses back to the same double.
std::string ShortestDouble(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string CsvField(absl::string_view field) {
  if (field.find_first_of(",\"\r\n") == absl::string_view::npos) {
    return std::string(field);
  }
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "table") return OutputFormat::kTable;
  if (lower == "csv") return OutputFormat::kCsv;
  if (lower == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format '", name, "' (expected table, csv or json)"));
}

// METHODS.md's layout: 0 = embedding, 1..L = blocks, L+1 = the final norm's
// output. The store keeps L+1 as a number; for a preset L is known (the
// catalog's), so the table names that row "final" as the papers do. A
// checkpoint's rows keep their numbers (its L is only on the workers).
std::string LayerLabel(const std::string& model, int layer) {
  absl::StatusOr<catalog::ModelPreset> preset = catalog::FindModelPreset(model);
  if (preset.ok() && layer == preset->config.num_layers() + 1) return "final";
  return absl::StrCat(layer);
}

bool IsProbeRow(const v1::ResultRow& row) {
  return absl::StartsWith(row.metric(), kProbeMetricPrefix);
}

std::string FormatResultsTable(absl::Span<const v1::ResultRow> all_rows) {
  if (all_rows.empty()) return "(no results)\n";
  // PROBE jobs' rows get their own section after the per-job grids.
  std::vector<v1::ResultRow> rows;
  bool has_probe = false;
  int64_t keyed = 0;  // rows keyed by layer_b / head / position: CSV / JSON only
  for (const v1::ResultRow& row : all_rows) {
    if (IsProbeRow(row)) {
      has_probe = true;
    } else if (row.has_layer_b() || row.has_head() || row.has_position()) {
      ++keyed;
    } else {
      rows.push_back(row);
    }
  }
  // Group by job in order of first appearance (the coordinator returns jobs
  // in sweep-expansion order, which is the order a reader expects).
  std::vector<std::string> job_order;
  std::map<std::string, std::vector<const v1::ResultRow*>> by_job;
  for (const v1::ResultRow& row : rows) {
    auto [it, inserted] = by_job.try_emplace(row.job_id());
    if (inserted) job_order.push_back(row.job_id());
    it->second.push_back(&row);
  }
  std::string out;
  for (const std::string& job_id : job_order) {
    const std::vector<const v1::ResultRow*>& job_rows = by_job[job_id];
    const v1::ResultRow& first = *job_rows.front();
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, "model ", first.model(), " · init ", first.init_scheme(), " · seed ",
                    first.seed(), " · dataset ", first.dataset(), " · context ",
                    first.context_length(), " · job ", job_id, "\n");
    std::set<std::string> metrics;
    std::map<int, std::map<std::string, std::string>> cells;  // layer -> metric -> cell
    std::vector<std::string> derived;                         // "v_loc(x) = ..." after the grid
    for (const v1::ResultRow* row : job_rows) {
      // Derived rows (the coordinator's "v_loc(x)", "cubic(x)", ...) are
      // not per-layer values: v_loc / v_glob go on one line under the grid,
      // the cubic coefficients only to CSV / JSON.
      if (row->metric().find('(') != std::string::npos) {
        if (absl::StartsWith(row->metric(), "v_")) {
          derived.push_back(absl::StrFormat("%s = %.3e", row->metric(), row->value()));
        }
        continue;
      }
      metrics.insert(row->metric());
      cells[row->layer()][row->metric()] = absl::StrFormat("%.4f ± %.4f", row->value(), row->std());
    }
    std::vector<std::string> header = {"layer"};
    header.insert(header.end(), metrics.begin(), metrics.end());
    std::vector<std::vector<std::string>> table;
    for (const auto& [layer, by_metric] : cells) {
      std::vector<std::string> line = {LayerLabel(first.model(), layer)};
      for (const std::string& metric : metrics) {
        auto cell = by_metric.find(metric);
        line.push_back(cell == by_metric.end() ? "-" : cell->second);
      }
      table.push_back(std::move(line));
    }
    if (!table.empty()) {
      out += RenderTable(header, std::vector<Align>(header.size(), Align::kRight), table);
    }
    if (!derived.empty()) absl::StrAppend(&out, absl::StrJoin(derived, " · "), "\n");
  }
  if (has_probe) {
    if (!out.empty()) out += '\n';
    out += FormatProbeTable(all_rows);
  }
  if (keyed > 0) {
    absl::StrAppend(&out, out.empty() ? "" : "\n", keyed,
                    " more rows keyed by layer_b, head or position (all-pair and "
                    "example-view CKA, spectra, per-token heat maps): --format csv or json\n");
  }
  return out;
}

namespace {

struct MeanStd {
  double value = 0, std = 0;
};

// One PROBE job's rows, by metric.
struct ProbeBlock {
  const v1::ResultRow* first = nullptr;
  std::map<int, MeanStd> test, val, train, mae;
  std::map<int, std::pair<double, double>> interval;  // layer -> Wilson (lo, hi)
  std::map<int, int64_t> chosen;                      // layer -> seeds that chose it
  int64_t seeds = 0;                                  // probe_chosen's count
  std::map<int, std::map<int, double>> class_acc;     // layer -> class -> acc
  std::optional<int> best_layer;
  std::optional<MeanStd> best_acc, drop;
  std::optional<double> chance, num_train, num_val, num_test;
  // The label-permutation nulls: mean (count = permutations), p95, p-value.
  struct Null {
    std::optional<double> mean, p95, p_value;
    int64_t permutations = 0;
  } best_null, drop_null;
};

// v to 2 decimals, without the "-0.00" of a tiny negative mean.
std::string Fixed2(double v) { return absl::StrFormat("%.2f", std::fabs(v) < 0.005 ? 0.0 : v); }

// The mark of a figure its null does not beat.
std::string NullMark(const ProbeBlock::Null& null) {
  return null.p_value.has_value() && *null.p_value > kProbeSignificance ? " [not above null]" : "";
}

std::string NullSummary(const char* what, const ProbeBlock::Null& null) {
  std::string out = what;
  if (null.mean.has_value()) absl::StrAppend(&out, " ", Fixed2(*null.mean));
  if (null.p95.has_value()) absl::StrAppend(&out, " (95th pct ", Fixed2(*null.p95), ")");
  if (null.p_value.has_value()) absl::StrAppend(&out, absl::StrFormat(", p = %.3f", *null.p_value));
  return out;
}

}  // namespace

std::string FormatProbeTable(absl::Span<const v1::ResultRow> rows) {
  std::vector<std::string> order;
  std::map<std::string, ProbeBlock> blocks;
  for (const v1::ResultRow& row : rows) {
    if (!IsProbeRow(row)) continue;
    auto [it, inserted] = blocks.try_emplace(row.job_id());
    if (inserted) order.push_back(row.job_id());
    ProbeBlock& b = it->second;
    if (b.first == nullptr) b.first = &row;
    const std::string& m = row.metric();
    const MeanStd ms{row.value(), row.std()};
    if (m == "probe_class_acc") {
      if (row.has_position()) b.class_acc[row.layer()][row.position()] = row.value();
    } else if (row.has_position() || row.has_head() || row.has_layer_b()) {
      continue;  // keyed rows of other metrics: CSV / JSON only
    } else if (m == "probe_test_acc") {
      b.test[row.layer()] = ms;
    } else if (m == "probe_val_acc") {
      b.val[row.layer()] = ms;
    } else if (m == "probe_test_acc_lo") {
      b.interval[row.layer()].first = row.value();
    } else if (m == "probe_test_acc_hi") {
      b.interval[row.layer()].second = row.value();
    } else if (m == "probe_chosen") {
      // value = the share of seeds whose validation chose the layer.
      b.chosen[row.layer()] = std::llround(row.value() * static_cast<double>(row.count()));
      b.seeds = row.count();
    } else if (m == "probe_train_acc") {
      b.train[row.layer()] = ms;
    } else if (m == "probe_mae") {
      b.mae[row.layer()] = ms;
    } else if (m == "probe_best_layer") {
      b.best_layer = static_cast<int>(std::lround(row.value()));
    } else if (m == "probe_best_acc") {
      b.best_acc = ms;
    } else if (m == "probe_drop") {
      b.drop = ms;
    } else if (m == "probe_chance") {
      b.chance = row.value();
    } else if (m == "probe_num_train") {
      b.num_train = row.value();
    } else if (m == "probe_num_val") {
      b.num_val = row.value();
    } else if (m == "probe_num_test") {
      b.num_test = row.value();
    } else if (m == "probe_null_best_acc") {
      b.best_null.mean = row.value();
      b.best_null.permutations = row.count();
    } else if (m == "probe_null_best_acc_p95") {
      b.best_null.p95 = row.value();
    } else if (m == "probe_best_acc_pvalue") {
      b.best_null.p_value = row.value();
    } else if (m == "probe_null_drop") {
      b.drop_null.mean = row.value();
      b.drop_null.permutations = row.count();
    } else if (m == "probe_null_drop_p95") {
      b.drop_null.p95 = row.value();
    } else if (m == "probe_drop_pvalue") {
      b.drop_null.p_value = row.value();
    }
  }
  if (order.empty()) return "(no probe results)\n";
  std::string out;
  for (const std::string& job_id : order) {
    const ProbeBlock& b = blocks[job_id];
    const v1::ResultRow& first = *b.first;
    if (!out.empty()) out += '\n';
    // The headline: best layer (the worker's choice, else the highest mean
    // test accuracy), its held-out accuracy (probe_best_acc: each seed's
    // test accuracy at the layer its validation chose; else the layer's
    // test accuracy), the final layer's accuracy and the drop between them,
    // each marked when its label-permutation null is not beaten.
    std::optional<int> best = b.best_layer;
    if (!best.has_value()) {
      for (const auto& [layer, ms] : b.test) {
        if (!best.has_value() || ms.value > b.test.at(*best).value) best = layer;
      }
    }
    std::optional<MeanStd> best_acc = b.best_acc;
    if (!best_acc.has_value() && best.has_value() && b.test.count(*best) > 0) {
      best_acc = b.test.at(*best);
    }
    std::string headline = absl::StrCat(first.model(), ":");
    if (best.has_value()) {
      absl::StrAppend(&headline, " best layer ", LayerLabel(first.model(), *best));
      if (best_acc.has_value()) {
        absl::StrAppend(&headline,
                        absl::StrFormat(" (%.2f ± %.2f)", best_acc->value, best_acc->std),
                        NullMark(b.best_null));
      }
    }
    std::optional<double> final_acc;
    if (!b.test.empty()) final_acc = b.test.rbegin()->second.value;
    if (final_acc.has_value()) {
      absl::StrAppend(&headline, best.has_value() ? "," : "",
                      absl::StrFormat(" final %.2f", *final_acc));
    }
    std::optional<double> drop;
    if (b.drop.has_value()) {
      drop = b.drop->value;
    } else if (best_acc.has_value() && final_acc.has_value()) {
      drop = best_acc->value - *final_acc;
    }
    if (drop.has_value()) {
      absl::StrAppend(&headline, ", drop ", Fixed2(*drop), NullMark(b.drop_null));
    }
    absl::StrAppend(&out, headline, "\n");
    absl::StrAppend(&out, "  init ", first.init_scheme(), " · seed ", first.seed(), " · dataset ",
                    first.dataset(), " · context ", first.context_length(), " · job ", job_id);
    if (b.chance.has_value()) {
      absl::StrAppend(&out, absl::StrFormat(" · chance %.2f", *b.chance));
    }
    if (b.num_train.has_value() && b.num_val.has_value() && b.num_test.has_value()) {
      absl::StrAppend(&out, absl::StrFormat(" · %.0f/%.0f/%.0f train/val/test examples",
                                            *b.num_train, *b.num_val, *b.num_test));
    }
    out += "\n";
    if (b.best_null.permutations > 0 || b.drop_null.permutations > 0) {
      absl::StrAppend(&out, "  label-permutation null (",
                      std::max(b.best_null.permutations, b.drop_null.permutations),
                      " permutations): ", NullSummary("best acc", b.best_null), " · ",
                      NullSummary("drop", b.drop_null), "\n");
    }
    std::set<int> layers;
    for (const auto* series : {&b.test, &b.val, &b.train, &b.mae}) {
      for (const auto& [layer, ms] : *series) layers.insert(layer);
    }
    if (!layers.empty()) {
      auto cell = [](const std::map<int, MeanStd>& series, int layer,
                     const char* format) -> std::string {
        auto it = series.find(layer);
        if (it == series.end()) return "-";
        return absl::StrFormat(format, it->second.value, it->second.std);
      };
      // Columns of rows older workers did not write appear only when present.
      const bool has_interval = !b.interval.empty();
      const bool has_val = !b.val.empty();
      const bool has_chosen = !b.chosen.empty();
      std::vector<std::string> header = {"layer", "test acc"};
      if (has_interval) header.push_back("95% CI");
      if (has_val) header.push_back("val acc");
      header.insert(header.end(), {"train acc", "position mae"});
      if (has_chosen) header.push_back("chosen");
      header.push_back("best");
      std::vector<Align> align(header.size(), Align::kRight);
      align.back() = Align::kLeft;
      std::vector<std::vector<std::string>> table;
      for (int layer : layers) {
        std::vector<std::string> line = {LayerLabel(first.model(), layer),
                                         cell(b.test, layer, "%.3f ± %.3f")};
        if (has_interval) {
          auto it = b.interval.find(layer);
          line.push_back(it == b.interval.end() ? "-"
                                                : absl::StrFormat("[%.2f, %.2f]", it->second.first,
                                                                  it->second.second));
        }
        if (has_val) line.push_back(cell(b.val, layer, "%.3f ± %.3f"));
        line.push_back(cell(b.train, layer, "%.3f ± %.3f"));
        line.push_back(cell(b.mae, layer, "%.2f ± %.2f"));
        if (has_chosen) {
          auto it = b.chosen.find(layer);
          line.push_back(it == b.chosen.end() || it->second == 0
                             ? ""
                             : absl::StrCat(it->second, "/", b.seeds));
        }
        line.push_back(best.has_value() && layer == *best ? "*" : "");
        table.push_back(std::move(line));
      }
      out += RenderTable(header, align, table);
    }
    if (best.has_value()) {
      auto classes = b.class_acc.find(*best);
      if (classes != b.class_acc.end()) {
        std::vector<std::string> cells;
        for (const auto& [c, acc] : classes->second) {
          cells.push_back(absl::StrFormat("%d:%.2f", c, acc));
        }
        absl::StrAppend(&out, "per-class test accuracy at layer ", LayerLabel(first.model(), *best),
                        ": ", absl::StrJoin(cells, " "), "\n");
      }
    }
  }
  return out;
}

std::string FormatResultsCsv(absl::Span<const v1::ResultRow> rows) {
  std::string out =
      "sweep_id,job_id,model,init_scheme,seed,dataset,context_length,metric,"
      "layer,value,std,count,layer_b,head,position\n";
  for (const v1::ResultRow& row : rows) {
    absl::StrAppend(&out, CsvField(row.sweep_id()), ",", CsvField(row.job_id()), ",",
                    CsvField(row.model()), ",", CsvField(row.init_scheme()), ",", row.seed(), ",",
                    CsvField(row.dataset()), ",", row.context_length(), ",", CsvField(row.metric()),
                    ",", row.layer(), ",", ShortestDouble(row.value()), ",",
                    ShortestDouble(row.std()), ",", row.count(), ",",
                    row.has_layer_b() ? absl::StrCat(row.layer_b()) : "", ",",
                    row.has_head() ? absl::StrCat(row.head()) : "", ",",
                    row.has_position() ? absl::StrCat(row.position()) : "", "\n");
  }
  return out;
}

std::string FormatResultsJson(absl::Span<const v1::ResultRow> rows) {
  // ordered_json keeps the keys in CSV column order.
  nlohmann::ordered_json array = nlohmann::ordered_json::array();
  for (const v1::ResultRow& row : rows) {
    array.push_back(
        {{"sweep_id", row.sweep_id()},
         {"job_id", row.job_id()},
         {"model", row.model()},
         {"init_scheme", row.init_scheme()},
         {"seed", row.seed()},
         {"dataset", row.dataset()},
         {"context_length", row.context_length()},
         {"metric", row.metric()},
         {"layer", row.layer()},
         {"value", row.value()},
         {"std", row.std()},
         {"count", row.count()},
         {"layer_b",
          row.has_layer_b() ? nlohmann::ordered_json(row.layer_b()) : nlohmann::ordered_json()},
         {"head", row.has_head() ? nlohmann::ordered_json(row.head()) : nlohmann::ordered_json()},
         {"position",
          row.has_position() ? nlohmann::ordered_json(row.position()) : nlohmann::ordered_json()}});
  }
  return array.dump(2) + "\n";
}

std::string FormatResults(absl::Span<const v1::ResultRow> rows, OutputFormat format) {
  switch (format) {
    case OutputFormat::kCsv:
      return FormatResultsCsv(rows);
    case OutputFormat::kJson:
      return FormatResultsJson(rows);
    case OutputFormat::kTable:
      break;
  }
  return FormatResultsTable(rows);
}

std::vector<Configuration> GroupConfigurations(absl::Span<const v1::ResultRow> rows,
                                               std::vector<size_t>* row_config) {
  using Key = std::tuple<std::string, std::string, std::string, int32_t>;
  std::map<Key, size_t> index;
  std::vector<Configuration> configs;
  row_config->clear();
  row_config->reserve(rows.size());
  for (const v1::ResultRow& row : rows) {
    const Key key{row.model(), row.init_scheme(), row.dataset(), row.context_length()};
    auto [it, inserted] = index.try_emplace(key, configs.size());
    if (inserted) {
      configs.push_back({.model = row.model(),
                         .init_scheme = row.init_scheme(),
                         .dataset = row.dataset(),
                         .context_length = row.context_length()});
    }
    Configuration& c = configs[it->second];
    if (std::find(c.job_ids.begin(), c.job_ids.end(), row.job_id()) == c.job_ids.end()) {
      c.job_ids.push_back(row.job_id());
      c.seeds.push_back(row.seed());
    }
    row_config->push_back(it->second);
  }
  return configs;
}

namespace {

// One line of the summary: a job, or the jobs of one configuration that
// differ only in their seed.
struct SummaryGroup : Configuration {
  // Seed-mean series: layer -> (sum over seeds, seeds with a value).
  std::map<int, std::pair<double, int>> intertoken, adjacent, cka;
  // Per-job scalars, averaged over the jobs that have them.
  std::pair<double, int> path_energy{0, 0}, v_loc{0, 0}, v_glob{0, 0}, cka_baseline{0, 0};
};

std::optional<double> Mean(const std::pair<double, int>& acc) {
  if (acc.second == 0) return std::nullopt;
  return acc.first / acc.second;
}

// The mean over layers of a seed-mean series (layer -> (sum, seeds)).
std::optional<double> MeanOverLayers(const std::map<int, std::pair<double, int>>& series) {
  if (series.empty()) return std::nullopt;
  double total = 0;
  for (const auto& [layer, acc] : series) total += acc.first / acc.second;
  return total / series.size();
}

struct SummaryLine {
  const SummaryGroup* group;
  std::optional<int> peak_layer;
  std::optional<double> peak, final_value, path_energy, mean_adjacent, mean_cka, cka_baseline,
      v_loc, v_glob;
};

std::vector<SummaryLine> Summarize(absl::Span<const v1::ResultRow> rows,
                                   std::vector<SummaryGroup>& groups) {
  std::vector<size_t> row_config;
  std::vector<Configuration> configs = GroupConfigurations(rows, &row_config);
  groups.assign(configs.size(), SummaryGroup{});
  for (size_t c = 0; c < configs.size(); ++c) {
    static_cast<Configuration&>(groups[c]) = std::move(configs[c]);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const v1::ResultRow& row = rows[i];
    SummaryGroup& g = groups[row_config[i]];
    auto add = [&](std::pair<double, int>& acc) {
      acc.first += row.value();
      acc.second += 1;
    };
    // Keyed rows (layer_b / head / position) are not part of the series.
    if (row.count() <= 0 || row.has_layer_b() || row.has_head() || row.has_position()) {
      continue;
    }
    const std::string& m = row.metric();
    if (m == "intertoken_cos") add(g.intertoken[row.layer()]);
    if (m == "adjacent_cos") add(g.adjacent[row.layer()]);
    if (m == "cka_unbiased") add(g.cka[row.layer()]);
    if (m == "cka_baseline_unbiased") add(g.cka_baseline);
    if (m == "path_energy") add(g.path_energy);
    if (m == "v_loc(intertoken_cos)") add(g.v_loc);
    if (m == "v_glob(intertoken_cos)") add(g.v_glob);
  }
  std::vector<SummaryLine> lines;
  for (const SummaryGroup& g : groups) {
    SummaryLine line{&g};
    for (const auto& [layer, acc] : g.intertoken) {
      const double mean = acc.first / acc.second;
      if (!line.peak.has_value() || mean > *line.peak) {
        line.peak = mean;
        line.peak_layer = layer;
      }
      line.final_value = mean;  // the highest layer comes last
    }
    line.mean_adjacent = MeanOverLayers(g.adjacent);
    line.mean_cka = MeanOverLayers(g.cka);
    line.cka_baseline = Mean(g.cka_baseline);
    line.path_energy = Mean(g.path_energy);
    line.v_loc = Mean(g.v_loc);
    line.v_glob = Mean(g.v_glob);
    lines.push_back(line);
  }
  return lines;
}

std::string Fixed(const std::optional<double>& v) {
  return v.has_value() ? absl::StrFormat("%.4f", *v) : "-";
}
std::string Sci(const std::optional<double>& v) {
  return v.has_value() ? absl::StrFormat("%.3e", *v) : "-";
}

}  // namespace

std::string FormatResultsSummary(absl::Span<const v1::ResultRow> rows, OutputFormat format) {
  std::vector<SummaryGroup> groups;
  const std::vector<SummaryLine> lines = Summarize(rows, groups);
  if (format == OutputFormat::kCsv) {
    std::string out =
        "model,init_scheme,dataset,context_length,seeds,jobs,peak_layer,"
        "peak_intertoken_cos,final_intertoken_cos,path_energy,mean_adjacent_cos,"
        "mean_cka_unbiased,cka_baseline_unbiased,v_loc_intertoken_cos,v_glob_intertoken_cos\n";
    auto num = [](const std::optional<double>& v) {
      return v.has_value() ? ShortestDouble(*v) : std::string();
    };
    for (const SummaryLine& l : lines) {
      const SummaryGroup& g = *l.group;
      absl::StrAppend(
          &out, CsvField(g.model), ",", CsvField(g.init_scheme), ",", CsvField(g.dataset), ",",
          g.context_length, ",", CsvField(absl::StrJoin(g.seeds, " ")), ",",
          CsvField(absl::StrJoin(g.job_ids, " ")), ",",
          l.peak_layer.has_value() ? absl::StrCat(*l.peak_layer) : "", ",", num(l.peak), ",",
          num(l.final_value), ",", num(l.path_energy), ",", num(l.mean_adjacent), ",",
          num(l.mean_cka), ",", num(l.cka_baseline), ",", num(l.v_loc), ",", num(l.v_glob), "\n");
    }
    return out;
  }
  if (format == OutputFormat::kJson) {
    nlohmann::ordered_json array = nlohmann::ordered_json::array();
    auto num = [](const std::optional<double>& v) {
      return v.has_value() ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
    };
    for (const SummaryLine& l : lines) {
      const SummaryGroup& g = *l.group;
      array.push_back(
          {{"model", g.model},
           {"init_scheme", g.init_scheme},
           {"dataset", g.dataset},
           {"context_length", g.context_length},
           {"seeds", g.seeds},
           {"jobs", g.job_ids},
           {"peak_layer", l.peak_layer.has_value() ? nlohmann::ordered_json(*l.peak_layer)
                                                   : nlohmann::ordered_json()},
           {"peak_intertoken_cos", num(l.peak)},
           {"final_intertoken_cos", num(l.final_value)},
           {"path_energy", num(l.path_energy)},
           {"mean_adjacent_cos", num(l.mean_adjacent)},
           {"mean_cka_unbiased", num(l.mean_cka)},
           {"cka_baseline_unbiased", num(l.cka_baseline)},
           {"v_loc_intertoken_cos", num(l.v_loc)},
           {"v_glob_intertoken_cos", num(l.v_glob)}});
    }
    return array.dump(2) + "\n";
  }
  if (lines.empty()) return "(no results)\n";
  const std::vector<std::string> header = {"model",       "init",         "dataset",  "context",
                                           "seeds",       "peak layer",   "peak itc", "final itc",
                                           "path_energy", "mean adj_cos", "mean cka", "cka base",
                                           "v_loc(itc)",  "v_glob(itc)"};
  std::vector<Align> align(header.size(), Align::kRight);
  for (int c = 0; c < 3; ++c) align[c] = Align::kLeft;
  std::vector<std::vector<std::string>> table;
  for (const SummaryLine& l : lines) {
    const SummaryGroup& g = *l.group;
    table.push_back({g.model, g.init_scheme, g.dataset, absl::StrCat(g.context_length),
                     absl::StrJoin(g.seeds, ","),
                     l.peak_layer.has_value() ? LayerLabel(g.model, *l.peak_layer) : "-",
                     Fixed(l.peak), Fixed(l.final_value), Fixed(l.path_energy),
                     Fixed(l.mean_adjacent), Fixed(l.mean_cka), Fixed(l.cka_baseline), Sci(l.v_loc),
                     Sci(l.v_glob)});
  }
  return RenderTable(header, align, table) +
         "itc = intertoken_cos; cka = cka_unbiased(l, l+1), mean over layers; "
         "cka base = cka_baseline_unbiased; several seeds: the mean over seeds "
         "(peak and final of the seed-mean series)\n";
}

std::string FormatRunSummary(absl::Span<const v1::ResultRow> rows) {
  std::vector<SummaryGroup> groups;
  const std::vector<SummaryLine> lines = Summarize(rows, groups);
  std::vector<std::vector<std::string>> table;
  for (const SummaryLine& l : lines) {
    if (!l.peak.has_value() && !l.path_energy.has_value()) continue;
    const SummaryGroup& g = *l.group;
    table.push_back({g.model, g.init_scheme, Fixed(l.peak),
                     l.peak_layer.has_value() ? LayerLabel(g.model, *l.peak_layer) : "-",
                     Fixed(l.final_value),
                     l.path_energy.has_value() ? absl::StrFormat("%.4g", *l.path_energy) : "-"});
  }
  if (table.empty()) return "";
  std::vector<Align> align(6, Align::kRight);
  align[0] = align[1] = Align::kLeft;
  return RenderTable({"model", "init", "itc peak", "at layer", "final itc", "path_energy"}, align,
                     table) +
         "itc = intertoken_cos (mean over prompts; seeds averaged); at layer: where it "
         "peaks; final: the last representation point\n";
}

std::string FormatProgressLine(const v1::Sweep& sweep, int bar_width) {
  const int64_t done =
      int64_t{sweep.jobs_succeeded()} + sweep.jobs_failed() + sweep.jobs_cancelled();
  double fraction = 0;
  if (sweep.chunks_total() > 0) {
    fraction = static_cast<double>(sweep.chunks_committed()) / sweep.chunks_total();
  } else if (sweep.jobs_total() > 0) {
    fraction = static_cast<double>(done) / sweep.jobs_total();
  }
  // A finished sweep shows a full bar even when cancelled or failed jobs
  // left chunks uncommitted: the bar is about "is it still working".
  if (sweep.state() != v1::SWEEP_STATE_ACTIVE && sweep.state() != v1::SWEEP_STATE_UNSPECIFIED) {
    fraction = 1;
  }
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * bar_width);
  std::string bar = "[" + std::string(filled, '=');
  if (filled < bar_width) bar += '>' + std::string(bar_width - filled - 1, ' ');
  bar += ']';
  std::string line =
      absl::StrCat(bar, " ", done, "/", sweep.jobs_total(), " jobs done, ", sweep.jobs_running(),
                   " running, ", sweep.jobs_failed(), " failed");
  if (sweep.jobs_cancelled() > 0) {
    absl::StrAppend(&line, ", ", sweep.jobs_cancelled(), " cancelled");
  }
  absl::StrAppend(&line, " · ", sweep.chunks_committed(), "/", sweep.chunks_total(), " chunks");
  return line;
}

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

std::string SweepStateName(v1::SweepState state) {
  switch (state) {
    case v1::SWEEP_STATE_ACTIVE:
      return "active";
    case v1::SWEEP_STATE_SUCCEEDED:
      return "succeeded";
    case v1::SWEEP_STATE_FAILED:
      return "failed";
    case v1::SWEEP_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (v1::JobState state : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    if (JobStateName(state) == lower) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown job state '", name, "' (expected queued, running, succeeded, failed or cancelled)"));
}

std::string FormatJobsTable(absl::Span<const v1::Job> jobs) {
  if (jobs.empty()) return "(no jobs)\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& job : jobs) {
    // Errors can be multi-line (LibTorch messages); one line per job keeps
    // the table readable and `jobs` greppable.
    std::string error = job.error();
    std::replace(error.begin(), error.end(), '\n', ' ');
    rows.push_back({job.job_id(), JobStateName(job.state()), job.spec().model(),
                    job.spec().init_scheme(), absl::StrCat(job.spec().seed()),
                    absl::StrCat(job.chunks_committed(), "/", job.chunks_total()),
                    absl::StrCat(job.attempts()), error});
  }
  return RenderTable({"job", "state", "model", "init", "seed", "chunks", "attempts", "error"},
                     {Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight,
                      Align::kRight, Align::kRight, Align::kLeft},
                     rows);
}

std::string FormatJobTimingsTable(absl::Span<const v1::Job> jobs) {
  if (jobs.empty()) return "(no jobs)\n";
  std::vector<std::string> phases = {"build", "data", "compute", "upload", "commit"};
  for (const v1::Job& job : jobs) {
    for (const v1::PhaseTime& t : job.phase_totals()) {
      if (std::find(phases.begin(), phases.end(), t.phase()) == phases.end()) {
        phases.push_back(t.phase());
      }
    }
  }
  std::vector<std::string> header = {"job", "state", "model", "chunks"};
  std::vector<Align> align = {Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight};
  for (const std::string& phase : phases) {
    header.push_back(absl::StrCat(phase, " s"));
    align.push_back(Align::kRight);
  }
  header.push_back("total s");
  align.push_back(Align::kRight);
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& job : jobs) {
    std::vector<std::string> row = {job.job_id(), JobStateName(job.state()), job.spec().model(),
                                    absl::StrCat(job.chunks_committed(), "/", job.chunks_total())};
    double total = 0;
    for (const std::string& phase : phases) {
      std::string cell = "-";
      for (const v1::PhaseTime& t : job.phase_totals()) {
        if (t.phase() == phase) {
          cell = absl::StrFormat("%.3f", t.seconds());
          total += t.seconds();
        }
      }
      row.push_back(cell);
    }
    row.push_back(job.phase_totals().empty() ? "-" : absl::StrFormat("%.3f", total));
    rows.push_back(std::move(row));
  }
  return RenderTable(header, align, rows);
}

}  // namespace layerflow::report

#include "report/figures/figures.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "catalog/model_config.h"
#include "catalog/train.h"
#include "report/output.h"

namespace layerflow::report {
namespace {

constexpr char kDepthLabel[] = "normalised depth l / (L+1)  (0 = embedding, 1 = final norm)";
// METHODS.md's bins of |λ|.
constexpr const char* kSpectrumBins[] = {"[0, 0.1)", "[0.1, 0.5)", "[0.5, 0.9)", "[0.9, 1)",
                                         "[1, 10)",  "[10, 100)",  "[100, ∞)"};
constexpr int kNumSpectrumBins = 7;

struct Config : Configuration {
  int max_layer = 0;  // of its unkeyed rows
  std::string label, slug;
};

// (config, metric, layer, layer_b, head, position); -1 = unset.
using Key = std::tuple<size_t, std::string, int, int, int, int>;

// A file-name-safe form: each run of other characters (a UTF-8 "·" is
// two bytes, " · " four) becomes one '_'.
std::string Slug(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (ok) {
      out.push_back(c);
    } else if (out.empty() || out.back() != '_') {
      out.push_back('_');
    }
  }
  return out;
}

// The denominator of normalised depth: L+1, the final norm's point.
int DepthPoints(const Config& c) {
  absl::StatusOr<catalog::ModelPreset> preset = catalog::FindModelPreset(c.model);
  if (preset.ok()) return preset->config.num_layers() + 1;
  return std::max(1, c.max_layer);
}

std::optional<int> SpectrumBin(const std::string& metric, std::string* flavour) {
  for (const char* prefix : {"spectrum_dsf_frac_", "spectrum_frac_"}) {
    if (absl::StartsWith(metric, prefix)) {
      const std::string rest = metric.substr(std::strlen(prefix));
      if (rest.size() == 1 && rest[0] >= '0' && rest[0] < '0' + kNumSpectrumBins) {
        *flavour = std::string(prefix, std::strlen(prefix) - std::strlen("_frac_"));
        return rest[0] - '0';
      }
    }
  }
  return std::nullopt;
}

// A TRAIN job's result rows (catalog::kTrainRows), each at layer 0 with
// position = the step its chunk ends at.
bool IsTrainRow(const std::string& metric) {
  return std::find(std::begin(catalog::kTrainRows), std::end(catalog::kTrainRows), metric) !=
         std::end(catalog::kTrainRows);
}

// A TRAIN sweep with analyses names the analysed models
// "artifact:<train job>/init_model" and "artifact:<train job>/model"
// (docs/training.md). Where the rows hold that TRAIN job's, the model is
// relabelled "<architecture> · init" / "<architecture> · trained" (its init
// scheme added when not reference), so that the seeds of an architecture
// pool as any configuration's do. Returns `rows` itself when none is.
absl::Span<const v1::ResultRow> WithTrainedModelLabels(absl::Span<const v1::ResultRow> rows,
                                                       std::vector<v1::ResultRow>* storage) {
  std::map<std::string, std::string> train_label;  // TRAIN job id -> label stem
  for (const v1::ResultRow& r : rows) {
    if (!IsTrainRow(r.metric())) continue;
    train_label[r.job_id()] =
        r.init_scheme() == "reference" ? r.model() : absl::StrCat(r.model(), " ", r.init_scheme());
  }
  if (train_label.empty()) return rows;
  storage->assign(rows.begin(), rows.end());
  for (v1::ResultRow& r : *storage) {
    std::string train_job;
    bool init = false;
    if (!catalog::ParseTrainedModelName(r.model(), &train_job, &init)) continue;
    auto it = train_label.find(train_job);
    if (it != train_label.end()) r.set_model(absl::StrCat(it->second, init ? " · init" : " · trained"));
  }
  return *storage;
}

std::map<std::string, std::string> ConfigMeta(const Config& c, const std::string& sweep_id) {
  return {{"sweep_id", sweep_id},
          {"model", c.model},
          {"init_scheme", c.init_scheme},
          {"dataset", c.dataset},
          {"context_length", absl::StrCat(c.context_length)},
          {"jobs", absl::StrJoin(c.job_ids, " ")}};
}

}  // namespace

Pooled PoolRows(absl::Span<const v1::ResultRow* const> rows) {
  Pooled p;
  double weighted = 0;
  for (const v1::ResultRow* r : rows) {
    if (r->count() <= 0) continue;
    p.count += r->count();
    weighted += static_cast<double>(r->count()) * r->value();
  }
  if (p.count == 0) return p;
  p.mean = weighted / static_cast<double>(p.count);
  // Within-group variance plus the spread of the group means.
  double var = 0;
  for (const v1::ResultRow* r : rows) {
    if (r->count() <= 0) continue;
    const double d = r->value() - p.mean;
    var += static_cast<double>(r->count()) * (r->std() * r->std() + d * d);
  }
  p.std = std::sqrt(std::max(0.0, var / static_cast<double>(p.count)));
  return p;
}

absl::StatusOr<std::vector<NamedFigure>> BuildFigures(absl::Span<const v1::ResultRow> rows,
                                                      const FigureOptions& options) {
  const std::string sweep = options.sweep_id.empty() ? "the sweep" : "sweep " + options.sweep_id;
  std::vector<v1::ResultRow> relabelled;
  rows = WithTrainedModelLabels(rows, &relabelled);
  // Configurations in order of first appearance; rows grouped by full key.
  std::vector<size_t> row_config;
  std::vector<Config> configs;
  for (Configuration& c : GroupConfigurations(rows, &row_config)) {
    configs.emplace_back();
    static_cast<Configuration&>(configs.back()) = std::move(c);
  }
  std::map<Key, std::vector<const v1::ResultRow*>> groups;
  std::set<std::string> row_metrics;
  for (size_t i = 0; i < rows.size(); ++i) {
    const v1::ResultRow& row = rows[i];
    Config& c = configs[row_config[i]];
    if (row.metric().find('(') != std::string::npos) continue;  // derived rows
    row_metrics.insert(row.metric());
    const bool keyed = row.has_layer_b() || row.has_head() || row.has_position();
    if (!keyed && (!absl::StartsWith(row.metric(), "probe_") || row.metric() == "probe_test_acc")) {
      c.max_layer = std::max(c.max_layer, row.layer());
    }
    groups[Key{row_config[i], row.metric(), row.layer(), row.has_layer_b() ? row.layer_b() : -1,
               row.has_head() ? row.head() : -1, row.has_position() ? row.position() : -1}]
        .push_back(&row);
  }
  // Labels name what differs between configurations (the model always).
  auto varies = [&](auto field) {
    std::set<std::string> values;
    for (const Config& c : configs) values.insert(field(c));
    return values.size() > 1;
  };
  const bool init_varies = varies([](const Config& c) { return c.init_scheme; });
  const bool dataset_varies = varies([](const Config& c) { return c.dataset; });
  const bool context_varies =
      varies([](const Config& c) { return absl::StrCat(c.context_length); });
  for (Config& c : configs) {
    c.label = c.model;
    if (init_varies) absl::StrAppend(&c.label, " · ", c.init_scheme);
    if (dataset_varies) absl::StrAppend(&c.label, " · ", c.dataset);
    if (context_varies) absl::StrAppend(&c.label, " · ", c.context_length);
    c.slug = Slug(absl::StrCat(c.model, "_", c.init_scheme, "_", c.dataset, "_", c.context_length));
  }

  // Per (config, metric): unkeyed layer series, pair cells, token cells,
  // spectrum bins per (layer, head).
  std::map<std::pair<size_t, std::string>, std::map<int, Pooled>> series;
  std::map<std::pair<size_t, std::string>, std::map<std::pair<int, int>, Pooled>> pairs, tokens;
  // (config, flavour) -> layer -> bin -> head -> pooled.
  std::map<std::pair<size_t, std::string>, std::map<int, std::map<int, std::map<int, double>>>>
      spectra;
  std::map<size_t, double> chance;
  // (config, training metric) -> step -> pooled over seeds.
  std::map<std::pair<size_t, std::string>, std::map<int, Pooled>> curves;
  for (const auto& [key, group] : groups) {
    const auto& [config, metric, layer, layer_b, head, position] = key;
    const Pooled p = PoolRows(group);
    if (p.count == 0) continue;
    std::string flavour;
    if (std::optional<int> bin = SpectrumBin(metric, &flavour); bin.has_value()) {
      spectra[{config, flavour}][layer][*bin][std::max(head, 0)] = p.mean;
    } else if (IsTrainRow(metric)) {
      // train_stopped (one value, the stopping step) is no curve.
      if (metric != catalog::kTrainStoppedRow) curves[{config, metric}][position] = p;
    } else if (metric == "probe_chance") {
      chance[config] = p.mean;
    } else if (absl::StartsWith(metric, "probe_") && metric != "probe_test_acc") {
      continue;
    } else if (layer_b >= 0 && head < 0 && position < 0) {
      pairs[{config, metric}][{layer, layer_b}] = p;
    } else if (position >= 0 && layer_b < 0 && head < 0) {
      tokens[{config, metric}][{layer, position}] = p;
    } else if (layer_b < 0 && head < 0 && position < 0) {
      series[{config, metric}][layer] = p;
    }
  }

  std::vector<NamedFigure> figures;
  std::set<std::string> plottable;
  auto wanted = [&](const std::string& metric) {
    plottable.insert(metric);
    return options.metrics.empty() || std::find(options.metrics.begin(), options.metrics.end(),
                                                metric) != options.metrics.end();
  };

  // Metrics over depth, one figure per metric, lines in configuration order.
  std::map<std::string, std::vector<size_t>> line_metrics;  // metric -> configs
  std::vector<std::string> line_order;
  for (size_t c = 0; c < configs.size(); ++c) {
    for (const auto& [key, by_layer] : series) {
      if (key.first != c || by_layer.size() < 2) continue;
      if (!line_metrics.count(key.second)) line_order.push_back(key.second);
      line_metrics[key.second].push_back(c);
    }
  }
  std::sort(line_order.begin(), line_order.end(), [](const std::string& a, const std::string& b) {
    // probe_test_acc last; the rest by name.
    const bool pa = a == "probe_test_acc", pb = b == "probe_test_acc";
    return pa != pb ? pb : a < b;
  });
  for (const std::string& metric : line_order) {
    if (!wanted(metric)) continue;
    const bool probe = metric == "probe_test_acc";
    plot::LineChart chart;
    chart.title =
        probe ? "Probe test accuracy per layer" : absl::StrCat(metric, " over normalised depth");
    chart.x_label = kDepthLabel;
    chart.y_label = probe ? "test accuracy (mean ± std over probe seeds)"
                          : absl::StrCat(metric, " (mean ± std over prompts)");
    chart.x_min = -0.02;
    chart.x_max = 1.02;
    chart.meta = {{"sweep_id", options.sweep_id},
                  {"metric", metric},
                  {"x", "layer / (L+1)"},
                  {"band", probe ? "std over probe seeds" : "std over prompts"}};
    std::set<double> chances;
    for (size_t c : line_metrics[metric]) {
      const Config& config = configs[c];
      const double depth = DepthPoints(config);
      plot::Line line;
      line.label = config.label;
      line.meta = ConfigMeta(config, options.sweep_id);
      line.meta["depth_points"] = absl::StrCat(static_cast<int>(depth));
      for (const auto& [layer, p] : series[{c, metric}]) {
        line.ids.push_back(layer);
        line.x.push_back(layer / depth);
        line.y.push_back(p.mean);
        line.std.push_back(p.std);
      }
      chart.lines.push_back(std::move(line));
      if (probe && chance.count(c)) chances.insert(chance[c]);
    }
    for (double level : chances) {
      chart.references.push_back({absl::StrFormat("chance %.3g", level), level});
    }
    figures.push_back(
        {probe ? "probe_test_acc" : absl::StrCat("depth_", metric), std::move(chart)});
  }

  // Training curves, one figure per metric, lines in configuration order.
  std::map<std::string, std::vector<size_t>> curve_configs;
  for (const auto& [key, by_step] : curves) curve_configs[key.second].push_back(key.first);
  for (auto& [metric, config_ids] : curve_configs) {
    if (!wanted(metric)) continue;
    std::sort(config_ids.begin(), config_ids.end());
    plot::LineChart chart;
    chart.title = absl::StrCat(metric, " over training");
    chart.x_label = "step";
    chart.y_label = metric == "lr" ? "learning rate"
                                   : absl::StrCat(metric, " (mean ± std over ",
                                                  absl::StartsWith(metric, "eval_")
                                                      ? "held-out sequences"
                                                      : "the steps of each evaluation interval",
                                                  " and seeds)");
    chart.meta = {{"sweep_id", options.sweep_id}, {"metric", metric}, {"x", "step"}};
    for (size_t c : config_ids) {
      const Config& config = configs[c];
      plot::Line line;
      line.label = config.label;
      line.meta = ConfigMeta(config, options.sweep_id);
      for (const auto& [step, p] : curves[{c, metric}]) {
        line.ids.push_back(step);
        line.x.push_back(step);
        line.y.push_back(p.mean);
        line.std.push_back(p.std);
      }
      chart.lines.push_back(std::move(line));
    }
    figures.push_back({absl::StrCat("training_", metric), std::move(chart)});
  }

  // CKA layer x layer heat maps.
  for (const auto& [key, cells] : pairs) {
    const auto& [c, metric] = key;
    if (!wanted(metric)) continue;
    const Config& config = configs[c];
    std::set<int> layer_set;
    for (const auto& [lb, p] : cells) {
      layer_set.insert(lb.first);
      layer_set.insert(lb.second);
    }
    const std::vector<int> layers(layer_set.begin(), layer_set.end());
    std::map<int, int> pos;
    for (size_t i = 0; i < layers.size(); ++i) pos[layers[i]] = static_cast<int>(i);
    plot::HeatMap map;
    map.title = absl::StrCat(metric, " — ", config.label);
    map.x_label = "layer l'";
    map.y_label = "layer l";
    map.value_label = metric;
    map.rows = map.cols = static_cast<int>(layers.size());
    map.row_ids = map.col_ids = layers;
    map.values.assign(layers.size() * layers.size(), std::numeric_limits<double>::quiet_NaN());
    for (size_t i = 0; i < layers.size(); ++i) map.values[i * layers.size() + i] = 1.0;
    for (const auto& [lb, p] : cells) {
      const int a = pos[lb.first], b = pos[lb.second];
      map.values[static_cast<size_t>(a) * layers.size() + b] = p.mean;
      map.values[static_cast<size_t>(b) * layers.size() + a] = p.mean;
    }
    map.meta = ConfigMeta(config, options.sweep_id);
    map.meta["metric"] = metric;
    map.meta["diagonal"] = "1 (CKA of a layer with itself)";
    figures.push_back({absl::StrCat(metric, "_", config.slug), std::move(map)});
  }

  // Token x layer heat maps.
  for (const auto& [key, cells] : tokens) {
    const auto& [c, metric] = key;
    if (!wanted(metric)) continue;
    const Config& config = configs[c];
    std::set<int> layer_set;
    int max_position = 0;
    for (const auto& [lp, p] : cells) {
      layer_set.insert(lp.first);
      max_position = std::max(max_position, lp.second);
    }
    const std::vector<int> layers(layer_set.begin(), layer_set.end());
    plot::HeatMap map;
    map.title = absl::StrCat(metric, " — ", config.label);
    map.x_label = "token position";
    map.y_label = metric == "adjacent_cos_tokens" ? "layer l (cos of l and l+1)" : "layer";
    map.value_label = metric;
    map.rows = static_cast<int>(layers.size());
    map.cols = max_position + 1;
    map.row_ids = layers;
    for (int t = 0; t <= max_position; ++t) map.col_ids.push_back(t);
    map.values.assign(static_cast<size_t>(map.rows) * map.cols,
                      std::numeric_limits<double>::quiet_NaN());
    for (size_t r = 0; r < layers.size(); ++r) {
      for (int t = 0; t <= max_position; ++t) {
        auto it = cells.find({layers[r], t});
        if (it != cells.end()) map.values[r * map.cols + t] = it->second.mean;
      }
    }
    map.meta = ConfigMeta(config, options.sweep_id);
    map.meta["metric"] = metric;
    map.meta["value"] = "mean over the job's example prompts (and seeds)";
    const std::string stem =
        metric == "adjacent_cos_tokens" ? "tokens_adjacent_cos" : absl::StrCat("tokens_", metric);
    figures.push_back({absl::StrCat(stem, "_", config.slug), std::move(map)});
  }

  // Spectra: stacked bins per layer, the mean over heads.
  for (const auto& [key, by_layer] : spectra) {
    const auto& [c, flavour] = key;
    if (!wanted(flavour)) continue;
    const Config& config = configs[c];
    plot::StackedBars bars;
    bars.title = absl::StrCat(flavour, ": |λ| per layer — ", config.label);
    bars.x_label = "layer (block)";
    bars.y_label = "fraction of |λ| (mean over heads and prompts)";
    for (int b = 0; b < kNumSpectrumBins; ++b) bars.stacks.push_back({kSpectrumBins[b], {}});
    for (const auto& [layer, bins] : by_layer) {
      bars.categories.push_back(absl::StrCat(layer));
      for (int b = 0; b < kNumSpectrumBins; ++b) {
        double sum = 0;
        int heads = 0;
        if (auto it = bins.find(b); it != bins.end()) {
          for (const auto& [head, v] : it->second) sum += v, ++heads;
        }
        bars.stacks[b].values.push_back(heads > 0 ? std::max(0.0, sum / heads) : 0.0);
      }
    }
    bars.meta = ConfigMeta(config, options.sweep_id);
    bars.meta["metric"] = flavour;
    figures.push_back({absl::StrCat(flavour, "_", config.slug), std::move(bars)});
  }

  for (const std::string& metric : options.metrics) {
    if (plottable.count(metric)) continue;
    std::string why = row_metrics.count(metric)
                          ? "its rows have a single layer: nothing to draw over depth"
                          : "it has no rows of that metric";
    return absl::InvalidArgumentError(absl::StrCat(
        "--metric ", metric, ": no figure of ", sweep, " (", why,
        "); its figures' metrics: ", plottable.empty() ? "none" : absl::StrJoin(plottable, ", ")));
  }
  if (figures.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nothing to plot in ", sweep,
        rows.empty() ? ": it has no results (yet)"
                     : absl::StrCat(": none of its metrics (", absl::StrJoin(row_metrics, ", "),
                                    ") has a figure (docs/cli.md, layerflow plot)")));
  }
  return figures;
}

absl::StatusOr<std::vector<std::string>> WriteFigures(
    const std::vector<NamedFigure>& figures, const std::string& dir,
    const std::vector<plot::ImageFormat>& formats) {
  // mkdir -p
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    const std::string prefix = dir.substr(0, i);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("cannot create the figures directory ", dir, " (", prefix, ")"));
    }
  }
  struct stat info;
  if (::stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("figures directory ", dir, " is not a directory"));
  }
  std::vector<std::string> written;
  for (const NamedFigure& f : figures) {
    absl::StatusOr<std::vector<std::string>> paths =
        plot::WriteFigure(f.figure, absl::StrCat(dir, "/", f.name), formats);
    if (!paths.ok()) return paths.status();
    written.insert(written.end(), paths->begin(), paths->end());
  }
  return written;
}

}  // namespace layerflow::report

// The figures of a sweep's results (`layerflow plot`, `layerflow run` after
// the tables, and the coordinator's results page): result rows in,
// report/plot figures out. Pure functions
// of the rows, so tests build them from hand-made rows and compare the
// sidecars with those rows. docs/cli.md, "layerflow plot", lists the figures.
#ifndef LAYERFLOW_REPORT_FIGURES_FIGURES_H_
#define LAYERFLOW_REPORT_FIGURES_FIGURES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "report/plot/plot.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::report {

struct NamedFigure {
  std::string name;  // the file stem: "depth_intertoken_cos", ...
  plot::Figure figure;
};

struct FigureOptions {
  // For error messages and the sidecars' meta.
  std::string sweep_id;
  // Only the figures of these metrics (a row's metric name, e.g.
  // "intertoken_cos", "cka_all_unbiased", "adjacent_cos_tokens",
  // "probe_test_acc", "spectrum", "spectrum_dsf"); empty: every figure the
  // rows allow.
  std::vector<std::string> metrics;
};

// A "configuration" is (model, init scheme, data set, context length): jobs
// that differ only in their seed are pooled, each point's mean and std
// being those of all their prompts together (PoolRows). The figures:
// - depth_<metric>: every per-layer metric with two or more layers, over
//   normalised depth l / (L+1) (0 the embedding, 1 the final norm; L from the
//   catalog for a preset, else the highest layer of the configuration's
//   rows, the final norm's point), one line per configuration with a ± std
//   band (std over prompts);
// - <cka_all_*>_<configuration>: CKA layer x layer heat maps (both halves
//   from the stored l < l' rows; the diagonal is 1, CKA's value for equal
//   inputs);
// - tokens_adjacent_cos_<configuration>: token position x layer heat maps of
//   adjacent_cos_tokens (the example prompts);
// - probe_test_acc: probe test accuracy over normalised depth, one line per
//   configuration (± std over probe seeds), each chance level dashed;
// - <spectrum>_<configuration>: the 7 |λ| bins as stacked bars per layer,
//   the mean over heads of each bin's mean over prompts.
// INVALID_ARGUMENT naming the sweep and the metric when `metrics` asks for
// one the rows do not have (listing those they have); FAILED_PRECONDITION
// when no figure can be drawn from the rows.
absl::StatusOr<std::vector<NamedFigure>> BuildFigures(absl::Span<const v1::ResultRow> rows,
                                                      const FigureOptions& options);

// Writes every figure to `dir` (created with its parents) as
// <name>.<format> for each format plus <name>.json; returns the paths.
absl::StatusOr<std::vector<std::string>> WriteFigures(
    const std::vector<NamedFigure>& figures, const std::string& dir,
    const std::vector<plot::ImageFormat>& formats);

// Mean and population std of the union of several groups of prompts, each
// given by its mean, population std and count (groups with count 0 are
// ignored): what one job over all their prompts would have stored.
struct Pooled {
  double mean = 0, std = 0;
  int64_t count = 0;
};
Pooled PoolRows(absl::Span<const v1::ResultRow* const> rows);

}  // namespace layerflow::report

#endif  // LAYERFLOW_REPORT_FIGURES_FIGURES_H_

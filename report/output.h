// Human and machine formats for what the coordinator returns: the CLI's
// tables, CSV and JSON, and the results web page's downloads (server/web),
// one code for both so that their bytes agree. Pure functions of the
// messages, so that they are tested on hand-made rows.
#ifndef LAYERFLOW_REPORT_OUTPUT_H_
#define LAYERFLOW_REPORT_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "layerflow/v1/coordinator.pb.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::report {

enum class OutputFormat { kTable, kCsv, kJson };

// "table" | "csv" | "json"; INVALID_ARGUMENT otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);

// One block per job (in order of first appearance): a header line naming
// the job's model, init scheme, seed, data set and context length, then one
// row per layer with "mean ± std" per metric (metrics sorted by name; a
// metric without a value at a layer shows "-"). Blocks are separated by a
// blank line; empty input gives "(no results)\n". Rows with a layer_b,
// head or position are left out (CSV / JSON carry them); derived rows
// (coordinator's "v_loc(x)", ...) are not grid columns: v_loc / v_glob are
// listed on one line under the job's grid, cubic coefficients left out.
// Probe rows (IsProbeRow) go to a FormatProbeTable section at the end.
std::string FormatResultsTable(absl::Span<const v1::ResultRow> rows);

// RFC 4180 CSV with a header line; values in shortest round-trip form.
// Columns: sweep_id, job_id, model, init_scheme, seed, dataset,
// context_length, metric, layer, value, std, count, layer_b, head, position
// (the last three empty when not applicable; JSON: null).
std::string FormatResultsCsv(absl::Span<const v1::ResultRow> rows);

// A JSON array of objects keyed like the CSV columns, pretty-printed.
std::string FormatResultsJson(absl::Span<const v1::ResultRow> rows);

std::string FormatResults(absl::Span<const v1::ResultRow> rows, OutputFormat format);

// Rows of PROBE jobs carry metrics starting with this prefix (worker/
// runtime/job_runner.h, RunProbeJob; docs/metrics.md): probe_test_acc /
// probe_val_acc / probe_train_acc / probe_mae (layer = representation
// point, value = mean over probe seeds, std = std over them),
// probe_test_acc_lo / _hi (the Wilson 95% interval), probe_chosen (value =
// the share of seeds whose validation chose the layer), probe_class_acc
// (position = class), and at layer 0 probe_chance, probe_num_train / _val /
// _test, probe_best_layer (the layer most seeds chose), probe_best_acc
// (held-out: each seed's test accuracy at the layer its validation chose),
// probe_final_acc, probe_drop (best - final), and the label-permutation
// null: probe_null_best_acc / probe_null_drop (value = the null mean, count
// = permutations), their _p95 and probe_best_acc_pvalue /
// probe_drop_pvalue. FormatResultsTable leaves them out of the per-job
// grids and appends FormatProbeTable instead.
inline constexpr char kProbeMetricPrefix[] = "probe_";
bool IsProbeRow(const v1::ResultRow& row);

// A best-layer accuracy or drop whose permutation p-value is above this is
// "not above its null": with K permutations the smallest p-value is
// 1 / (K + 1), so K >= 19 is needed to ever clear it.
inline constexpr double kProbeSignificance = 0.05;

// Per PROBE job (in order of first appearance), a headline
//   "pythia-70m: best layer 4 (0.82 ± 0.02), final 0.61, drop 0.21"
// (best = probe_best_layer, else the highest test accuracy; its accuracy =
// probe_best_acc, else that layer's test accuracy; final = the highest
// layer's test accuracy; drop = probe_drop, else best - final), where the
// best accuracy and the drop get " [not above null]" when their p-value is
// above kProbeSignificance; a line with init, seed, data set, context, job,
// chance level and the train/val/test example counts; a line with the
// permutation nulls (mean, 95th percentile, p-value); the per-layer table
// (test acc, its 95% interval, val acc, train acc, position MAE, each
// mean ± std over probe seeds; how many seeds chose the layer; the best
// layer marked; a column whose rows are absent, from older workers, is left
// out) and the per-class test accuracy at the best layer. Non-probe rows
// are ignored; none left gives "(no probe results)\n".
std::string FormatProbeTable(absl::Span<const v1::ResultRow> rows);

// A configuration: one (model, init scheme, data set, context length), the
// jobs that have it (they differ only in their seed) and their seeds, in
// order of first appearance. The summaries and the figures (report/
// figures/figures.h) average or pool over a configuration's jobs.
struct Configuration {
  std::string model, init_scheme, dataset;
  int32_t context_length = 0;
  std::vector<std::string> job_ids;
  std::vector<int64_t> seeds;
};
// The rows' configurations in order of first appearance; (*row_config)[i]
// is the index of rows[i]'s.
std::vector<Configuration> GroupConfigurations(absl::Span<const v1::ResultRow> rows,
                                               std::vector<size_t>* row_config);

// `layerflow results --summary`: one line per configuration (model, init
// scheme, data set, context length), in order of first appearance; jobs
// that differ only in their seed are averaged (per-layer series averaged
// over seeds first, then the peak and final of that mean series; scalars
// averaged over the jobs that have them). Columns: the layer where
// intertoken_cos peaks and its value, the final (highest) layer's
// intertoken_cos, path_energy, the means over layers of adjacent_cos and of
// the adjacent-layer cka_unbiased, cka_baseline_unbiased (the level that
// CKA must beat), and v_loc / v_glob of intertoken_cos (the coordinator's
// derived rows). A
// figure whose rows are absent shows "-" (table) or empty / null (CSV /
// JSON). The table ends with a legend line; empty input gives
// "(no results)\n" as a table.
std::string FormatResultsSummary(absl::Span<const v1::ResultRow> rows, OutputFormat format);

// `layerflow run`'s headline above the tables: one line per configuration
// (seeds averaged as in FormatResultsSummary): model, init scheme, where
// intertoken_cos peaks (its value and layer, "final" for a preset's final
// norm), its final (highest-layer) value and path_energy, then a legend
// line. "" when the rows have no intertoken_cos and no path_energy.
std::string FormatRunSummary(absl::Span<const v1::ResultRow> rows);

// "[=======>            ] 3/4 jobs done, 1 running, 0 failed · 12/16 chunks"
// The bar follows committed chunks (jobs when the sweep reports no chunks);
// cancelled and queued counts are appended only when non-zero.
std::string FormatProgressLine(const v1::Sweep& sweep, int bar_width = 20);

// Aligned table of jobs: job id, state, model, init, seed, chunks,
// attempts, error.
std::string FormatJobsTable(absl::Span<const v1::Job> jobs);
// The jobs with where their time went (Job.phase_totals, seconds summed over
// committed chunks): build, compute and upload columns ("-" where a job has
// no such phase yet), then every other phase a worker reported.
std::string FormatJobTimingsTable(absl::Span<const v1::Job> jobs);

// "queued", "running", ... and back. ParseJobState: INVALID_ARGUMENT for an
// unknown name.
std::string JobStateName(v1::JobState state);
std::string SweepStateName(v1::SweepState state);
absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name);

}  // namespace layerflow::report

#endif  // LAYERFLOW_REPORT_OUTPUT_H_

// layerflow's drawing library: plain C++ series in, a PNG or SVG file out
// (cairo). It knows nothing of sweeps, protos or gRPC (scripts/check_layers.sh
// keeps it so), so tests draw hand-made series without a server;
// report/figures/figures.h turns result rows into these figures.
//
// Every figure written by WriteFigure also gets a JSON sidecar holding the
// exact numbers drawn (FigureJson), so that a test or a script can read a
// figure back and compare it with the store.
#ifndef LAYERFLOW_REPORT_PLOT_PLOT_H_
#define LAYERFLOW_REPORT_PLOT_PLOT_H_

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerflow::plot {

// The Okabe–Ito palette (Okabe & Ito 2008), safe for the common forms of
// colour blindness, in the order lines and stacks take their colours:
// blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow,
// black. A figure with more series than colours cycles with dashed lines.
struct Rgb {
  uint8_t r, g, b;
  bool operator==(const Rgb&) const = default;
};
inline constexpr std::array<Rgb, 8> kOkabeIto = {{{0x00, 0x72, 0xB2},
                                                  {0xD5, 0x5E, 0x00},
                                                  {0x00, 0x9E, 0x73},
                                                  {0xCC, 0x79, 0xA7},
                                                  {0xE6, 0x9F, 0x00},
                                                  {0x56, 0xB4, 0xE9},
                                                  {0xF0, 0xE4, 0x42},
                                                  {0x00, 0x00, 0x00}}};
// Colour of the i-th series.
Rgb SeriesColor(size_t i);
// Heat maps: viridis (perceptually uniform, colour-blind safe), t in [0, 1]
// (clamped). Missing cells (NaN) are light grey, kMissingColor.
Rgb Viridis(double t);
inline constexpr Rgb kMissingColor = {0xDD, 0xDD, 0xDD};

// One line of a LineChart: y over x, with an optional ± std band (std empty:
// no band; otherwise one per point). `ids` (optional, one per point) are the
// data's own numbers of the points (e.g. layers), written to the sidecar
// only; `meta` is copied to the sidecar as it is.
struct Line {
  std::string label;
  std::vector<double> x, y, std;
  std::vector<int> ids;
  std::map<std::string, std::string> meta;
};

// A horizontal reference line (e.g. a probe's chance level), dashed grey,
// named in the legend.
struct ReferenceLine {
  std::string label;
  double y = 0;
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Line> lines;
  std::vector<ReferenceLine> references;
  // Axis ranges; unset: the data's (with bands and references) and a margin.
  std::optional<double> x_min, x_max, y_min, y_max;
  std::map<std::string, std::string> meta;
};

// values[r * cols + c], row r drawn from the bottom up (row 0 at the
// bottom, as a layer axis reads), NaN for a missing cell. row_ids /
// col_ids (rows / cols long) are the tick labels' numbers (layers,
// positions). The colour scale spans [v_min, v_max] (unset: the data's).
struct HeatMap {
  std::string title, x_label, y_label, value_label;
  int rows = 0, cols = 0;
  std::vector<double> values;
  std::vector<int> row_ids, col_ids;
  std::optional<double> v_min, v_max;
  std::map<std::string, std::string> meta;
};

// One bar per category (e.g. a layer), made of stacks[k].values[category]
// piled in order from the bottom.
struct StackedBars {
  struct Stack {
    std::string label;
    std::vector<double> values;
  };
  std::string title, x_label, y_label;
  std::vector<std::string> categories;
  std::vector<Stack> stacks;
  std::map<std::string, std::string> meta;
};

using Figure = std::variant<LineChart, HeatMap, StackedBars>;

enum class ImageFormat { kPng, kSvg };
// "png" / "svg" (any case); INVALID_ARGUMENT otherwise.
absl::StatusOr<ImageFormat> ParseImageFormat(absl::string_view name);
const char* ImageFormatExtension(ImageFormat format);  // "png", "svg"

// Checks the figure's shape (matching lengths, finite numbers where they
// must be, at least one series) and draws it to `path` in `format`.
// INVALID_ARGUMENT naming the figure's title and the bad field; INTERNAL
// or the file's error when cairo cannot write it.
absl::Status DrawFigure(const Figure& figure, ImageFormat format, const std::string& path);
// The same drawing as the bytes of a file (the results page serves them):
// DrawFigure writes exactly these bytes.
absl::StatusOr<std::string> RenderFigure(const Figure& figure, ImageFormat format);

// The sidecar: {"kind": "line"|"heatmap"|"stacked_bars", "title", axis
// labels, "meta", and the series exactly as drawn (lines: label, x, y, std,
// ids, meta; references: label, y; heat map: rows, cols, row_ids, col_ids,
// values row-major with null for NaN, v_min, v_max; bars: categories,
// stacks). Pretty-printed JSON.
std::string FigureJson(const Figure& figure);

// Draws `figure` as `<stem>.<ext>` for each format and writes the sidecar
// `<stem>.json`; returns the paths written (images, then the sidecar).
absl::StatusOr<std::vector<std::string>> WriteFigure(const Figure& figure, const std::string& stem,
                                                     const std::vector<ImageFormat>& formats);

}  // namespace layerflow::plot

#endif  // LAYERFLOW_REPORT_PLOT_PLOT_H_

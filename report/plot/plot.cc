#include "report/plot/plot.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace layerflow::plot {
namespace {

using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// Drawing helpers.

void SetColor(cairo_t* cr, Rgb c, double alpha = 1.0) {
  cairo_set_source_rgba(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0, alpha);
}

void SetFont(cairo_t* cr, double size, bool bold = false) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double TextWidth(cairo_t* cr, const std::string& text) {
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  return extents.x_advance;
}

enum class HAlign { kLeft, kCenter, kRight };

// Text with its baseline-ish middle at y (vertically centred on the x-height).
void DrawText(cairo_t* cr, const std::string& text, double x, double y, HAlign align,
              Rgb color = {0x22, 0x22, 0x22}) {
  const double width = TextWidth(cr, text);
  cairo_font_extents_t font;
  cairo_font_extents(cr, &font);
  double left = x;
  if (align == HAlign::kCenter) left -= width / 2;
  if (align == HAlign::kRight) left -= width;
  SetColor(cr, color);
  cairo_move_to(cr, left, y + (font.ascent - font.descent) / 2);
  cairo_show_text(cr, text.c_str());
}

void DrawRotatedText(cairo_t* cr, const std::string& text, double x, double y) {
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -M_PI / 2);
  DrawText(cr, text, 0, 0, HAlign::kCenter);
  cairo_restore(cr);
}

// Tick values of a "nice" step (1, 2, 2.5 or 5 times a power of ten) in [lo, hi].
std::vector<double> NiceTicks(double lo, double hi, int target = 6) {
  std::vector<double> ticks;
  if (!(hi > lo)) {
    ticks.push_back(lo);
    return ticks;
  }
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return ticks;
}

std::string TickLabel(double v) {
  std::string s = absl::StrFormat("%.6g", v);
  if (std::fabs(v) >= 1e5 || (std::fabs(v) < 1e-3 && v != 0)) s = absl::StrFormat("%.2e", v);
  return s;
}

struct Rect {
  double x, y, w, h;  // device units, y down
};

struct Range {
  double lo, hi;
};

// Widens a degenerate range and adds a small margin.
Range Padded(double lo, double hi, double margin = 0.05) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi - lo < 1e-12) {
    const double pad = std::max(std::fabs(lo) * 0.1, 0.05);
    return {lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * margin;
  return {lo - pad, hi + pad};
}

double MapX(const Rect& area, const Range& r, double v) {
  return area.x + (v - r.lo) / (r.hi - r.lo) * area.w;
}
double MapY(const Rect& area, const Range& r, double v) {
  return area.y + area.h - (v - r.lo) / (r.hi - r.lo) * area.h;
}

void Background(cairo_t* cr, double width, double height) {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_rectangle(cr, 0, 0, width, height);
  cairo_fill(cr);
}

void Title(cairo_t* cr, const std::string& title, double width) {
  SetFont(cr, 17, /*bold=*/true);
  DrawText(cr, title, width / 2, 24, HAlign::kCenter);
}

// Axes frame, grid, ticks and labels. x ticks either numeric (x_ticks) or
// given by labels at positions.
void Axes(cairo_t* cr, const Rect& area, const Range& xr, const Range& yr,
          const std::vector<std::pair<double, std::string>>& x_ticks,
          const std::vector<std::pair<double, std::string>>& y_ticks, const std::string& x_label,
          const std::string& y_label, bool grid) {
  SetFont(cr, 12);
  cairo_set_line_width(cr, 1);
  for (const auto& [v, label] : y_ticks) {
    const double y = MapY(area, yr, v);
    if (grid) {
      SetColor(cr, {0xE5, 0xE5, 0xE5});
      cairo_move_to(cr, area.x, y);
      cairo_line_to(cr, area.x + area.w, y);
      cairo_stroke(cr);
    }
    SetColor(cr, {0x44, 0x44, 0x44});
    cairo_move_to(cr, area.x - 5, y);
    cairo_line_to(cr, area.x, y);
    cairo_stroke(cr);
    DrawText(cr, label, area.x - 8, y, HAlign::kRight);
  }
  for (const auto& [v, label] : x_ticks) {
    const double x = MapX(area, xr, v);
    if (grid) {
      SetColor(cr, {0xE5, 0xE5, 0xE5});
      cairo_move_to(cr, x, area.y);
      cairo_line_to(cr, x, area.y + area.h);
      cairo_stroke(cr);
    }
    SetColor(cr, {0x44, 0x44, 0x44});
    cairo_move_to(cr, x, area.y + area.h);
    cairo_line_to(cr, x, area.y + area.h + 5);
    cairo_stroke(cr);
    DrawText(cr, label, x, area.y + area.h + 16, HAlign::kCenter);
  }
  SetColor(cr, {0x44, 0x44, 0x44});
  cairo_rectangle(cr, area.x, area.y, area.w, area.h);
  cairo_stroke(cr);
  SetFont(cr, 13);
  DrawText(cr, x_label, area.x + area.w / 2, area.y + area.h + 40, HAlign::kCenter);
  DrawRotatedText(cr, y_label, area.x - 58, area.y + area.h / 2);
}

std::vector<std::pair<double, std::string>> NumericTicks(const Range& r) {
  std::vector<std::pair<double, std::string>> ticks;
  for (double v : NiceTicks(r.lo, r.hi)) ticks.emplace_back(v, TickLabel(v));
  return ticks;
}

// Legend entries: a swatch (line, dashed line or box) and a label.
struct LegendEntry {
  std::string label;
  Rgb color;
  enum Kind { kLine, kDashed, kBox, kBand } kind;
};

double LegendWidth(cairo_t* cr, const std::vector<LegendEntry>& entries) {
  SetFont(cr, 12);
  double width = 0;
  for (const LegendEntry& e : entries) width = std::max(width, TextWidth(cr, e.label));
  return entries.empty() ? 0 : width + 44;
}

void Legend(cairo_t* cr, const std::vector<LegendEntry>& entries, double x, double y) {
  SetFont(cr, 12);
  for (size_t i = 0; i < entries.size(); ++i) {
    const LegendEntry& e = entries[i];
    const double row = y + 10 + i * 20;
    if (e.kind == LegendEntry::kBox || e.kind == LegendEntry::kBand) {
      SetColor(cr, e.color, e.kind == LegendEntry::kBand ? 0.25 : 1.0);
      cairo_rectangle(cr, x, row - 6, 24, 12);
      cairo_fill(cr);
    } else {
      SetColor(cr, e.color);
      cairo_set_line_width(cr, 2.5);
      if (e.kind == LegendEntry::kDashed) {
        const double dash[] = {5, 3};
        cairo_set_dash(cr, dash, 2, 0);
      }
      cairo_move_to(cr, x, row);
      cairo_line_to(cr, x + 24, row);
      cairo_stroke(cr);
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    DrawText(cr, e.label, x + 32, row, HAlign::kLeft);
  }
}

// ---------------------------------------------------------------------------
// Validation.

absl::Status Bad(const std::string& title, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("figure '", title, "': ", what));
}

absl::Status Check(const LineChart& c) {
  if (c.lines.empty()) return Bad(c.title, "no lines to draw");
  for (size_t i = 0; i < c.lines.size(); ++i) {
    const Line& l = c.lines[i];
    const std::string name = absl::StrCat("line ", i, " ('", l.label, "')");
    if (l.x.empty()) return Bad(c.title, name + " has no points");
    if (l.y.size() != l.x.size()) {
      return Bad(c.title,
                 absl::StrCat(name, ": ", l.x.size(), " x values but ", l.y.size(), " y values"));
    }
    if (!l.std.empty() && l.std.size() != l.x.size()) {
      return Bad(c.title,
                 absl::StrCat(name, ": ", l.std.size(), " std values for ", l.x.size(), " points"));
    }
    if (!l.ids.empty() && l.ids.size() != l.x.size()) {
      return Bad(c.title,
                 absl::StrCat(name, ": ", l.ids.size(), " ids for ", l.x.size(), " points"));
    }
    for (size_t k = 0; k < l.x.size(); ++k) {
      if (!std::isfinite(l.x[k]) || !std::isfinite(l.y[k]) ||
          (!l.std.empty() && !std::isfinite(l.std[k]))) {
        return Bad(c.title, absl::StrCat(name, ": point ", k, " is not finite"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Check(const HeatMap& h) {
  if (h.rows <= 0 || h.cols <= 0) {
    return Bad(h.title, absl::StrCat("empty heat map (", h.rows, " x ", h.cols, ")"));
  }
  if (h.values.size() != static_cast<size_t>(h.rows) * h.cols) {
    return Bad(h.title,
               absl::StrCat(h.values.size(), " values for ", h.rows, " x ", h.cols, " cells"));
  }
  if ((!h.row_ids.empty() && h.row_ids.size() != static_cast<size_t>(h.rows)) ||
      (!h.col_ids.empty() && h.col_ids.size() != static_cast<size_t>(h.cols))) {
    return Bad(h.title, "row_ids / col_ids do not match rows / cols");
  }
  for (double v : h.values) {
    if (std::isinf(v)) return Bad(h.title, "a cell is infinite");
  }
  return absl::OkStatus();
}

absl::Status Check(const StackedBars& b) {
  if (b.categories.empty() || b.stacks.empty()) return Bad(b.title, "no bars to draw");
  for (const StackedBars::Stack& s : b.stacks) {
    if (s.values.size() != b.categories.size()) {
      return Bad(b.title, absl::StrCat("stack '", s.label, "' has ", s.values.size(),
                                       " values for ", b.categories.size(), " bars"));
    }
    for (double v : s.values) {
      if (!std::isfinite(v) || v < 0) {
        return Bad(b.title,
                   absl::StrCat("stack '", s.label, "' has a negative or non-finite value"));
      }
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// The three kinds.

constexpr double kLineWidth = 860, kLineHeight = 520;
constexpr double kHeatWidth = 760, kHeatHeight = 620;
constexpr double kBarsWidth = 900, kBarsHeight = 520;

void Size(const LineChart&, double* w, double* h) { *w = kLineWidth, *h = kLineHeight; }
void Size(const HeatMap&, double* w, double* h) { *w = kHeatWidth, *h = kHeatHeight; }
void Size(const StackedBars&, double* w, double* h) { *w = kBarsWidth, *h = kBarsHeight; }

void Draw(cairo_t* cr, const LineChart& c) {
  Background(cr, kLineWidth, kLineHeight);
  Title(cr, c.title, kLineWidth);
  std::vector<LegendEntry> legend;
  for (size_t i = 0; i < c.lines.size(); ++i) {
    legend.push_back({c.lines[i].label, SeriesColor(i),
                      i < kOkabeIto.size() ? LegendEntry::kLine : LegendEntry::kDashed});
  }
  bool any_band = false;
  for (const Line& l : c.lines) any_band = any_band || !l.std.empty();
  if (any_band) legend.push_back({"± std", {0x77, 0x77, 0x77}, LegendEntry::kBand});
  for (const ReferenceLine& r : c.references) {
    legend.push_back({r.label, {0x66, 0x66, 0x66}, LegendEntry::kDashed});
  }
  const double legend_width = LegendWidth(cr, legend);
  const Rect area{80, 50, kLineWidth - 80 - 30 - legend_width, kLineHeight - 50 - 70};

  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  for (const Line& l : c.lines) {
    for (size_t k = 0; k < l.x.size(); ++k) {
      const double s = l.std.empty() ? 0 : l.std[k];
      x_lo = std::min(x_lo, l.x[k]);
      x_hi = std::max(x_hi, l.x[k]);
      y_lo = std::min(y_lo, l.y[k] - s);
      y_hi = std::max(y_hi, l.y[k] + s);
    }
  }
  for (const ReferenceLine& r : c.references) {
    y_lo = std::min(y_lo, r.y);
    y_hi = std::max(y_hi, r.y);
  }
  Range xr = Padded(x_lo, x_hi, 0.02), yr = Padded(y_lo, y_hi);
  if (c.x_min) xr.lo = *c.x_min;
  if (c.x_max) xr.hi = *c.x_max;
  if (c.y_min) yr.lo = *c.y_min;
  if (c.y_max) yr.hi = *c.y_max;
  Axes(cr, area, xr, yr, NumericTicks(xr), NumericTicks(yr), c.x_label, c.y_label,
       /*grid=*/true);

  cairo_save(cr);
  cairo_rectangle(cr, area.x, area.y, area.w, area.h);
  cairo_clip(cr);
  // Bands first, under every line.
  for (size_t i = 0; i < c.lines.size(); ++i) {
    const Line& l = c.lines[i];
    if (l.std.empty()) continue;
    SetColor(cr, SeriesColor(i), 0.2);
    for (size_t k = 0; k < l.x.size(); ++k) {
      const double x = MapX(area, xr, l.x[k]), y = MapY(area, yr, l.y[k] + l.std[k]);
      k == 0 ? cairo_move_to(cr, x, y) : cairo_line_to(cr, x, y);
    }
    for (size_t k = l.x.size(); k-- > 0;) {
      cairo_line_to(cr, MapX(area, xr, l.x[k]), MapY(area, yr, l.y[k] - l.std[k]));
    }
    cairo_close_path(cr);
    cairo_fill(cr);
  }
  for (const ReferenceLine& r : c.references) {
    SetColor(cr, {0x66, 0x66, 0x66});
    cairo_set_line_width(cr, 1.5);
    const double dash[] = {6, 4};
    cairo_set_dash(cr, dash, 2, 0);
    const double y = MapY(area, yr, r.y);
    cairo_move_to(cr, area.x, y);
    cairo_line_to(cr, area.x + area.w, y);
    cairo_stroke(cr);
    cairo_set_dash(cr, nullptr, 0, 0);
  }
  for (size_t i = 0; i < c.lines.size(); ++i) {
    const Line& l = c.lines[i];
    SetColor(cr, SeriesColor(i));
    cairo_set_line_width(cr, 2.5);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    if (i >= kOkabeIto.size()) {
      const double dash[] = {5, 3};
      cairo_set_dash(cr, dash, 2, 0);
    }
    for (size_t k = 0; k < l.x.size(); ++k) {
      const double x = MapX(area, xr, l.x[k]), y = MapY(area, yr, l.y[k]);
      k == 0 ? cairo_move_to(cr, x, y) : cairo_line_to(cr, x, y);
    }
    cairo_stroke(cr);
    cairo_set_dash(cr, nullptr, 0, 0);
    if (l.x.size() <= 60) {
      for (size_t k = 0; k < l.x.size(); ++k) {
        cairo_arc(cr, MapX(area, xr, l.x[k]), MapY(area, yr, l.y[k]), 3, 0, 2 * M_PI);
        cairo_fill(cr);
      }
    }
  }
  cairo_restore(cr);
  Legend(cr, legend, area.x + area.w + 16, area.y);
}

// Up to `most` evenly spread indexes of [0, n).
std::vector<int> SpreadIndexes(int n, int most) {
  std::vector<int> out;
  const int step = std::max(1, (n + most - 1) / most);
  for (int i = 0; i < n; i += step) out.push_back(i);
  return out;
}

void Draw(cairo_t* cr, const HeatMap& h) {
  Background(cr, kHeatWidth, kHeatHeight);
  Title(cr, h.title, kHeatWidth);
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : h.values) {
    if (std::isnan(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (h.v_min) lo = *h.v_min;
  if (h.v_max) hi = *h.v_max;
  if (!(hi > lo)) hi = lo + 1e-12;
  const Rect area{80, 50, kHeatWidth - 80 - 130, kHeatHeight - 50 - 70};

  // The cells as one image, one pixel per cell, scaled with the nearest
  // filter: exact cell colours, compact in SVG.
  cairo_surface_t* cells = cairo_image_surface_create(CAIRO_FORMAT_RGB24, h.cols, h.rows);
  cairo_surface_flush(cells);
  unsigned char* data = cairo_image_surface_get_data(cells);
  const int stride = cairo_image_surface_get_stride(cells);
  for (int r = 0; r < h.rows; ++r) {
    // Image row 0 is the top: data row r (bottom-up) goes to h.rows-1-r.
    auto* pixel = reinterpret_cast<uint32_t*>(data + (h.rows - 1 - r) * stride);
    for (int c = 0; c < h.cols; ++c) {
      const double v = h.values[static_cast<size_t>(r) * h.cols + c];
      const Rgb color = std::isnan(v) ? kMissingColor : Viridis((v - lo) / (hi - lo));
      pixel[c] = (uint32_t{color.r} << 16) | (uint32_t{color.g} << 8) | color.b;
    }
  }
  cairo_surface_mark_dirty(cells);
  cairo_save(cr);
  cairo_translate(cr, area.x, area.y);
  cairo_scale(cr, area.w / h.cols, area.h / h.rows);
  cairo_set_source_surface(cr, cells, 0, 0);
  cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
  cairo_rectangle(cr, 0, 0, h.cols, h.rows);
  cairo_fill(cr);
  cairo_restore(cr);
  cairo_surface_destroy(cells);

  // Ticks at cell centres, labelled with the ids.
  const Range xr{0, static_cast<double>(h.cols)}, yr{0, static_cast<double>(h.rows)};
  std::vector<std::pair<double, std::string>> x_ticks, y_ticks;
  for (int c : SpreadIndexes(h.cols, 12)) {
    x_ticks.emplace_back(c + 0.5, absl::StrCat(h.col_ids.empty() ? c : h.col_ids[c]));
  }
  for (int r : SpreadIndexes(h.rows, 14)) {
    y_ticks.emplace_back(r + 0.5, absl::StrCat(h.row_ids.empty() ? r : h.row_ids[r]));
  }
  Axes(cr, area, xr, yr, x_ticks, y_ticks, h.x_label, h.y_label, /*grid=*/false);

  // The colour bar.
  const Rect bar{area.x + area.w + 24, area.y, 20, area.h};
  cairo_pattern_t* gradient = cairo_pattern_create_linear(0, bar.y + bar.h, 0, bar.y);
  for (int k = 0; k <= 20; ++k) {
    const Rgb c = Viridis(k / 20.0);
    cairo_pattern_add_color_stop_rgb(gradient, k / 20.0, c.r / 255.0, c.g / 255.0, c.b / 255.0);
  }
  cairo_set_source(cr, gradient);
  cairo_rectangle(cr, bar.x, bar.y, bar.w, bar.h);
  cairo_fill(cr);
  cairo_pattern_destroy(gradient);
  SetColor(cr, {0x44, 0x44, 0x44});
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, bar.x, bar.y, bar.w, bar.h);
  cairo_stroke(cr);
  SetFont(cr, 11);
  const Range vr{lo, hi};
  for (double v : NiceTicks(lo, hi, 5)) {
    const double y = MapY(bar, vr, v);
    cairo_move_to(cr, bar.x + bar.w, y);
    cairo_line_to(cr, bar.x + bar.w + 4, y);
    cairo_stroke(cr);
    DrawText(cr, TickLabel(v), bar.x + bar.w + 7, y, HAlign::kLeft);
  }
  SetFont(cr, 13);
  DrawRotatedText(cr, h.value_label, bar.x + bar.w + 68, bar.y + bar.h / 2);
}

void Draw(cairo_t* cr, const StackedBars& b) {
  Background(cr, kBarsWidth, kBarsHeight);
  Title(cr, b.title, kBarsWidth);
  std::vector<LegendEntry> legend;
  // Listed top-down as the stacks pile up.
  for (size_t k = b.stacks.size(); k-- > 0;) {
    legend.push_back({b.stacks[k].label, SeriesColor(k), LegendEntry::kBox});
  }
  const double legend_width = LegendWidth(cr, legend);
  const Rect area{80, 50, kBarsWidth - 80 - 30 - legend_width, kBarsHeight - 50 - 70};
  double top = 0;
  for (size_t i = 0; i < b.categories.size(); ++i) {
    double total = 0;
    for (const StackedBars::Stack& s : b.stacks) total += s.values[i];
    top = std::max(top, total);
  }
  const Range yr{0, top > 0 ? top * 1.02 : 1};
  const Range xr{0, static_cast<double>(b.categories.size())};
  std::vector<std::pair<double, std::string>> x_ticks;
  for (int i : SpreadIndexes(static_cast<int>(b.categories.size()), 16)) {
    x_ticks.emplace_back(i + 0.5, b.categories[i]);
  }
  Axes(cr, area, xr, yr, x_ticks, NumericTicks(yr), b.x_label, b.y_label, /*grid=*/true);
  const double slot = area.w / b.categories.size();
  for (size_t i = 0; i < b.categories.size(); ++i) {
    double base = 0;
    for (size_t k = 0; k < b.stacks.size(); ++k) {
      const double v = b.stacks[k].values[i];
      if (v <= 0) continue;
      const double y0 = MapY(area, yr, base), y1 = MapY(area, yr, base + v);
      SetColor(cr, SeriesColor(k));
      cairo_rectangle(cr, area.x + slot * (i + 0.1), y1, slot * 0.8, y0 - y1);
      cairo_fill(cr);
      base += v;
    }
  }
  Legend(cr, legend, area.x + area.w + 16, area.y);
}

// ---------------------------------------------------------------------------
// Sidecar JSON.

Json Number(double v) { return std::isnan(v) ? Json() : Json(v); }

Json Numbers(const std::vector<double>& values) {
  Json out = Json::array();
  for (double v : values) out.push_back(Number(v));
  return out;
}

Json Meta(const std::map<std::string, std::string>& meta) {
  Json out = Json::object();
  for (const auto& [k, v] : meta) out[k] = v;
  return out;
}

Json ToJson(const LineChart& c) {
  Json lines = Json::array();
  for (const Line& l : c.lines) {
    lines.push_back({{"label", l.label},
                     {"x", Numbers(l.x)},
                     {"y", Numbers(l.y)},
                     {"std", Numbers(l.std)},
                     {"ids", l.ids},
                     {"meta", Meta(l.meta)}});
  }
  Json refs = Json::array();
  for (const ReferenceLine& r : c.references) refs.push_back({{"label", r.label}, {"y", r.y}});
  return {{"kind", "line"},       {"title", c.title},     {"x_label", c.x_label},
          {"y_label", c.y_label}, {"meta", Meta(c.meta)}, {"lines", lines},
          {"references", refs}};
}

Json ToJson(const HeatMap& h) {
  return {{"kind", "heatmap"},
          {"title", h.title},
          {"x_label", h.x_label},
          {"y_label", h.y_label},
          {"value_label", h.value_label},
          {"meta", Meta(h.meta)},
          {"rows", h.rows},
          {"cols", h.cols},
          {"row_ids", h.row_ids},
          {"col_ids", h.col_ids},
          {"values", Numbers(h.values)},
          {"v_min", h.v_min ? Json(*h.v_min) : Json()},
          {"v_max", h.v_max ? Json(*h.v_max) : Json()}};
}

Json ToJson(const StackedBars& b) {
  Json stacks = Json::array();
  for (const StackedBars::Stack& s : b.stacks) {
    stacks.push_back({{"label", s.label}, {"values", Numbers(s.values)}});
  }
  return {{"kind", "stacked_bars"}, {"title", b.title},     {"x_label", b.x_label},
          {"y_label", b.y_label},   {"meta", Meta(b.meta)}, {"categories", b.categories},
          {"stacks", stacks}};
}

absl::Status CairoError(cairo_status_t status, const std::string& what) {
  return absl::InternalError(
      absl::StrCat("cannot write ", what, ": cairo: ", cairo_status_to_string(status)));
}

// cairo's stream writer appending to a std::string.
cairo_status_t AppendBytes(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace

Rgb SeriesColor(size_t i) { return kOkabeIto[i % kOkabeIto.size()]; }

Rgb Viridis(double t) {
  // matplotlib's viridis at t = 0, 0.1, ..., 1.
  static constexpr Rgb kAnchors[] = {{0x44, 0x01, 0x54}, {0x48, 0x24, 0x75}, {0x41, 0x44, 0x87},
                                     {0x35, 0x5f, 0x8d}, {0x2a, 0x78, 0x8e}, {0x21, 0x91, 0x8c},
                                     {0x22, 0xa8, 0x84}, {0x44, 0xbf, 0x70}, {0x7a, 0xd1, 0x51},
                                     {0xbd, 0xdf, 0x26}, {0xfd, 0xe7, 0x25}};
  if (!(t > 0)) t = 0;  // NaN too
  if (t > 1) t = 1;
  const double pos = t * 10;
  const int i = std::min(9, static_cast<int>(pos));
  const double f = pos - i;
  auto mix = [f](uint8_t a, uint8_t b) {
    return static_cast<uint8_t>(std::lround(a + (b - a) * f));
  };
  const Rgb a = kAnchors[i], b = kAnchors[i + 1];
  return {mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b)};
}

absl::StatusOr<ImageFormat> ParseImageFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "png") return ImageFormat::kPng;
  if (lower == "svg") return ImageFormat::kSvg;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown image format '", name, "' (expected png or svg)"));
}

const char* ImageFormatExtension(ImageFormat format) {
  return format == ImageFormat::kPng ? "png" : "svg";
}

absl::StatusOr<std::string> RenderFigure(const Figure& figure, ImageFormat format) {
  if (absl::Status s = std::visit([](const auto& f) { return Check(f); }, figure); !s.ok()) {
    return s;
  }
  const std::string what = std::visit(
      [format](const auto& f) {
        return absl::StrCat("the ", ImageFormatExtension(format), " of '", f.title, "'");
      },
      figure);
  double width = 0, height = 0;
  std::visit([&](const auto& f) { Size(f, &width, &height); }, figure);
  std::string bytes;
  cairo_surface_t* surface =
      format == ImageFormat::kPng
          ? cairo_image_surface_create(CAIRO_FORMAT_ARGB32, static_cast<int>(width),
                                       static_cast<int>(height))
          : cairo_svg_surface_create_for_stream(AppendBytes, &bytes, width, height);
  if (cairo_status_t s = cairo_surface_status(surface); s != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(surface);
    return CairoError(s, what);
  }
  cairo_t* cr = cairo_create(surface);
  std::visit([cr](const auto& f) { Draw(cr, f); }, figure);
  cairo_status_t status = cairo_status(cr);
  cairo_destroy(cr);
  if (status == CAIRO_STATUS_SUCCESS && format == ImageFormat::kPng) {
    status = cairo_surface_write_to_png_stream(surface, AppendBytes, &bytes);
  }
  cairo_surface_finish(surface);  // the SVG is written here
  if (status == CAIRO_STATUS_SUCCESS) status = cairo_surface_status(surface);
  cairo_surface_destroy(surface);
  if (status != CAIRO_STATUS_SUCCESS) return CairoError(status, what);
  return bytes;
}

absl::Status DrawFigure(const Figure& figure, ImageFormat format, const std::string& path) {
  absl::StatusOr<std::string> bytes = RenderFigure(figure, format);
  if (!bytes.ok()) return bytes.status();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  out.close();
  if (!out) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string FigureJson(const Figure& figure) {
  return std::visit([](const auto& f) { return ToJson(f); }, figure).dump(2) + "\n";
}

absl::StatusOr<std::vector<std::string>> WriteFigure(const Figure& figure, const std::string& stem,
                                                     const std::vector<ImageFormat>& formats) {
  std::vector<std::string> written;
  for (ImageFormat format : formats) {
    const std::string path = absl::StrCat(stem, ".", ImageFormatExtension(format));
    if (absl::Status s = DrawFigure(figure, format, path); !s.ok()) return s;
    written.push_back(path);
  }
  const std::string sidecar = stem + ".json";
  std::ofstream out(sidecar, std::ios::binary | std::ios::trunc);
  out << FigureJson(figure);
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", sidecar));
  written.push_back(sidecar);
  return written;
}

}  // namespace layerflow::plot

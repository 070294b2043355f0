// report/plot: the drawing library without any server. The PNGs are decoded
// with cairo and their pixels checked where the geometry puts the data; the
// SVGs checked for the series' colours; the sidecars for the exact numbers.
#include "report/plot/plot.h"

#include <cairo.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace layerflow::plot {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;

// A decoded PNG.
class Png {
 public:
  explicit Png(const std::string& path)
      : surface_(cairo_image_surface_create_from_png(path.c_str())) {}
  ~Png() { cairo_surface_destroy(surface_); }
  bool ok() const { return cairo_surface_status(surface_) == CAIRO_STATUS_SUCCESS; }
  int width() const { return cairo_image_surface_get_width(surface_); }
  int height() const { return cairo_image_surface_get_height(surface_); }
  Rgb At(int x, int y) const {
    const unsigned char* data = cairo_image_surface_get_data(surface_);
    const int stride = cairo_image_surface_get_stride(surface_);
    const uint32_t p = *reinterpret_cast<const uint32_t*>(data + y * stride + 4 * x);
    return {static_cast<uint8_t>(p >> 16), static_cast<uint8_t>(p >> 8), static_cast<uint8_t>(p)};
  }
  // Pixels within `tolerance` of `c` in every channel.
  int Count(Rgb c, int tolerance = 0) const {
    int n = 0;
    for (int y = 0; y < height(); ++y) {
      for (int x = 0; x < width(); ++x) {
        const Rgb p = At(x, y);
        if (std::abs(p.r - c.r) <= tolerance && std::abs(p.g - c.g) <= tolerance &&
            std::abs(p.b - c.b) <= tolerance) {
          ++n;
        }
      }
    }
    return n;
  }

 private:
  cairo_surface_t* surface_;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// cairo's SVG writes colours as rgb(R%,G%,B%) with 6 decimals.
std::string SvgColor(Rgb c) {
  // 0 and 100 are written as integers ("0%", "100%"), the rest with %f.
  auto pct = [](uint8_t v) -> std::string {
    if (v == 0) return "0%";
    if (v == 255) return "100%";
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%f%%", v * 100.0 / 255.0);
    return buffer;
  };
  return "rgb(" + pct(c.r) + "," + pct(c.g) + "," + pct(c.b) + ")";
}

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("layerflow-plot-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

// Two flat lines on a fixed [0, 1] x [0, 1] frame: the plot area is
// x 80..(80 + w), y 50..450 (kLineHeight 520 - 50 - 70 = 400 high), so
// y = 0.5 is device row 250 and y = 0.25 row 350.
LineChart TwoLines() {
  LineChart c;
  c.title = "two lines";
  c.x_label = "depth";
  c.y_label = "value";
  c.x_min = 0, c.x_max = 1, c.y_min = 0, c.y_max = 1;
  c.lines.push_back({.label = "a",
                     .x = {0, 0.5, 1},
                     .y = {0.5, 0.5, 0.5},
                     .std = {0.1, 0.1, 0.1},
                     .ids = {0, 1, 2}});
  c.lines.push_back({.label = "b", .x = {0, 1}, .y = {0.25, 0.25}});
  c.references.push_back({"chance 0.9", 0.9});
  return c;
}

TEST(PaletteTest, OkabeItoAndViridisAnchors) {
  EXPECT_EQ(SeriesColor(0), (Rgb{0x00, 0x72, 0xB2}));  // blue
  EXPECT_EQ(SeriesColor(1), (Rgb{0xD5, 0x5E, 0x00}));  // vermillion
  EXPECT_EQ(SeriesColor(8), SeriesColor(0));           // cycles
  // matplotlib's viridis at 0, 0.5 and 1.
  EXPECT_EQ(Viridis(0), (Rgb{0x44, 0x01, 0x54}));
  EXPECT_EQ(Viridis(0.5), (Rgb{0x21, 0x91, 0x8c}));
  EXPECT_EQ(Viridis(1), (Rgb{0xfd, 0xe7, 0x25}));
  EXPECT_EQ(Viridis(-3), Viridis(0));
  EXPECT_EQ(Viridis(7), Viridis(1));
  // Halfway between the 0.0 and 0.1 anchors.
  EXPECT_EQ(Viridis(0.05), (Rgb{0x46, 0x13, 0x65}));
}

TEST_F(PlotTest, LineChartPngHasEachLineAndItsBandWhereTheDataSays) {
  ASSERT_TRUE(DrawFigure(TwoLines(), ImageFormat::kPng, Path("l.png")).ok());
  Png png(Path("l.png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 860);
  EXPECT_EQ(png.height(), 520);
  const Rgb a = SeriesColor(0), b = SeriesColor(1);
  // A 2.5 px line centred on row 250 covers rows 249 and 250 fully.
  EXPECT_EQ(png.At(200, 249), a);
  EXPECT_EQ(png.At(300, 250), a);
  EXPECT_EQ(png.At(200, 349), b);
  EXPECT_EQ(png.At(300, 350), b);
  // The ± 0.1 band spans rows 210..290: the line colour at 20% over white.
  auto band = [](uint8_t c) { return static_cast<uint8_t>(std::lround(255 * 0.8 + c * 0.2)); };
  const Rgb band_color{band(a.r), band(a.g), band(a.b)};
  int band_pixels = 0;
  for (int x = 90; x < 400; ++x) {
    const Rgb p = png.At(x, 230);
    if (std::abs(p.r - band_color.r) <= 2 && std::abs(p.g - band_color.g) <= 2 &&
        std::abs(p.b - band_color.b) <= 2) {
      ++band_pixels;
    }
  }
  EXPECT_GT(band_pixels, 250);
  // Outside the band (row 300, between the lines) no band colour.
  EXPECT_NE(png.At(200, 300), band_color);
  // Both lines, their legend swatches and markers: hundreds of pixels each.
  EXPECT_GT(png.Count(a), 500);
  EXPECT_GT(png.Count(b), 500);
  // Mostly white background.
  EXPECT_GT(png.Count({255, 255, 255}), 860 * 520 / 2);
}

TEST_F(PlotTest, SvgIsAnSvgDocumentWithTheSeriesColours) {
  ASSERT_TRUE(DrawFigure(TwoLines(), ImageFormat::kSvg, Path("l.svg")).ok());
  const std::string svg = Slurp(Path("l.svg"));
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_THAT(svg, HasSubstr("<svg"));
  EXPECT_THAT(svg, HasSubstr("width=\"860pt\" height=\"520pt\""));
  EXPECT_THAT(svg, HasSubstr("</svg>"));
  EXPECT_THAT(svg, HasSubstr(SvgColor(SeriesColor(0))));
  EXPECT_THAT(svg, HasSubstr(SvgColor(SeriesColor(1))));
  EXPECT_GT(svg.size(), 5000u);  // glyphs, axes, lines
}

TEST_F(PlotTest, HeatMapCellsHaveTheirViridisColours) {
  HeatMap h;
  h.title = "heat";
  h.x_label = "position";
  h.y_label = "layer";
  h.value_label = "v";
  h.rows = 2;
  h.cols = 3;
  const double nan = std::nan("");
  h.values = {0.0, 0.5, 1.0,   // row 0 (bottom)
              1.0, nan, 0.0};  // row 1 (top)
  h.row_ids = {3, 7};
  h.col_ids = {0, 1, 2};
  h.v_min = 0;
  h.v_max = 1;
  ASSERT_TRUE(DrawFigure(h, ImageFormat::kPng, Path("h.png")).ok());
  Png png(Path("h.png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 760);
  EXPECT_EQ(png.height(), 620);
  // Area: x 80..630 (550 wide), y 50..550 (500 high); cell centres.
  auto centre = [&](int r, int c) {
    return png.At(80 + static_cast<int>((c + 0.5) * 550 / 3),
                  50 + static_cast<int>((1 - r + 0.5) * 500 / 2));
  };
  EXPECT_EQ(centre(0, 0), Viridis(0));
  EXPECT_EQ(centre(0, 1), Viridis(0.5));
  EXPECT_EQ(centre(0, 2), Viridis(1));
  EXPECT_EQ(centre(1, 0), Viridis(1));
  EXPECT_EQ(centre(1, 1), kMissingColor);
  EXPECT_EQ(centre(1, 2), Viridis(0));
}

TEST_F(PlotTest, StackedBarsPileTheirStacksInProportion) {
  StackedBars b;
  b.title = "bars";
  b.x_label = "layer";
  b.y_label = "fraction";
  b.categories = {"1", "2"};
  b.stacks = {{"low", {0.25, 1.0}}, {"high", {0.75, 0.0}}};
  ASSERT_TRUE(DrawFigure(b, ImageFormat::kPng, Path("b.png")).ok());
  Png png(Path("b.png"));
  ASSERT_TRUE(png.ok());
  // Area y 50..450, y range [0, 1.02]: the first bar's column is "low" in
  // its bottom quarter and "high" above; find its column by scanning the
  // bottom row of the area for the first stack's colour.
  const Rgb low = SeriesColor(0), high = SeriesColor(1);
  int column = -1;
  for (int x = 81; x < 500 && column < 0; ++x) {
    if (png.At(x, 445) == low) column = x + 5;
  }
  ASSERT_GT(column, 0);
  auto y_of = [](double v) { return static_cast<int>(50 + 400 - v / 1.02 * 400); };
  EXPECT_EQ(png.At(column, y_of(0.1)), low);
  EXPECT_EQ(png.At(column, y_of(0.4)), high);
  EXPECT_EQ(png.At(column, y_of(0.95)), high);
  EXPECT_EQ(png.At(column, y_of(1.01)), (Rgb{255, 255, 255}));
}

TEST_F(PlotTest, WriteFigureWritesEachFormatAndTheExactSeriesAsJson) {
  LineChart c = TwoLines();
  c.lines[0].y = {0.1 + 0.2, 1.0 / 3, 2.0 / 3};  // not exactly printable in decimal
  c.lines[0].meta = {{"model", "pythia-tiny"}};
  absl::StatusOr<std::vector<std::string>> paths =
      WriteFigure(c, Path("fig"), {ImageFormat::kPng, ImageFormat::kSvg});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, (std::vector<std::string>{Path("fig.png"), Path("fig.svg"), Path("fig.json")}));
  EXPECT_TRUE(Png(Path("fig.png")).ok());
  const nlohmann::json j = nlohmann::json::parse(Slurp(Path("fig.json")));
  EXPECT_EQ(j["kind"], "line");
  EXPECT_EQ(j["title"], "two lines");
  ASSERT_EQ(j["lines"].size(), 2u);
  EXPECT_EQ(j["lines"][0]["label"], "a");
  EXPECT_EQ(j["lines"][0]["y"].get<std::vector<double>>(), c.lines[0].y);  // bit-exact
  EXPECT_EQ(j["lines"][0]["std"].get<std::vector<double>>(), c.lines[0].std);
  EXPECT_EQ(j["lines"][0]["ids"].get<std::vector<int>>(), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(j["lines"][0]["meta"]["model"], "pythia-tiny");
  EXPECT_TRUE(j["lines"][1]["std"].empty());
  EXPECT_EQ(j["references"][0]["y"], 0.9);

  HeatMap h{.title = "h", .rows = 1, .cols = 2, .values = {0.5, std::nan("")}};
  ASSERT_TRUE(WriteFigure(h, Path("h"), {}).ok());
  const nlohmann::json hj = nlohmann::json::parse(Slurp(Path("h.json")));
  EXPECT_EQ(hj["values"][0], 0.5);
  EXPECT_TRUE(hj["values"][1].is_null());  // NaN: a missing cell
}

// The results page serves RenderFigure's bytes, `layerflow plot` writes
// DrawFigure's files: the same image either way (an SVG's only difference
// is the number cairo counts its surfaces with: id="surfaceN").
TEST_F(PlotTest, RenderFigureGivesTheBytesDrawFigureWrites) {
  const std::regex surface_id("id=\"surface[0-9]+\"");
  for (ImageFormat format : {ImageFormat::kPng, ImageFormat::kSvg}) {
    const std::string path = Path(std::string("r.") + ImageFormatExtension(format));
    ASSERT_TRUE(DrawFigure(TwoLines(), format, path).ok());
    absl::StatusOr<std::string> bytes = RenderFigure(TwoLines(), format);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_GT(bytes->size(), 1000u);
    EXPECT_TRUE(std::regex_replace(*bytes, surface_id, "id=\"surface\"") ==
                std::regex_replace(Slurp(path), surface_id, "id=\"surface\""))
        << ImageFormatExtension(format);
  }
  EXPECT_EQ(RenderFigure(TwoLines(), ImageFormat::kPng)->substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_THAT(RenderFigure(LineChart{.title = "t"}, ImageFormat::kPng).status().message(),
              HasSubstr("figure 't': no lines to draw"));
}

TEST_F(PlotTest, BadFiguresAreRejectedNamingTheFigureAndTheField) {
  LineChart c = TwoLines();
  c.lines[1].y.push_back(1);
  absl::Status s = DrawFigure(c, ImageFormat::kPng, Path("x.png"));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "figure 'two lines': line 1 ('b'): 2 x values but 3 y"));
  EXPECT_FALSE(std::filesystem::exists(Path("x.png")));

  c = TwoLines();
  c.lines[0].y[1] = std::nan("");
  s = DrawFigure(c, ImageFormat::kSvg, Path("x.svg"));
  EXPECT_THAT(s.message(), HasSubstr("line 0 ('a'): point 1 is not finite"));

  EXPECT_THAT(DrawFigure(LineChart{.title = "t"}, ImageFormat::kPng, Path("x.png")).message(),
              HasSubstr("figure 't': no lines to draw"));
  EXPECT_THAT(DrawFigure(HeatMap{.title = "h", .rows = 2, .cols = 2, .values = {1}},
                         ImageFormat::kPng, Path("x.png"))
                  .message(),
              HasSubstr("1 values for 2 x 2 cells"));
  StackedBars b{.title = "b", .categories = {"1"}, .stacks = {{"s", {-0.5}}}};
  EXPECT_THAT(DrawFigure(b, ImageFormat::kPng, Path("x.png")).message(),
              HasSubstr("stack 's' has a negative or non-finite value"));

  // A file that cannot be written: the path in the message.
  s = DrawFigure(TwoLines(), ImageFormat::kPng, "/nonexistent-dir/x.png");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent-dir/x.png"));

  EXPECT_EQ(ParseImageFormat("SVG").value(), ImageFormat::kSvg);
  EXPECT_THAT(ParseImageFormat("jpeg").status().message(),
              HasSubstr("unknown image format 'jpeg' (expected png or svg)"));
}

}  // namespace
}  // namespace layerflow::plot

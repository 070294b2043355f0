// report/figures: result rows -> figures. The pooled values are checked
// against hand-worked unions of prompts, and the written sidecars read back
// and compared with the rows they came from.
#include "report/figures/figures.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace layerflow::report {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;

v1::ResultRow Row(const std::string& job, const std::string& model, int64_t seed,
                  const std::string& metric, int layer, double value, double std, int64_t count) {
  v1::ResultRow row;
  row.set_sweep_id("sw-f");
  row.set_job_id(job);
  row.set_model(model);
  row.set_init_scheme("reference");
  row.set_seed(seed);
  row.set_dataset("kvpr");
  row.set_context_length(400);
  row.set_metric(metric);
  row.set_layer(layer);
  row.set_value(value);
  row.set_std(std);
  row.set_count(count);
  return row;
}

const NamedFigure* Find(const std::vector<NamedFigure>& figures, const std::string& name) {
  for (const NamedFigure& f : figures) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(PoolRowsTest, IsTheMeanAndStdOfAllPromptsTogether) {
  // Job 1: prompts {1, 1} (mean 1, std 0); job 2: prompts {2, 4} (mean 3,
  // std 1). All four: mean 2, population variance (1+1+0+4)/4 = 1.5.
  const v1::ResultRow a = Row("j1", "m", 0, "x", 0, 1, 0, 2);
  const v1::ResultRow b = Row("j2", "m", 1, "x", 0, 3, 1, 2);
  const v1::ResultRow empty = Row("j3", "m", 2, "x", 0, 100, 5, 0);
  const std::vector<const v1::ResultRow*> rows = {&a, &b, &empty};
  const Pooled p = PoolRows(rows);
  EXPECT_DOUBLE_EQ(p.mean, 2.0);
  EXPECT_DOUBLE_EQ(p.std, std::sqrt(1.5));
  EXPECT_EQ(p.count, 4);
  // Unequal counts: {0, 0, 0} and {6}: mean 1.5, variance (3*2.25 + 20.25)/4.
  const v1::ResultRow c = Row("j1", "m", 0, "x", 0, 0, 0, 3);
  const v1::ResultRow d = Row("j2", "m", 1, "x", 0, 6, 0, 1);
  const std::vector<const v1::ResultRow*> rows2 = {&c, &d};
  EXPECT_DOUBLE_EQ(PoolRows(rows2).mean, 1.5);
  EXPECT_DOUBLE_EQ(PoolRows(rows2).std, std::sqrt((3 * 2.25 + 20.25) / 4));
}

// pythia-tiny has 2 blocks (points 0..3, 3 = the final norm) and mamba-tiny
// 2 as well; pythia-tiny has two seeds.
std::vector<v1::ResultRow> SweepRows() {
  std::vector<v1::ResultRow> rows;
  for (int l = 0; l <= 3; ++l) {
    rows.push_back(Row("j0", "pythia-tiny", 0, "intertoken_cos", l, 0.1 * l, 0.01, 4));
  }
  for (int l = 0; l <= 3; ++l) {
    rows.push_back(Row("j1", "pythia-tiny", 1, "intertoken_cos", l, 0.1 * l + 0.02, 0.01, 4));
  }
  for (int l = 0; l <= 3; ++l) {
    rows.push_back(Row("j2", "mamba-tiny", 0, "intertoken_cos", l, 0.01 * l, 0.002, 4));
  }
  rows.push_back(Row("j0", "pythia-tiny", 0, "path_energy", 0, 3.5, 0.1, 4));
  rows.push_back(Row("j0", "pythia-tiny", 0, "v_loc(intertoken_cos)", 0, 1e-3, 0, 4));
  // All-pair CKA (l < l'), layers 0..2.
  for (auto [l, lb, v] :
       std::vector<std::tuple<int, int, double>>{{0, 1, 0.8}, {0, 2, 0.6}, {1, 2, 0.9}}) {
    v1::ResultRow r = Row("j2", "mamba-tiny", 0, "cka_all_unbiased", l, v, 0.01, 4);
    r.set_layer_b(lb);
    rows.push_back(r);
  }
  // Token heat map: layers 0, 1 at positions 0..2 (position 2 of layer 1 missing).
  for (int l = 0; l <= 1; ++l) {
    for (int t = 0; t <= (l == 0 ? 2 : 1); ++t) {
      v1::ResultRow r =
          Row("j0", "pythia-tiny", 0, "adjacent_cos_tokens", l, 0.5 + 0.1 * l + 0.01 * t, 0, 4);
      r.set_position(t);
      rows.push_back(r);
    }
  }
  // A spectrum of 2 heads at block 1: head 0 all in bin 3, head 1 split 3 / 4.
  for (int head = 0; head < 2; ++head) {
    for (int bin = 0; bin < 7; ++bin) {
      double v = 0;
      if (bin == 3) v = head == 0 ? 1.0 : 0.5;
      if (bin == 4) v = head == 0 ? 0.0 : 0.5;
      v1::ResultRow r =
          Row("j0", "pythia-tiny", 0, "spectrum_frac_" + std::to_string(bin), 1, v, 0, 4);
      r.set_head(head);
      rows.push_back(r);
    }
  }
  // Probe: test accuracy per layer, chance 1/3, over 3 probe seeds.
  for (int l = 0; l <= 3; ++l) {
    rows.push_back(Row("p2", "mamba-tiny", 0, "probe_test_acc", l, 0.3 + 0.1 * l, 0.05, 3));
  }
  rows.push_back(Row("p2", "mamba-tiny", 0, "probe_chance", 0, 1.0 / 3, 0, 1));
  return rows;
}

TEST(BuildFiguresTest, MetricOverDepthPoolsSeedsPerModel) {
  const std::vector<v1::ResultRow> rows = SweepRows();
  absl::StatusOr<std::vector<NamedFigure>> figures = BuildFigures(rows, {.sweep_id = "sw-f"});
  ASSERT_TRUE(figures.ok()) << figures.status();
  const NamedFigure* f = Find(*figures, "depth_intertoken_cos");
  ASSERT_NE(f, nullptr);
  const auto& chart = std::get<plot::LineChart>(f->figure);
  EXPECT_EQ(chart.title, "intertoken_cos over normalised depth");
  ASSERT_EQ(chart.lines.size(), 2u);
  const plot::Line& pythia = chart.lines[0];
  EXPECT_EQ(pythia.label, "pythia-tiny");
  EXPECT_EQ(pythia.ids, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(pythia.meta.at("jobs"), "j0 j1");
  for (int l = 0; l <= 3; ++l) {
    EXPECT_DOUBLE_EQ(pythia.x[l], l / 3.0);
    // Seeds 0.1 l and 0.1 l + 0.02 (4 prompts each, std 0.01): mean +0.01,
    // variance 0.01² + 0.01² (the two means are 0.01 from the pooled one).
    EXPECT_NEAR(pythia.y[l], 0.1 * l + 0.01, 1e-15);
    EXPECT_NEAR(pythia.std[l], std::sqrt(2e-4), 1e-15);
  }
  EXPECT_EQ(chart.lines[1].label, "mamba-tiny");
  EXPECT_DOUBLE_EQ(chart.lines[1].y[2], 0.02);
  EXPECT_DOUBLE_EQ(chart.lines[1].std[2], 0.002);
  // path_energy (one layer) and derived rows draw nothing over depth.
  EXPECT_EQ(Find(*figures, "depth_path_energy"), nullptr);
  EXPECT_EQ(Find(*figures, "depth_v_loc(intertoken_cos)"), nullptr);
}

TEST(BuildFiguresTest, CkaHeatMapIsSymmetricWithAUnitDiagonal) {
  const std::vector<v1::ResultRow> rows = SweepRows();
  absl::StatusOr<std::vector<NamedFigure>> figures = BuildFigures(rows, {});
  ASSERT_TRUE(figures.ok()) << figures.status();
  const NamedFigure* f = Find(*figures, "cka_all_unbiased_mamba-tiny_reference_kvpr_400");
  ASSERT_NE(f, nullptr);
  const auto& h = std::get<plot::HeatMap>(f->figure);
  ASSERT_EQ(h.rows, 3);
  EXPECT_EQ(h.row_ids, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(h.values, (std::vector<double>{1, 0.8, 0.6,  //
                                           0.8, 1, 0.9,  //
                                           0.6, 0.9, 1}));
}

TEST(BuildFiguresTest, TokenHeatMapProbeAndSpectrum) {
  const std::vector<v1::ResultRow> rows = SweepRows();
  absl::StatusOr<std::vector<NamedFigure>> figures = BuildFigures(rows, {});
  ASSERT_TRUE(figures.ok()) << figures.status();

  const NamedFigure* t = Find(*figures, "tokens_adjacent_cos_pythia-tiny_reference_kvpr_400");
  ASSERT_NE(t, nullptr);
  const auto& h = std::get<plot::HeatMap>(t->figure);
  EXPECT_EQ(h.rows, 2);
  EXPECT_EQ(h.cols, 3);
  EXPECT_DOUBLE_EQ(h.values[0], 0.5);
  EXPECT_DOUBLE_EQ(h.values[2], 0.52);
  EXPECT_DOUBLE_EQ(h.values[3 + 1], 0.61);
  EXPECT_TRUE(std::isnan(h.values[3 + 2]));  // not stored: missing, not 0

  const NamedFigure* p = Find(*figures, "probe_test_acc");
  ASSERT_NE(p, nullptr);
  const auto& probe = std::get<plot::LineChart>(p->figure);
  ASSERT_EQ(probe.lines.size(), 1u);
  EXPECT_EQ(probe.lines[0].label, "mamba-tiny");
  EXPECT_DOUBLE_EQ(probe.lines[0].y[3], 0.6);
  EXPECT_DOUBLE_EQ(probe.lines[0].std[3], 0.05);
  EXPECT_DOUBLE_EQ(probe.lines[0].x[3], 1.0);
  ASSERT_EQ(probe.references.size(), 1u);
  EXPECT_DOUBLE_EQ(probe.references[0].y, 1.0 / 3);
  EXPECT_EQ(probe.references[0].label, "chance 0.333");

  const NamedFigure* s = Find(*figures, "spectrum_pythia-tiny_reference_kvpr_400");
  ASSERT_NE(s, nullptr);
  const auto& bars = std::get<plot::StackedBars>(s->figure);
  EXPECT_EQ(bars.categories, (std::vector<std::string>{"1"}));
  ASSERT_EQ(bars.stacks.size(), 7u);
  EXPECT_EQ(bars.stacks[3].label, "[0.9, 1)");
  EXPECT_DOUBLE_EQ(bars.stacks[3].values[0], 0.75);  // (1 + 0.5) / 2 heads
  EXPECT_DOUBLE_EQ(bars.stacks[4].values[0], 0.25);
  EXPECT_DOUBLE_EQ(bars.stacks[0].values[0], 0.0);
}

// A TRAIN sweep with analyses: the TRAIN jobs' curves drawn over the step
// (not as token heat maps: they sit at positions), and the analysed models
// "artifact:<train job>/init_model" and ".../model" labelled by the TRAIN
// job's architecture, the seeds of one architecture pooled.
TEST(BuildFiguresTest, TrainSweepCurvesAndTrainedModelsByArchitecture) {
  std::vector<v1::ResultRow> rows;
  auto curve = [&](const std::string& job, int64_t seed, int step, double acc) {
    v1::ResultRow r = Row(job, "mamba2", seed, "eval_acc", 0, acc, 0.1, 8);
    r.set_position(step);
    rows.push_back(r);
    r.set_metric("train_stopped");
    rows.push_back(r);
    r.set_metric("train_loss");
    r.set_value(1.0 / step);
    rows.push_back(r);
  };
  curve("sw-t-0", 0, 10, 0.2);
  curve("sw-t-0", 0, 20, 0.4);
  curve("sw-t-1", 1, 10, 0.4);
  curve("sw-t-1", 1, 20, 0.6);
  for (int layer = 0; layer <= 3; ++layer) {
    rows.push_back(Row("sw-t-2", "artifact:sw-t-0/init_model", 0, "intertoken_cos", layer, 0.1,
                       0, 4));
    rows.push_back(Row("sw-t-3", "artifact:sw-t-0/model", 0, "intertoken_cos", layer, 0.3, 0, 4));
    rows.push_back(Row("sw-t-4", "artifact:sw-t-1/init_model", 1, "intertoken_cos", layer, 0.1,
                       0, 4));
    rows.push_back(Row("sw-t-5", "artifact:sw-t-1/model", 1, "intertoken_cos", layer, 0.5, 0, 4));
  }
  // A model of another store's TRAIN job keeps its name.
  for (int layer = 0; layer <= 3; ++layer) {
    rows.push_back(Row("sw-t-6", "artifact:sw-other-0/model", 0, "intertoken_cos", layer, 0.9,
                       0, 4));
  }
  absl::StatusOr<std::vector<NamedFigure>> figures = BuildFigures(rows, {.sweep_id = "sw-t"});
  ASSERT_TRUE(figures.ok()) << figures.status();

  const NamedFigure* depth = Find(*figures, "depth_intertoken_cos");
  ASSERT_NE(depth, nullptr);
  const auto& chart = std::get<plot::LineChart>(depth->figure);
  ASSERT_EQ(chart.lines.size(), 3u);
  EXPECT_EQ(chart.lines[0].label, "mamba2 · init");
  EXPECT_EQ(chart.lines[0].meta.at("jobs"), "sw-t-2 sw-t-4");
  EXPECT_EQ(chart.lines[1].label, "mamba2 · trained");
  EXPECT_EQ(chart.lines[1].meta.at("jobs"), "sw-t-3 sw-t-5");
  // Seeds 0.3 and 0.5 (4 prompts each, std 0): mean 0.4, std 0.1.
  EXPECT_NEAR(chart.lines[1].y[2], 0.4, 1e-15);
  EXPECT_NEAR(chart.lines[1].std[2], 0.1, 1e-15);
  EXPECT_EQ(chart.lines[2].label, "artifact:sw-other-0/model");

  const NamedFigure* acc = Find(*figures, "training_eval_acc");
  ASSERT_NE(acc, nullptr);
  const auto& training = std::get<plot::LineChart>(acc->figure);
  EXPECT_EQ(training.x_label, "step");
  ASSERT_EQ(training.lines.size(), 1u);
  EXPECT_EQ(training.lines[0].label, "mamba2");
  EXPECT_EQ(training.lines[0].x, (std::vector<double>{10, 20}));
  // Step 20: seeds 0.4 and 0.6, each std 0.1 over 8 sequences: mean 0.5,
  // variance 0.1² + 0.1².
  EXPECT_NEAR(training.lines[0].y[1], 0.5, 1e-15);
  EXPECT_NEAR(training.lines[0].std[1], std::sqrt(0.02), 1e-15);
  EXPECT_NE(Find(*figures, "training_train_loss"), nullptr);
  for (const NamedFigure& f : *figures) {
    EXPECT_FALSE(absl::StartsWith(f.name, "tokens_")) << f.name;
    EXPECT_EQ(f.name.find("train_stopped"), std::string::npos) << f.name;
  }
}

TEST(BuildFiguresTest, MetricFilterAndItsErrorsNameTheSweepAndMetric) {
  const std::vector<v1::ResultRow> rows = SweepRows();
  absl::StatusOr<std::vector<NamedFigure>> only =
      BuildFigures(rows, {.sweep_id = "sw-f", .metrics = {"spectrum"}});
  ASSERT_TRUE(only.ok()) << only.status();
  ASSERT_EQ(only->size(), 1u);
  EXPECT_EQ((*only)[0].name, "spectrum_pythia-tiny_reference_kvpr_400");

  absl::StatusOr<std::vector<NamedFigure>> bad =
      BuildFigures(rows, {.sweep_id = "sw-f", .metrics = {"intertoken_cos", "adjcent_cos"}});
  EXPECT_THAT(bad.status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--metric adjcent_cos: no figure of sweep sw-f (it has no rows of that "
                       "metric); its figures' metrics: adjacent_cos_tokens, cka_all_unbiased, "
                       "intertoken_cos, probe_test_acc, spectrum"));
  bad = BuildFigures(rows, {.sweep_id = "sw-f", .metrics = {"path_energy"}});
  EXPECT_THAT(bad.status().message(),
              HasSubstr("--metric path_energy: no figure of sweep sw-f (its rows have a single "
                        "layer: nothing to draw over depth)"));

  const std::vector<v1::ResultRow> scalar = {Row("j", "pythia-tiny", 0, "path_energy", 0, 1, 0, 1)};
  EXPECT_EQ(BuildFigures(scalar, {.sweep_id = "sw-f"}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(BuildFigures({}, {.sweep_id = "sw-f"}).status().message(),
              HasSubstr("nothing to plot in sweep sw-f: it has no results (yet)"));
}

// The read-back: every written sidecar's points equal the rows they came
// from (one seed per model here, so each point is a stored row's value).
TEST(WriteFiguresTest, SidecarsReadBackEqualTheStoredRows) {
  std::vector<v1::ResultRow> rows;
  for (int l = 0; l <= 3; ++l) {
    rows.push_back(
        Row("a", "pythia-tiny", 0, "adjacent_cos", l, std::sin(l + 0.3), 0.1 / (l + 1), 8));
    rows.push_back(
        Row("b", "mamba2-tiny", 0, "adjacent_cos", l, std::cos(l + 0.7), 0.2 / (l + 1), 8));
  }
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("layerflow-figures-test-" + std::to_string(getpid())) / "deep" / "er")
                              .string();
  absl::StatusOr<std::vector<NamedFigure>> figures = BuildFigures(rows, {.sweep_id = "sw-f"});
  ASSERT_TRUE(figures.ok()) << figures.status();
  absl::StatusOr<std::vector<std::string>> paths =
      WriteFigures(*figures, dir, {plot::ImageFormat::kPng, plot::ImageFormat::kSvg});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, (std::vector<std::string>{dir + "/depth_adjacent_cos.png",
                                              dir + "/depth_adjacent_cos.svg",
                                              dir + "/depth_adjacent_cos.json"}));
  std::ifstream in(dir + "/depth_adjacent_cos.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  std::map<std::pair<std::string, int>, const v1::ResultRow*> stored;
  for (const v1::ResultRow& r : rows) stored[{r.model(), r.layer()}] = &r;
  int points = 0;
  for (const auto& line : j["lines"]) {
    const std::string model = line["meta"]["model"];
    for (size_t k = 0; k < line["ids"].size(); ++k) {
      const v1::ResultRow* r = stored.at({model, line["ids"][k].get<int>()});
      EXPECT_EQ(line["y"][k].get<double>(), r->value()) << model << " " << k;
      EXPECT_EQ(line["std"][k].get<double>(), r->std()) << model << " " << k;
      EXPECT_DOUBLE_EQ(line["x"][k].get<double>(), r->layer() / 3.0);
      ++points;
    }
  }
  EXPECT_EQ(points, 8);
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path().parent_path());

  EXPECT_THAT(
      WriteFigures(*figures, "/proc/no-such/figures", {plot::ImageFormat::kPng}).status().message(),
      HasSubstr("cannot create the figures directory /proc/no-such/figures"));
}

}  // namespace
}  // namespace layerflow::report

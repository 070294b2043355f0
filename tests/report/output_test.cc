#include "report/output.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace layerflow::report {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::Eq;

v1::ResultRow Row(const std::string& job, const std::string& model, const std::string& init,
                  int64_t seed, int context, const std::string& metric, int layer, double value,
                  double std_dev, int64_t count = 8) {
  v1::ResultRow row;
  row.set_sweep_id("s1");
  row.set_job_id(job);
  row.set_model(model);
  row.set_init_scheme(init);
  row.set_seed(seed);
  row.set_dataset("kvpr");
  row.set_context_length(context);
  row.set_metric(metric);
  row.set_layer(layer);
  row.set_value(value);
  row.set_std(std_dev);
  row.set_count(count);
  return row;
}

std::vector<v1::ResultRow> TwoJobs() {
  // Deliberately interleaved and out of layer order: the table groups by
  // job and sorts layers and metrics.
  return {
      Row("j1", "pythia-14m", "reference", 0, 256, "intertoken_cos", 2, 0.75, 0.5),
      Row("j1", "pythia-14m", "reference", 0, 256, "adjacent_cos", 0, 0.91234, 0.0123),
      Row("j2", "pythia-70m", "normal(0.02)", 1, 64, "adjacent_cos", 0, 1.0, 0.0),
      Row("j1", "pythia-14m", "reference", 0, 256, "intertoken_cos", 0, 0.25, 0.125),
      Row("j1", "pythia-14m", "reference", 0, 256, "adjacent_cos", 1, 0.5, 0.0),
      Row("j1", "pythia-14m", "reference", 0, 256, "intertoken_cos", 1, -0.0625, 0.001),
  };
}

TEST(ResultsTableTest, OneAlignedBlockPerJob) {
  const std::string expected =
      "model pythia-14m · init reference · seed 0 · dataset kvpr · context 256 · job j1\n"
      "layer |    adjacent_cos |   intertoken_cos\n"
      "------+-----------------+-----------------\n"
      "    0 | 0.9123 ± 0.0123 |  0.2500 ± 0.1250\n"
      "    1 | 0.5000 ± 0.0000 | -0.0625 ± 0.0010\n"
      "    2 |               - |  0.7500 ± 0.5000\n"
      "\n"
      "model pythia-70m · init normal(0.02) · seed 1 · dataset kvpr · context 64 · job j2\n"
      "layer |    adjacent_cos\n"
      "------+----------------\n"
      "    0 | 1.0000 ± 0.0000\n";
  EXPECT_EQ(FormatResultsTable(TwoJobs()), expected);
  EXPECT_EQ(FormatResults(TwoJobs(), OutputFormat::kTable), expected);
}

// pythia-tiny has 2 blocks: layer 3 is the final norm's output (METHODS.md).
TEST(ResultsTableTest, PresetFinalNormRowIsLabelledFinal) {
  const std::vector<v1::ResultRow> rows = {
      Row("j", "pythia-tiny", "reference", 0, 512, "intertoken_cos", 2, 0.5, 0.0),
      Row("j", "pythia-tiny", "reference", 0, 512, "intertoken_cos", 3, 0.25, 0.0),
      Row("k", "my-checkpoint", "reference", 0, 512, "intertoken_cos", 3, 0.25, 0.0)};
  const std::string table = FormatResultsTable(rows);
  EXPECT_THAT(table, ::testing::HasSubstr("    2 | 0.5000 ± 0.0000\n"));
  EXPECT_THAT(table, ::testing::HasSubstr("final | 0.2500 ± 0.0000\n"));
  // Not a preset: the block count is unknown, so the number stays.
  EXPECT_THAT(table, ::testing::HasSubstr("    3 | 0.2500 ± 0.0000\n"));
}

// Regression: a PROBE job whose only non-probe rows were keyed (example-view
// CKA) printed an empty section header. Keyed rows now only add a note.
TEST(ResultsTableTest, KeyedRowsAreCountedNotGridded) {
  v1::ResultRow keyed =
      Row("j1", "pythia-tiny", "reference", 0, 600, "cka_example_biased", 0, 0.5, 0.0);
  keyed.set_layer_b(1);
  v1::ResultRow spectrum =
      Row("j1", "pythia-tiny", "reference", 0, 600, "spectrum_q50", 1, 0.9, 0.1);
  spectrum.set_head(2);
  const std::string out = FormatResultsTable({keyed, spectrum});
  EXPECT_EQ(out.find("job j1"), std::string::npos) << out;
  EXPECT_NE(out.find("2 more rows keyed by layer_b, head or position"), std::string::npos) << out;
}

TEST(ResultsTableTest, Empty) { EXPECT_EQ(FormatResultsTable({}), "(no results)\n"); }

TEST(ResultsCsvTest, HeaderRowsAndShortestDoubles) {
  std::vector<v1::ResultRow> rows = {
      Row("j1", "pythia-14m", "reference", 0, 256, "adjacent_cos", 0, 0.1, 1e-20),
      Row("j2", "pythia-70m", "normal(0.02)", 12, 64, "intertoken_cos", 3, 1.0, 0.5, 4),
      Row("j2", "pythia-70m", "normal(0.02)", 12, 64, "cka", 1, 0.5, 0, 4),
      Row("j2", "pythia-70m", "normal(0.02)", 12, 64, "attn", 2, 0.25, 0, 4)};
  rows[2].set_layer_b(5);
  rows[3].set_head(0);
  rows[3].set_position(7);
  EXPECT_EQ(FormatResultsCsv(rows),
            "sweep_id,job_id,model,init_scheme,seed,dataset,context_length,metric,layer,"
            "value,std,count,layer_b,head,position\n"
            "s1,j1,pythia-14m,reference,0,kvpr,256,adjacent_cos,0,0.1,1e-20,8,,,\n"
            "s1,j2,pythia-70m,normal(0.02),12,kvpr,64,intertoken_cos,3,1,0.5,4,,,\n"
            "s1,j2,pythia-70m,normal(0.02),12,kvpr,64,cka,1,0.5,0,4,5,,\n"
            "s1,j2,pythia-70m,normal(0.02),12,kvpr,64,attn,2,0.25,0,4,,0,7\n");
}

TEST(ResultsCsvTest, QuotesCommasQuotesAndNewlines) {
  std::vector<v1::ResultRow> rows = {
      Row("j1", "my,model \"x\"", "uniform(0.1)", 0, 16, "multi\nline", 0, -2.5, 0)};
  EXPECT_EQ(FormatResultsCsv(rows),
            "sweep_id,job_id,model,init_scheme,seed,dataset,context_length,metric,layer,"
            "value,std,count,layer_b,head,position\n"
            "s1,j1,\"my,model \"\"x\"\"\",uniform(0.1),0,kvpr,16,\"multi\nline\",0,-2.5,0,8,,,\n");
}

TEST(ResultsJsonTest, ExactSmallDocument) {
  std::vector<v1::ResultRow> rows = {
      Row("j1", "pythia-14m", "reference", 0, 256, "adjacent_cos", 0, 0.1, 0.25)};
  rows[0].set_head(2);
  EXPECT_EQ(FormatResultsJson(rows),
            "[\n"
            "  {\n"
            "    \"sweep_id\": \"s1\",\n"
            "    \"job_id\": \"j1\",\n"
            "    \"model\": \"pythia-14m\",\n"
            "    \"init_scheme\": \"reference\",\n"
            "    \"seed\": 0,\n"
            "    \"dataset\": \"kvpr\",\n"
            "    \"context_length\": 256,\n"
            "    \"metric\": \"adjacent_cos\",\n"
            "    \"layer\": 0,\n"
            "    \"value\": 0.1,\n"
            "    \"std\": 0.25,\n"
            "    \"count\": 8,\n"
            "    \"layer_b\": null,\n"
            "    \"head\": 2,\n"
            "    \"position\": null\n"
            "  }\n"
            "]\n");
  EXPECT_EQ(FormatResultsJson({}), "[]\n");
}

TEST(ResultsJsonTest, RoundTripsEveryValueExactly) {
  std::vector<v1::ResultRow> rows = TwoJobs();
  rows.push_back(Row("j3", "a\"b,c", "reference", 9007199254740993LL, 65536, "adjacent_cos", 7,
                     1.0 / 3.0, 2.0 / 3.0, 123456789012LL));
  const nlohmann::json parsed = nlohmann::json::parse(FormatResultsJson(rows));
  ASSERT_TRUE(parsed.is_array());
  ASSERT_EQ(parsed.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& o = parsed[i];
    EXPECT_EQ(o.at("sweep_id").get<std::string>(), rows[i].sweep_id());
    EXPECT_EQ(o.at("job_id").get<std::string>(), rows[i].job_id());
    EXPECT_EQ(o.at("model").get<std::string>(), rows[i].model());
    EXPECT_EQ(o.at("init_scheme").get<std::string>(), rows[i].init_scheme());
    EXPECT_EQ(o.at("seed").get<int64_t>(), rows[i].seed());
    EXPECT_EQ(o.at("dataset").get<std::string>(), rows[i].dataset());
    EXPECT_EQ(o.at("context_length").get<int32_t>(), rows[i].context_length());
    EXPECT_EQ(o.at("metric").get<std::string>(), rows[i].metric());
    EXPECT_EQ(o.at("layer").get<int32_t>(), rows[i].layer());
    EXPECT_EQ(o.at("value").get<double>(), rows[i].value());  // bit-exact
    EXPECT_EQ(o.at("std").get<double>(), rows[i].std());
    EXPECT_EQ(o.at("count").get<int64_t>(), rows[i].count());
  }
}

v1::Sweep MakeSweep(v1::SweepState state, int total, int queued, int running, int succeeded,
                    int failed, int cancelled, int64_t chunks, int64_t chunks_total) {
  v1::Sweep sweep;
  sweep.set_sweep_id("s1");
  sweep.set_state(state);
  sweep.set_jobs_total(total);
  sweep.set_jobs_queued(queued);
  sweep.set_jobs_running(running);
  sweep.set_jobs_succeeded(succeeded);
  sweep.set_jobs_failed(failed);
  sweep.set_jobs_cancelled(cancelled);
  sweep.set_chunks_committed(chunks);
  sweep.set_chunks_total(chunks_total);
  return sweep;
}

TEST(ProgressLineTest, Midway) {
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_ACTIVE, 4, 0, 1, 3, 0, 0, 12, 16)),
            "[===============>    ] 3/4 jobs done, 1 running, 0 failed · 12/16 chunks");
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_ACTIVE, 4, 0, 1, 3, 0, 0, 12, 16), 10),
            "[=======>  ] 3/4 jobs done, 1 running, 0 failed · 12/16 chunks");
}

TEST(ProgressLineTest, StartAndEnd) {
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_ACTIVE, 4, 4, 0, 0, 0, 0, 0, 16)),
            "[>                   ] 0/4 jobs done, 0 running, 0 failed · 0/16 chunks");
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_SUCCEEDED, 4, 0, 0, 4, 0, 0, 16, 16)),
            "[====================] 4/4 jobs done, 0 running, 0 failed · 16/16 chunks");
}

TEST(ProgressLineTest, FailedAndCancelledFinishTheBar) {
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_CANCELLED, 4, 0, 0, 1, 1, 2, 6, 16)),
            "[====================] 4/4 jobs done, 0 running, 1 failed, 2 cancelled · 6/16 "
            "chunks");
}

TEST(ProgressLineTest, NoChunkCountsFallsBackToJobs) {
  EXPECT_EQ(FormatProgressLine(MakeSweep(v1::SWEEP_STATE_ACTIVE, 4, 2, 0, 2, 0, 0, 0, 0)),
            "[==========>         ] 2/4 jobs done, 0 running, 0 failed · 0/0 chunks");
}

TEST(JobsTableTest, AlignedWithOneLineErrors) {
  std::vector<v1::Job> jobs(2);
  jobs[0].set_job_id("j1");
  jobs[0].set_state(v1::JOB_STATE_SUCCEEDED);
  jobs[0].mutable_spec()->set_model("pythia-14m");
  jobs[0].mutable_spec()->set_init_scheme("reference");
  jobs[0].mutable_spec()->set_seed(0);
  jobs[0].set_chunks_committed(4);
  jobs[0].set_chunks_total(4);
  jobs[0].set_attempts(1);
  jobs[1].set_job_id("j2-long");
  jobs[1].set_state(v1::JOB_STATE_FAILED);
  jobs[1].mutable_spec()->set_model("pythia-70m");
  jobs[1].mutable_spec()->set_init_scheme("normal(0.02)");
  jobs[1].mutable_spec()->set_seed(1);
  jobs[1].set_chunks_committed(1);
  jobs[1].set_chunks_total(4);
  jobs[1].set_attempts(3);
  jobs[1].set_error("out of\nmemory");
  EXPECT_EQ(
      FormatJobsTable(jobs),
      "job     | state     | model      | init         | seed | chunks | attempts | error\n"
      "--------+-----------+------------+--------------+------+--------+----------+--------------\n"
      "j1      | succeeded | pythia-14m | reference    |    0 |    4/4 |        1 |\n"
      "j2-long | failed    | pythia-70m | normal(0.02) |    1 |    1/4 |        3 | out of "
      "memory\n");
  EXPECT_EQ(FormatJobsTable({}), "(no jobs)\n");
}

TEST(OutputTest, JobTimingsTableSumsEachJobsPhases) {
  std::vector<v1::Job> jobs(2);
  jobs[0].set_job_id("j1");
  jobs[0].set_state(v1::JOB_STATE_SUCCEEDED);
  jobs[0].mutable_spec()->set_model("pythia-14m");
  jobs[0].set_chunks_committed(2);
  jobs[0].set_chunks_total(2);
  for (auto [phase, seconds] : {std::pair{"build", 2.5}, std::pair{"compute", 0.75},
                                std::pair{"stage", 0.125}, std::pair{"data", 0.0625}}) {
    v1::PhaseTime* t = jobs[0].add_phase_totals();
    t->set_phase(phase);
    t->set_seconds(seconds);
  }
  jobs[1].set_job_id("j2");
  jobs[1].set_state(v1::JOB_STATE_QUEUED);
  jobs[1].mutable_spec()->set_model("mamba-tiny");
  jobs[1].set_chunks_total(2);
  // The known phases first, then others in the order seen; "-" where a
  // job has none; the total sums the job's phases (2.5 + 0.0625 + 0.75 +
  // 0.125).
  EXPECT_EQ(FormatJobTimingsTable(jobs),
            "job | state     | model      | chunks | build s | data s | compute s | upload s | "
            "commit s | stage s | total s\n"
            "----+-----------+------------+--------+---------+--------+-----------+----------+-"
            "---------+---------+--------\n"
            "j1  | succeeded | pythia-14m |    2/2 |   2.500 |  0.062 |     0.750 |        - | "
            "       - |   0.125 |   3.438\n"
            "j2  | queued    | mamba-tiny |    0/2 |       - |      - |         - |        - | "
            "       - |       - |       -\n");
  EXPECT_EQ(FormatJobTimingsTable({}), "(no jobs)\n");
}

TEST(StateNamesTest, RoundTrip) {
  for (v1::JobState state : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    absl::StatusOr<v1::JobState> parsed = ParseJobState(JobStateName(state));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, state);
  }
  absl::StatusOr<v1::JobState> bad = ParseJobState("done");
  EXPECT_THAT(bad.status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       Eq("unknown job state 'done' (expected queued, running, succeeded, "
                          "failed or cancelled)")));
  EXPECT_EQ(SweepStateName(v1::SWEEP_STATE_FAILED), "failed");
}

TEST(OutputFormatTest, Parse) {
  EXPECT_EQ(ParseOutputFormat("csv").value(), OutputFormat::kCsv);
  EXPECT_EQ(ParseOutputFormat("JSON").value(), OutputFormat::kJson);
  EXPECT_EQ(ParseOutputFormat("table").value(), OutputFormat::kTable);
  EXPECT_EQ(ParseOutputFormat("xml").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ResultsTableTest, KeyedRowsStayOutOfTheGrid) {
  std::vector<v1::ResultRow> rows = {
      Row("j1", "m", "reference", 0, 64, "adjacent_cos", 0, 0.5, 0.25),
      Row("j1", "m", "reference", 0, 64, "adjacent_cos", 0, 0.125, 0)};
  rows[1].set_head(1);
  EXPECT_EQ(FormatResultsTable(rows),
            "model m · init reference · seed 0 · dataset kvpr · context 64 · job j1\n"
            "layer |    adjacent_cos\n"
            "------+----------------\n"
            "    0 | 0.5000 ± 0.2500\n"
            "\n"
            "1 more rows keyed by layer_b, head or position (all-pair and example-view "
            "CKA, spectra, per-token heat maps): --format csv or json\n");
}

TEST(ResultsTableTest, DerivedRowsGoUnderTheGrid) {
  std::vector<v1::ResultRow> rows = {
      Row("j1", "m", "reference", 0, 64, "adjacent_cos", 0, 0.5, 0.25),
      Row("j1", "m", "reference", 0, 64, "cubic(adjacent_cos)", 0, 0.5, 0, 5),
      Row("j1", "m", "reference", 0, 64, "v_glob(adjacent_cos)", 0, 0.03125, 0, 5),
      Row("j1", "m", "reference", 0, 64, "v_loc(adjacent_cos)", 0, 0.0009765625, 0, 5)};
  EXPECT_EQ(FormatResultsTable(rows),
            "model m · init reference · seed 0 · dataset kvpr · context 64 · job j1\n"
            "layer |    adjacent_cos\n"
            "------+----------------\n"
            "    0 | 0.5000 ± 0.2500\n"
            "v_glob(adjacent_cos) = 3.125e-02 · v_loc(adjacent_cos) = 9.766e-04\n");
}

// Two seeds of one configuration (averaged; dyadic values, so the means
// are exact: mean cka (0.75 + 0.5) / 2, baseline (1/64 + 1/128) / 2) and a
// second configuration without path_energy, CKA or derived rows.
std::vector<v1::ResultRow> SummaryRows() {
  std::vector<v1::ResultRow> rows;
  const double itc1[] = {0.25, 0.625, 0.375, 0.25}, itc2[] = {0.375, 0.125, 0.875, 0.5};
  for (int l = 0; l < 4; ++l) {
    rows.push_back(Row("j1", "m", "reference", 1, 64, "intertoken_cos", l, itc1[l], 0));
  }
  rows.push_back(Row("j1", "m", "reference", 1, 64, "adjacent_cos", 0, 0.875, 0));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "adjacent_cos", 1, 0.75, 0));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "path_energy", 0, 1.5, 0));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "cka_unbiased", 0, 0.875, 0));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "cka_unbiased", 1, 0.625, 0));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "cka_baseline_unbiased", 0, 0.015625, 0));
  rows.push_back(
      Row("j1", "m", "reference", 1, 64, "v_loc(intertoken_cos)", 0, 0.0009765625, 0, 4));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "v_glob(intertoken_cos)", 0, 0.015625, 0, 4));
  rows.push_back(Row("j1", "m", "reference", 1, 64, "cubic(intertoken_cos)", 0, 9.0, 0, 4));
  for (int l = 0; l < 4; ++l) {
    rows.push_back(Row("j2", "m", "reference", 2, 64, "intertoken_cos", l, itc2[l], 0));
  }
  rows.push_back(Row("j2", "m", "reference", 2, 64, "adjacent_cos", 0, 0.75, 0));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "adjacent_cos", 1, 0.625, 0));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "path_energy", 0, 2.5, 0));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "cka_unbiased", 0, 0.625, 0));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "cka_unbiased", 1, 0.375, 0));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "cka_baseline_unbiased", 0, 0.0078125, 0));
  rows.push_back(
      Row("j2", "m", "reference", 2, 64, "v_loc(intertoken_cos)", 0, 0.0029296875, 0, 4));
  rows.push_back(Row("j2", "m", "reference", 2, 64, "v_glob(intertoken_cos)", 0, 0.046875, 0, 4));
  rows.push_back(Row("j3", "m2", "normal(0.02)", 5, 128, "intertoken_cos", 0, 0.5, 0));
  rows.push_back(Row("j3", "m2", "normal(0.02)", 5, 128, "intertoken_cos", 1, 0.25, 0));
  rows.push_back(Row("j3", "m2", "normal(0.02)", 5, 128, "adjacent_cos", 0, 0.125, 0));
  return rows;
}

TEST(ResultsSummaryTest, TableAveragesSeedsAndMarksMissingFigures) {
  const std::string expected =
      "model | init         | dataset | context | seeds | peak layer | peak itc | final itc | "
      "path_energy | mean adj_cos | mean cka | cka base | v_loc(itc) | v_glob(itc)\n"
      "------+--------------+---------+---------+-------+------------+----------+-----------+------"
      "-------+--------------+----------+----------+------------+------------\n"
      "m     | reference    | kvpr    |      64 |   1,2 |          2 |   0.6250 |    0.3750 |      "
      "2.0000 |       0.7500 |   0.6250 |   0.0117 |  1.953e-03 |   3.125e-02\n"
      "m2    | normal(0.02) | kvpr    |     128 |     5 |          0 |   0.5000 |    0.2500 |      "
      "     - |       0.1250 |        - |        - |          - |           -\n"
      "itc = intertoken_cos; cka = cka_unbiased(l, l+1), mean over layers; cka base = "
      "cka_baseline_unbiased; several seeds: the mean over seeds (peak and final of the "
      "seed-mean series)\n";
  EXPECT_EQ(FormatResultsSummary(SummaryRows(), OutputFormat::kTable), expected);
}

TEST(ResultsSummaryTest, PeakAtTheFinalNormIsLabelledFinal) {
  // pythia-14m has 6 blocks: layer 7 is the final norm.
  std::vector<v1::ResultRow> rows = {
      Row("j1", "pythia-14m", "reference", 0, 64, "intertoken_cos", 6, 0.5, 0),
      Row("j1", "pythia-14m", "reference", 0, 64, "intertoken_cos", 7, 0.75, 0)};
  const std::string table = FormatResultsSummary(rows, OutputFormat::kTable);
  EXPECT_THAT(table, ::testing::HasSubstr("|      final |   0.7500 |    0.7500 |"));
}

TEST(ResultsSummaryTest, CsvAndJson) {
  const std::string csv = FormatResultsSummary(SummaryRows(), OutputFormat::kCsv);
  EXPECT_EQ(
      csv,
      "model,init_scheme,dataset,context_length,seeds,jobs,peak_layer,"
      "peak_intertoken_cos,final_intertoken_cos,path_energy,mean_adjacent_cos,"
      "mean_cka_unbiased,cka_baseline_unbiased,v_loc_intertoken_cos,v_glob_intertoken_cos\n"
      "m,reference,kvpr,64,1 2,j1 j2,2,0.625,0.375,2,0.75,0.625,0.01171875,0.001953125,0.03125\n"
      "m2,normal(0.02),kvpr,128,5,j3,0,0.5,0.25,,0.125,,,,\n");
  const nlohmann::json json =
      nlohmann::json::parse(FormatResultsSummary(SummaryRows(), OutputFormat::kJson));
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["seeds"], nlohmann::json({1, 2}));
  EXPECT_EQ(json[0]["peak_layer"], 2);
  EXPECT_DOUBLE_EQ(json[0]["path_energy"].get<double>(), 2.0);
  EXPECT_TRUE(json[1]["path_energy"].is_null());
  EXPECT_TRUE(json[1]["v_loc_intertoken_cos"].is_null());
  EXPECT_DOUBLE_EQ(json[0]["mean_cka_unbiased"].get<double>(), 0.625);
  EXPECT_DOUBLE_EQ(json[0]["cka_baseline_unbiased"].get<double>(), 0.01171875);
  EXPECT_TRUE(json[1]["mean_cka_unbiased"].is_null());
}

TEST(ResultsSummaryTest, EmptyInput) {
  EXPECT_EQ(FormatResultsSummary({}, OutputFormat::kTable), "(no results)\n");
  EXPECT_EQ(FormatResultsSummary({}, OutputFormat::kJson), "[]\n");
}

// `layerflow run`'s headline: the same seed-averaged figures as --summary
// (m: seed-mean itc 0.3125 0.375 0.625 0.375, so the peak 0.625 at layer 2,
// final 0.375, path_energy (1.5 + 2.5) / 2), compact.
TEST(RunSummaryTest, PeakFinalAndPathEnergyPerModel) {
  EXPECT_EQ(FormatRunSummary(SummaryRows()),
            "model | init         | itc peak | at layer | final itc | path_energy\n"
            "------+--------------+----------+----------+-----------+------------\n"
            "m     | reference    |   0.6250 |        2 |    0.3750 |           2\n"
            "m2    | normal(0.02) |   0.5000 |        0 |    0.2500 |           -\n"
            "itc = intertoken_cos (mean over prompts; seeds averaged); at layer: where it "
            "peaks; final: the last representation point\n");
  // Nothing to summarise: nothing printed (no empty table above the grids).
  EXPECT_EQ(FormatRunSummary({}), "");
  EXPECT_EQ(FormatRunSummary({Row("j", "m", "reference", 0, 64, "adjacent_cos", 0, 0.5, 0)}), "");
}

// A PROBE job's rows (pythia-70m: 6 blocks, so layer 7 is "final"), as the
// worker stores them, plus one EXTRACT row of the same sweep.
std::vector<v1::ResultRow> ProbeRows() {
  std::vector<v1::ResultRow> rows;
  rows.push_back(Row("e1", "pythia-70m", "reference", 0, 2048, "adjacent_cos", 0, 0.5, 0.1));
  const double test[] = {0.10, 0.30, 0.50, 0.70, 0.82, 0.78, 0.70, 0.61};
  for (int layer = 0; layer < 8; ++layer) {
    rows.push_back(Row("p1", "pythia-70m", "reference", 0, 2048, "probe_test_acc", layer,
                       test[layer], layer == 4 ? 0.02 : 0.01, 3));
    rows.push_back(Row("p1", "pythia-70m", "reference", 0, 2048, "probe_train_acc", layer,
                       test[layer] + 0.1, 0.0, 3));
    rows.push_back(Row("p1", "pythia-70m", "reference", 0, 2048, "probe_mae", layer,
                       2.0 - layer * 0.25, 0.05, 3));
  }
  for (int c = 0; c < 3; ++c) {
    v1::ResultRow row =
        Row("p1", "pythia-70m", "reference", 0, 2048, "probe_class_acc", 4, 0.9 - 0.1 * c, 0.0, 3);
    row.set_position(c);
    rows.push_back(row);
  }
  rows.push_back(
      Row("p1", "pythia-70m", "reference", 0, 2048, "probe_chance", 0, 1.0 / 11, 0.0, 3));
  rows.push_back(Row("p1", "pythia-70m", "reference", 0, 2048, "probe_best_layer", 0, 4, 0.0, 3));
  rows.push_back(Row("p1", "pythia-70m", "reference", 0, 2048, "probe_drop", 0, 0.21, 0.0, 3));
  return rows;
}

TEST(ProbeTableTest, HeadlineTableAndPerClassAccuracy) {
  const std::string out = FormatProbeTable(ProbeRows());
  const std::string expected =
      "pythia-70m: best layer 4 (0.82 ± 0.02), final 0.61, drop 0.21\n"
      "  init reference · seed 0 · dataset kvpr · context 2048 · job p1 · chance 0.09\n"
      "layer |      test acc |     train acc | position mae | best\n"
      "------+---------------+---------------+--------------+-----\n"
      "    0 | 0.100 ± 0.010 | 0.200 ± 0.000 |  2.00 ± 0.05 |\n"
      "    1 | 0.300 ± 0.010 | 0.400 ± 0.000 |  1.75 ± 0.05 |\n"
      "    2 | 0.500 ± 0.010 | 0.600 ± 0.000 |  1.50 ± 0.05 |\n"
      "    3 | 0.700 ± 0.010 | 0.800 ± 0.000 |  1.25 ± 0.05 |\n"
      "    4 | 0.820 ± 0.020 | 0.920 ± 0.000 |  1.00 ± 0.05 | *\n"
      "    5 | 0.780 ± 0.010 | 0.880 ± 0.000 |  0.75 ± 0.05 |\n"
      "    6 | 0.700 ± 0.010 | 0.800 ± 0.000 |  0.50 ± 0.05 |\n"
      "final | 0.610 ± 0.010 | 0.710 ± 0.000 |  0.25 ± 0.05 |\n"
      "per-class test accuracy at layer 4: 0:0.90 1:0.80 2:0.70\n";
  EXPECT_EQ(out, expected);
}

// The rows of a PROBE job with held-out selection and the permutation
// null: best layer 4 chosen on validation by 2 of 3 seeds, its held-out
// accuracy beats the null (p = 1/21), the drop does not (p = 6/21).
std::vector<v1::ResultRow> HeldOutProbeRows() {
  std::vector<v1::ResultRow> rows;
  auto add = [&](const std::string& metric, int layer, double value, double std_dev,
                 int64_t count) {
    rows.push_back(
        Row("p2", "pythia-70m", "reference", 1, 2048, metric, layer, value, std_dev, count));
  };
  const double test[] = {0.10, 0.30, 0.50, 0.70, 0.80, 0.78, 0.70, 0.61};
  for (int layer = 0; layer < 8; ++layer) {
    add("probe_test_acc", layer, test[layer], 0.01, 3);
    add("probe_test_acc_lo", layer, test[layer] - 0.1, 0, 1);
    add("probe_test_acc_hi", layer, test[layer] + 0.1, 0, 1);
    add("probe_val_acc", layer, test[layer] + 0.02, 0.02, 3);
    add("probe_train_acc", layer, test[layer] + 0.1, 0.0, 3);
    add("probe_mae", layer, 2.0 - layer * 0.25, 0.05, 3);
    add("probe_chosen", layer, layer == 4 ? 2.0 / 3 : layer == 5 ? 1.0 / 3 : 0, 0.47, 3);
  }
  add("probe_chance", 0, 1.0 / 11, 0, 1);
  add("probe_num_train", 0, 132, 0, 1);
  add("probe_num_val", 0, 44, 0, 1);
  add("probe_num_test", 0, 44, 0, 1);
  add("probe_best_layer", 0, 4, 0, 1);
  add("probe_best_acc", 0, 0.793, 0.03, 3);  // seed 3 chose layer 5
  add("probe_final_acc", 0, 0.61, 0.01, 3);
  add("probe_drop", 0, 0.183, 0.02, 3);
  add("probe_null_best_acc", 0, 0.104, 0.02, 20);
  add("probe_null_best_acc_p95", 0, 0.131, 0, 1);
  add("probe_best_acc_pvalue", 0, 1.0 / 21, 0, 1);
  add("probe_null_drop", 0, 0.012, 0.1, 20);
  add("probe_null_drop_p95", 0, 0.25, 0, 1);
  add("probe_drop_pvalue", 0, 6.0 / 21, 0, 1);
  return rows;
}

TEST(ProbeTableTest, HeldOutBestLayerIntervalsAndTheNull) {
  const std::string expected =
      "pythia-70m: best layer 4 (0.79 ± 0.03), final 0.61, drop 0.18 [not above null]\n"
      "  init reference · seed 1 · dataset kvpr · context 2048 · job p2 · chance 0.09 · "
      "132/44/44 train/val/test examples\n"
      "  label-permutation null (20 permutations): best acc 0.10 (95th pct 0.13), "
      "p = 0.048 · drop 0.01 (95th pct 0.25), p = 0.286\n"
      "layer |      test acc |       95% CI |       val acc |     train acc | position mae "
      "| chosen | best\n"
      "------+---------------+--------------+---------------+---------------+--------------"
      "+--------+-----\n"
      "    0 | 0.100 ± 0.010 | [0.00, 0.20] | 0.120 ± 0.020 | 0.200 ± 0.000 |  2.00 ± 0.05 "
      "|        |\n"
      "    1 | 0.300 ± 0.010 | [0.20, 0.40] | 0.320 ± 0.020 | 0.400 ± 0.000 |  1.75 ± 0.05 "
      "|        |\n"
      "    2 | 0.500 ± 0.010 | [0.40, 0.60] | 0.520 ± 0.020 | 0.600 ± 0.000 |  1.50 ± 0.05 "
      "|        |\n"
      "    3 | 0.700 ± 0.010 | [0.60, 0.80] | 0.720 ± 0.020 | 0.800 ± 0.000 |  1.25 ± 0.05 "
      "|        |\n"
      "    4 | 0.800 ± 0.010 | [0.70, 0.90] | 0.820 ± 0.020 | 0.900 ± 0.000 |  1.00 ± 0.05 "
      "|    2/3 | *\n"
      "    5 | 0.780 ± 0.010 | [0.68, 0.88] | 0.800 ± 0.020 | 0.880 ± 0.000 |  0.75 ± 0.05 "
      "|    1/3 |\n"
      "    6 | 0.700 ± 0.010 | [0.60, 0.80] | 0.720 ± 0.020 | 0.800 ± 0.000 |  0.50 ± 0.05 "
      "|        |\n"
      "final | 0.610 ± 0.010 | [0.51, 0.71] | 0.630 ± 0.020 | 0.710 ± 0.000 |  0.25 ± 0.05 "
      "|        |\n";
  EXPECT_EQ(FormatProbeTable(HeldOutProbeRows()), expected);
  // A best accuracy inside its null is marked too; p = 0.05 exactly is not
  // "above 0.05" (K = 19: the smallest p-value).
  std::vector<v1::ResultRow> rows = HeldOutProbeRows();
  for (v1::ResultRow& row : rows) {
    if (row.metric() == "probe_best_acc_pvalue") row.set_value(0.43);
    if (row.metric() == "probe_drop_pvalue") row.set_value(1.0 / 20);
    if (row.metric() == "probe_null_drop") row.set_value(-0.004);  // not "-0.00"
  }
  EXPECT_THAT(FormatProbeTable(rows),
              ::testing::StartsWith("pythia-70m: best layer 4 (0.79 ± 0.03) [not above null], "
                                    "final 0.61, drop 0.18\n"));
  EXPECT_THAT(FormatProbeTable(rows), ::testing::HasSubstr(" · drop 0.00 (95th pct 0.25)"));
}

TEST(ProbeTableTest, WithoutBestLayerAndDropRowsTheyAreComputed) {
  std::vector<v1::ResultRow> rows;
  for (const v1::ResultRow& row : ProbeRows()) {
    if (row.metric() != "probe_best_layer" && row.metric() != "probe_drop") {
      rows.push_back(row);
    }
  }
  EXPECT_THAT(
      FormatProbeTable(rows),
      ::testing::StartsWith("pythia-70m: best layer 4 (0.82 ± 0.02), final 0.61, drop 0.21\n"));
  EXPECT_EQ(FormatProbeTable({}), "(no probe results)\n");
  EXPECT_EQ(FormatProbeTable({ProbeRows()[0]}), "(no probe results)\n");
}

TEST(ProbeTableTest, ResultsTableKeepsProbeRowsOutOfTheGridsAndAppendsThem) {
  const std::vector<v1::ResultRow> rows = ProbeRows();
  const std::string table = FormatResultsTable(rows);
  const std::string grid =
      "model pythia-70m · init reference · seed 0 · dataset kvpr · context 2048 · job e1\n"
      "layer |    adjacent_cos\n"
      "------+----------------\n"
      "    0 | 0.5000 ± 0.1000\n";
  EXPECT_EQ(table, grid + "\n" + FormatProbeTable(rows));
  EXPECT_EQ(table.find("job p1\nlayer"), std::string::npos);  // no grid for p1
  // Only probe rows: just the probe section.
  const std::vector<v1::ResultRow> only(rows.begin() + 1, rows.end());
  EXPECT_EQ(FormatResultsTable(only), FormatProbeTable(rows));
  EXPECT_TRUE(IsProbeRow(rows[1]));
  EXPECT_FALSE(IsProbeRow(rows[0]));
  // CSV keeps every row, the keyed per-class ones included.
  const std::string csv = FormatResultsCsv(rows);
  EXPECT_THAT(csv, ::testing::HasSubstr(",probe_class_acc,4,0.8,0,3,,,1\n"));
}

}  // namespace
}  // namespace layerflow::report

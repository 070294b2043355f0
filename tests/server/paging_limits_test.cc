// Issue 14, item 6: ListJobs and QueryResults paged with page tokens, caps
// on every string and repeated field of requests, and a committed chunk
// checked against its job. Each error path matches the code and message.
#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "common/api_limits.h"
#include "server/core/coordinator_core.h"
#include "server/core/request_limits.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::CoreOnSqlite;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;

class PagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoreOptions options;
    options.lease_ttl_ms = 60'000;
    options.retry_backoff_ms = 0;
    LF_ASSERT_OK_AND_ASSIGN(
        core_, CoreOnSqlite(dir_.File("lf.db"), options, [this] { return now_.load(); }));
    v1::RegisterWorkerRequest reg;
    reg.set_name("w");
    auto r = core_->RegisterWorker(reg);
    ASSERT_TRUE(r.ok()) << r.status();
    worker_ = r->worker_id();
  }

  // `seeds` jobs of pythia-14m (6 blocks: layers 0..7), 2 prompts, one chunk.
  std::string Submit(int seeds, const std::string& name = "paging") {
    v1::SweepSpec spec;
    spec.set_name(name);
    spec.add_models("pythia-14m");
    for (int s = 0; s < seeds; ++s) spec.add_seeds(s);
    spec.set_num_prompts(2);
    spec.set_prompts_per_chunk(2);
    auto submitted = core_->SubmitSweep(spec);
    EXPECT_TRUE(submitted.ok()) << submitted.status();
    return submitted.ok() ? submitted->sweep_id() : "";
  }

  v1::LeaseJobResponse Lease() {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_);
    auto lease = core_->LeaseJob(request);
    EXPECT_TRUE(lease.ok()) << lease.status();
    EXPECT_TRUE(lease->leased());
    return *lease;
  }

  // Chunk 0 of the leased job: adjacent_cos at layers 0..5 (value base + l/10).
  v1::ResultChunk Chunk(const v1::LeaseJobResponse& lease, double base) {
    v1::ResultChunk chunk;
    chunk.set_job_id(lease.job().job_id());
    chunk.set_lease_id(lease.lease_id());
    chunk.set_sequence(0);
    for (int l = 0; l < 6; ++l) {
      v1::MetricStat* stat = chunk.add_stats();
      stat->set_metric("adjacent_cos");
      stat->set_layer(l);
      const double v = base + 0.1 * l;
      stat->set_sum(2 * v);
      stat->set_sum_sq(2 * v * v);
      stat->set_count(2);
    }
    chunk.add_prompt_tokens(100);
    chunk.add_prompt_tokens(101);
    return chunk;
  }

  // Every row of a query, following next_page_token with `page_size`.
  std::vector<v1::ResultRow> AllPages(v1::QueryResultsRequest request, int page_size, int* pages) {
    std::vector<v1::ResultRow> rows;
    request.set_page_size(page_size);
    *pages = 0;
    do {
      auto page = core_->QueryResults(request);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      ++*pages;
      EXPECT_LE(page->rows_size(), page_size);
      for (const auto& row : page->rows()) rows.push_back(row);
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty() && *pages < 1000);
    return rows;
  }

  static std::string Key(const v1::ResultRow& row) {
    return absl::StrCat(row.job_id(), "|", row.metric(), "|", row.layer(), "|", row.value());
  }

  TempDir dir_;
  std::atomic<int64_t> now_{1'000'000};
  std::unique_ptr<CoordinatorCore> core_;
  std::string worker_;
};

TEST_F(PagingTest, ListJobsPagesReturnEveryJobExactlyOnceInCreationOrder) {
  const std::string sweep = Submit(7);
  Submit(2, "other");  // jobs of another sweep never show up
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep);
  request.set_page_size(3);
  std::vector<std::string> ids;
  std::vector<int> sizes;
  do {
    LF_ASSERT_OK_AND_ASSIGN(auto page, core_->ListJobs(request));
    sizes.push_back(page.jobs_size());
    for (const auto& job : page.jobs()) ids.push_back(job.job_id());
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  EXPECT_EQ(sizes, (std::vector<int>{3, 3, 1}));
  std::vector<std::string> expected;
  for (int i = 0; i < 7; ++i) expected.push_back(absl::StrCat(sweep, "-", i));
  EXPECT_EQ(ids, expected);

  // page_size 0: the default (all 7 on one page, no token); over the max:
  // served as the max.
  request.clear_page_token();
  request.set_page_size(0);
  LF_ASSERT_OK_AND_ASSIGN(auto one, core_->ListJobs(request));
  EXPECT_EQ(one.jobs_size(), 7);
  EXPECT_EQ(one.next_page_token(), "");
  request.set_page_size(limits::kMaxJobsPageSize + 1);
  LF_ASSERT_OK_AND_ASSIGN(auto big, core_->ListJobs(request));
  EXPECT_EQ(big.jobs_size(), 7);
}

TEST_F(PagingTest, ListJobsPagesFilterByStateAcrossPages) {
  const std::string sweep = Submit(5);
  const v1::LeaseJobResponse lease = Lease();  // job 0 RUNNING, 1..4 QUEUED
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep);
  request.set_state(v1::JOB_STATE_QUEUED);
  request.set_page_size(2);
  std::vector<std::string> ids;
  do {
    LF_ASSERT_OK_AND_ASSIGN(auto page, core_->ListJobs(request));
    for (const auto& job : page.jobs()) {
      EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
      ids.push_back(job.job_id());
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  EXPECT_EQ(ids,
            (std::vector<std::string>{sweep + "-1", sweep + "-2", sweep + "-3", sweep + "-4"}));
  EXPECT_EQ(lease.job().job_id(), sweep + "-0");
}

TEST_F(PagingTest, BadPageRequestsAreInvalidArgumentNamingTheField) {
  const std::string sweep = Submit(3);
  const std::string other = Submit(3, "other");
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep);
  request.set_page_size(1);
  LF_ASSERT_OK_AND_ASSIGN(auto first, core_->ListJobs(request));
  ASSERT_FALSE(first.next_page_token().empty());

  // A token continues only its own listing.
  v1::ListJobsRequest moved = request;
  moved.set_sweep_id(other);
  moved.set_page_token(first.next_page_token());
  EXPECT_THAT(core_->ListJobs(moved).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "page_token: belongs to another listing (the sweep or a filter changed)"));
  v1::ListJobsRequest restate = request;
  restate.set_state(v1::JOB_STATE_QUEUED);
  restate.set_page_token(first.next_page_token());
  EXPECT_THAT(core_->ListJobs(restate).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_token: belongs to another"));
  v1::ListJobsRequest garbage = request;
  garbage.set_page_token("not-a-token!");
  EXPECT_THAT(core_->ListJobs(garbage).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "page_token: not a token this coordinator made"));
  v1::ListJobsRequest negative = request;
  negative.set_page_size(-1);
  EXPECT_THAT(
      core_->ListJobs(negative).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "page_size: -1 is negative (0 means 500)"));
  // A results token is not a jobs token.
  v1::QueryResultsRequest results;
  results.set_sweep_id(sweep);
  results.set_page_token(first.next_page_token());
  EXPECT_THAT(core_->QueryResults(results).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_token: belongs to another"));
  results.set_page_token(std::string(limits::kMaxPageTokenBytes + 1, 'A'));
  EXPECT_THAT(core_->QueryResults(results).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "page_token: 1025 bytes, more than the limit of 1024"));
}

TEST_F(PagingTest, QueryResultsPagesReturnEveryRowExactlyOnceAtEveryPageSize) {
  const std::string sweep = Submit(4);
  // Jobs 0, 1 and 3 have results; job 2 has none (a gap the pages skip).
  for (int j = 0; j < 4; ++j) {
    const v1::LeaseJobResponse lease = Lease();
    if (j == 2) continue;
    LF_ASSERT_OK(core_->CommitChunk(Chunk(lease, j)).status());
  }
  v1::QueryResultsRequest request;
  request.set_sweep_id(sweep);
  request.set_page_size(limits::kMaxResultsPageSize);
  LF_ASSERT_OK_AND_ASSIGN(auto whole, core_->QueryResults(request));
  EXPECT_EQ(whole.next_page_token(), "");
  // Per job: 6 stored rows + cubic (4) + v_glob + v_loc = 12.
  ASSERT_EQ(whole.rows_size(), 3 * 12);
  std::vector<std::string> expected;
  for (const auto& row : whole.rows()) expected.push_back(Key(row));
  EXPECT_EQ(std::set<std::string>(expected.begin(), expected.end()).size(), expected.size());

  for (int page_size : {1, 2, 5, 11, 12, 13, 24, 35, 36, 37}) {
    SCOPED_TRACE(page_size);
    int pages = 0;
    std::vector<std::string> got;
    for (const auto& row : AllPages(request, page_size, &pages)) got.push_back(Key(row));
    EXPECT_EQ(got, expected);
    // Every page but the last is full, and no empty page trails.
    EXPECT_EQ(pages, (36 + page_size - 1) / page_size);
  }

  // A derived-metric filter pages its own rows (one per job).
  request.set_metric("v_glob(adjacent_cos)");
  int pages = 0;
  std::vector<v1::ResultRow> v_glob = AllPages(request, 1, &pages);
  ASSERT_EQ(v_glob.size(), 3u);
  EXPECT_EQ(v_glob[0].job_id(), sweep + "-0");
  EXPECT_EQ(v_glob[1].job_id(), sweep + "-1");
  EXPECT_EQ(v_glob[2].job_id(), sweep + "-3");
  // Population variance of l/10, l = 0..5: 0.01 * 35/12.
  EXPECT_NEAR(v_glob[2].value(), 0.01 * 35.0 / 12.0, 1e-12);
}

TEST(PageTokens, RoundTripAndStayBoundToTheirFilters) {
  const PageCursor cursor{"sw-1-7", 42};
  const std::string token = EncodePageToken("QueryResults", {"sw-1", "", "m", ""}, cursor);
  LF_ASSERT_OK_AND_ASSIGN(PageCursor back,
                          DecodePageToken(token, "QueryResults", {"sw-1", "", "m", ""}));
  EXPECT_EQ(back.after_job_id, "sw-1-7");
  EXPECT_EQ(back.skip, 42);
  EXPECT_THAT(DecodePageToken(token, "QueryResults", {"sw-1", "", "n", ""}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_token: belongs to another"));
  LF_ASSERT_OK_AND_ASSIGN(PageCursor first, DecodePageToken("", "ListJobs", {}));
  EXPECT_EQ(first.after_job_id, "");
  EXPECT_EQ(first.skip, 0);
}

// What a worker sends as FailJob.error fits the cap, whole characters only.
TEST(CutToLimit, FitsTheCapWithoutSplittingACharacter) {
  EXPECT_EQ(limits::CutToLimit("short", 20), "short");
  EXPECT_EQ(limits::CutToLimit("abcdefghijklmnopqrstuvwxyz", 20), "abcdefghij ... (cut)");
  // "é" is two bytes (C3 A9); a cut after C3 drops it whole.
  const std::string text = "abcdefghi\xc3\xa9zzzzzzzzzzzzzzz";
  EXPECT_EQ(limits::CutToLimit(text, 20), "abcdefghi ... (cut)");
  const std::string cut = limits::CutToLimit(std::string(20000, 'x'), limits::kMaxErrorBytes);
  EXPECT_EQ(static_cast<int64_t>(cut.size()), limits::kMaxErrorBytes);
}

TEST_F(PagingTest, OversizedFieldsAreInvalidArgumentNamingTheFieldAndTheLimit) {
  const std::string sweep = Submit(1);
  const v1::LeaseJobResponse lease = Lease();

  v1::FailJobRequest fail;
  fail.set_job_id(lease.job().job_id());
  fail.set_lease_id(lease.lease_id());
  fail.set_error(std::string(limits::kMaxErrorBytes + 1, 'x'));
  EXPECT_THAT(core_->FailJob(fail), StatusIs(absl::StatusCode::kInvalidArgument,
                                             "error: 8193 bytes, more than the limit of 8192"));

  v1::RegisterWorkerRequest reg;
  reg.set_name(std::string(257, 'w'));
  EXPECT_THAT(
      core_->RegisterWorker(reg).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "name: 257 bytes, more than the limit of 256"));
  reg.set_name("w");
  for (int i = 0; i < 65; ++i) reg.mutable_capabilities()->add_architectures("gpt_neox");
  EXPECT_THAT(core_->RegisterWorker(reg).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "capabilities.architectures: 65 entries, more than the limit of 64"));
  reg.mutable_capabilities()->clear_architectures();
  reg.mutable_capabilities()->add_architectures(std::string(300, 'a'));
  EXPECT_THAT(core_->RegisterWorker(reg).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "capabilities.architectures[0]: 300 bytes, more than the limit of 256"));
  reg.mutable_capabilities()->clear_architectures();
  reg.mutable_capabilities()->set_gpu_count(-1);
  EXPECT_THAT(
      core_->RegisterWorker(reg).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "capabilities.gpu_count: -1 is negative"));

  EXPECT_THAT(core_->GetSweep(std::string(129, 's')).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sweep_id: 129 bytes, more than the limit of 128"));
  v1::ListJobsRequest list;
  list.set_sweep_id(std::string(129, 's'));
  EXPECT_THAT(core_->ListJobs(list).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "sweep_id: 129 bytes, more than the limit of 128"));
  v1::QueryResultsRequest query;
  query.set_sweep_id(sweep);
  query.set_metric(std::string(257, 'm'));
  EXPECT_THAT(core_->QueryResults(query).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "metric: 257 bytes, more than the limit of 256"));
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker_);
  beat.set_job_id(std::string(200, 'j'));
  beat.set_lease_id(lease.lease_id());
  EXPECT_THAT(core_->Heartbeat(beat).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "job_id: 200 bytes, more than the limit of 128"));

  v1::SweepSpec spec;
  spec.set_name("big");
  spec.add_models(std::string(limits::kMaxModelBytes + 1, 'm') + "/x");
  EXPECT_THAT(core_->SubmitSweep(spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "spec.models[0]: 4099 bytes, more than the limit of 4096"));
  spec.clear_models();
  spec.add_models("pythia-tiny");
  for (int s = 0; s <= limits::kMaxAxisValues; ++s) spec.add_context_lengths(16 + s);
  EXPECT_THAT(core_->SubmitSweep(spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "spec.context_lengths: 10001 entries, more than the limit of 10000"));

  v1::ResultChunk chunk = Chunk(lease, 0);
  chunk.mutable_stats(1)->set_metric(std::string(300, 'a'));
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[1].metric: 300 bytes, more than the limit of 256"));
}

// Regression: the chunk check refused cka_baseline_unbiased, the random
// baseline every CKA stores with it, so every job asking for cka_all_unbiased
// failed at its first commit.
TEST_F(PagingTest, ChunkCheckAcceptsTheCkaBaselineOfItsEstimator) {
  v1::SweepSpec spec;
  spec.set_name("cka");
  spec.add_models("pythia-tiny");
  spec.add_analyses("cka_all_unbiased");
  spec.add_context_lengths(1200);
  spec.set_num_prompts(2);
  spec.set_prompts_per_chunk(2);
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  const v1::LeaseJobResponse lease = Lease();
  auto chunk = [&](const std::string& metric) {
    v1::ResultChunk c;
    c.set_job_id(lease.job().job_id());
    c.set_lease_id(lease.lease_id());
    c.set_sequence(0);
    v1::MetricStat* stat = c.add_stats();
    stat->set_metric(metric);
    stat->set_layer(0);
    stat->set_sum(0.1);
    stat->set_sum_sq(0.01);
    stat->set_count(2);
    return c;
  };
  // The other estimator's baseline is not this job's.
  EXPECT_THAT(core_->CommitChunk(chunk("cka_baseline_biased")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].metric: 'cka_baseline_biased' is not a result"));
  LF_ASSERT_OK(core_->CommitChunk(chunk("cka_baseline_unbiased")).status());
}

// Where a job's time goes (issue 13): the workers' phase times of each
// newly committed chunk are summed into Job.phase_totals, with the
// coordinator's "commit"; a repeat adds nothing; bad entries are refused
// naming the field.
TEST_F(PagingTest, PhaseTimesOfCommittedChunksAddUpInTheJob) {
  v1::SweepSpec spec;
  spec.set_name("timed");
  spec.add_models("pythia-tiny");
  spec.add_analyses("adjacent_cos");
  spec.add_context_lengths(1200);
  spec.set_num_prompts(2);
  spec.set_prompts_per_chunk(1);
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  const v1::LeaseJobResponse lease = Lease();
  const std::string job = lease.job().job_id();
  auto chunk = [&](int64_t seq, std::vector<std::pair<std::string, double>> phases) {
    v1::ResultChunk c;
    c.set_job_id(job);
    c.set_lease_id(lease.lease_id());
    c.set_sequence(seq);
    v1::MetricStat* stat = c.add_stats();
    stat->set_metric("adjacent_cos");
    stat->set_layer(1);
    stat->set_sum(0.5);
    stat->set_sum_sq(0.25);
    stat->set_count(1);
    for (const auto& [phase, seconds] : phases) {
      v1::PhaseTime* t = c.add_phase_times();
      t->set_phase(phase);
      t->set_seconds(seconds);
      t->set_count(1);
    }
    return c;
  };
  EXPECT_THAT(core_->CommitChunk(chunk(0, {{"compute", -1.0}})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.phase_times[0].seconds: -1 is not a finite, non-negative time"));
  EXPECT_THAT(core_->CommitChunk(chunk(0, {{"", 1.0}})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.phase_times[0].phase: empty"));
  EXPECT_THAT(core_->CommitChunk(chunk(0, {{std::string(33, 'p'), 1.0}})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.phase_times[0].phase: 33 bytes, more than the limit of 32"));
  LF_ASSERT_OK(core_->CommitChunk(chunk(0, {{"build", 3.0}, {"compute", 0.5}})).status());
  LF_ASSERT_OK(core_->CommitChunk(chunk(0, {{"compute", 9.0}})).status());  // a repeat
  LF_ASSERT_OK(core_->CommitChunk(chunk(1, {{"compute", 0.25}})).status());
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs([&] {
    v1::ListJobsRequest r;
    r.set_sweep_id(submitted.sweep_id());
    return r;
  }()));
  ASSERT_EQ(jobs.jobs_size(), 1);
  const v1::Job& got = jobs.jobs(0);
  ASSERT_EQ(got.phase_totals_size(), 3);
  EXPECT_EQ(got.phase_totals(0).phase(), "build");
  EXPECT_EQ(got.phase_totals(0).seconds(), 3.0);
  EXPECT_EQ(got.phase_totals(1).phase(), "compute");
  EXPECT_EQ(got.phase_totals(1).seconds(), 0.75);
  EXPECT_EQ(got.phase_totals(1).count(), 2);
  // The coordinator's own part, measured by it: once a newly committed
  // chunk (not for the repeat), a real time, far under a second here.
  EXPECT_EQ(got.phase_totals(2).phase(), "commit");
  EXPECT_EQ(got.phase_totals(2).count(), 2);
  EXPECT_GT(got.phase_totals(2).seconds(), 0.0);
  EXPECT_LT(got.phase_totals(2).seconds(), 1.0);
}

TEST_F(PagingTest, ChunkIsCheckedAgainstItsJob) {
  v1::SweepSpec spec;
  spec.set_name("checked");
  spec.add_models("pythia-tiny");  // 2 blocks: layers 0..3
  spec.add_analyses("adjacent_cos");
  spec.add_analyses("adjacent_cos_tokens");
  spec.add_analyses("spectrum");
  spec.add_context_lengths(1200);
  spec.set_num_prompts(3);
  spec.set_prompts_per_chunk(2);  // chunk 0: 2 prompts, chunk 1: 1
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  const v1::LeaseJobResponse lease = Lease();
  const std::string job = lease.job().job_id();
  auto chunk = [&](int64_t seq, const std::string& metric, int layer, int64_t count) {
    v1::ResultChunk c;
    c.set_job_id(job);
    c.set_lease_id(lease.lease_id());
    c.set_sequence(seq);
    v1::MetricStat* stat = c.add_stats();
    stat->set_metric(metric);
    stat->set_layer(layer);
    stat->set_sum(0.5);
    stat->set_sum_sq(0.25);
    stat->set_count(count);
    return c;
  };
  EXPECT_THAT(
      core_->CommitChunk(chunk(0, "cka_biased", 0, 2)).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               absl::StrCat("chunk.stats[0].metric: 'cka_biased' is not a result of job ", job,
                            " (its analyses: adjacent_cos, adjacent_cos_tokens, "
                            "spectrum)")));
  EXPECT_THAT(core_->CommitChunk(chunk(0, "spectrum_dsf_frac_1", 1, 2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].metric: 'spectrum_dsf_frac_1' is not a result"));
  EXPECT_THAT(core_->CommitChunk(chunk(0, "spectrum_median", 1, 2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].metric: 'spectrum_median' is not a result"));
  EXPECT_THAT(core_->CommitChunk(chunk(0, "adjacent_cos", 4, 2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].layer: 4 is outside [0, 3] for model 'pythia-tiny'"));
  v1::ResultChunk pair = chunk(0, "adjacent_cos", 1, 2);
  pair.mutable_stats(0)->set_layer_b(9);
  EXPECT_THAT(core_->CommitChunk(pair).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].layer_b: 9 is outside [0, 3] for model 'pythia-tiny'"));
  v1::ResultChunk token = chunk(0, "adjacent_cos_tokens", 1, 1);
  token.mutable_stats(0)->set_position(1200);
  EXPECT_THAT(core_->CommitChunk(token).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].position: 1200 is outside [0, 1200) (the job's "
                       "context_length)"));
  EXPECT_THAT(core_->CommitChunk(chunk(1, "adjacent_cos", 0, 2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("chunk.stats[0].count: 2 prompts, but chunk 1 of job ", job,
                                    " has 1")));
  v1::ResultChunk tokens = chunk(0, "adjacent_cos", 0, 2);
  tokens.add_prompt_tokens(500);
  EXPECT_THAT(core_->CommitChunk(tokens).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("chunk.prompt_tokens: 1 entries, but chunk 0 of job ", job,
                                    " has 2 prompts")));
  EXPECT_THAT(core_->CommitChunk(chunk(2, "adjacent_cos", 0, 1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("chunk.sequence: 2 is outside [0, 2) for job ", job)));

  // What the job does produce commits.
  v1::ResultChunk good = chunk(0, "adjacent_cos", 2, 2);
  for (const char* name : {"spectrum_frac_3", "spectrum_mean_log", "spectrum_q99"}) {
    v1::MetricStat* s = good.add_stats();
    s->set_metric(name);
    s->set_layer(1);
    s->set_head(0);
    s->set_sum(0.1);
    s->set_sum_sq(0.01);
    s->set_count(2);
  }
  v1::MetricStat* t = good.add_stats();
  t->set_metric("adjacent_cos_tokens");
  t->set_layer(0);
  t->set_position(1199);
  t->set_sum(0.9);
  t->set_sum_sq(0.81);
  t->set_count(1);
  good.add_prompt_tokens(510);
  good.add_prompt_tokens(1200);
  LF_ASSERT_OK_AND_ASSIGN(CommitResult committed, core_->CommitChunk(good));
  EXPECT_TRUE(committed.newly_committed);
  EXPECT_EQ(committed.job_chunks_committed, 1);
  (void)submitted;
}

TEST_F(PagingTest, ProbeChunkIsCheckedAgainstItsJob) {
  v1::SweepSpec spec;
  spec.set_name("probe");
  spec.add_models("pythia-tiny");
  spec.set_num_prompts(2);
  spec.set_prompts_per_chunk(2);
  spec.mutable_probe()->set_task("kvpr");  // seeds [0, 1, 2], 20 permutations
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  const v1::LeaseJobResponse extract = Lease();
  v1::ResultChunk rows;
  rows.set_job_id(extract.job().job_id());
  rows.set_lease_id(extract.lease_id());
  v1::MetricStat* stat = rows.add_stats();
  stat->set_metric("adjacent_cos");
  stat->set_sum(1.0);
  stat->set_sum_sq(0.5);
  stat->set_count(2);
  LF_ASSERT_OK(core_->CommitChunk(rows).status());
  v1::CompleteJobRequest complete;
  complete.set_job_id(extract.job().job_id());
  complete.set_lease_id(extract.lease_id());
  LF_ASSERT_OK(core_->CompleteJob(complete));
  const v1::LeaseJobResponse probe = Lease();
  ASSERT_EQ(probe.job().spec().kind(), v1::JOB_KIND_PROBE);
  const std::string job = probe.job().job_id();
  rows.set_job_id(job);
  rows.set_lease_id(probe.lease_id());
  // An EXTRACT metric is not a PROBE job's result.
  EXPECT_THAT(core_->CommitChunk(rows).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("chunk.stats[0].metric: 'adjacent_cos' is not a result of job ",
                                    job, " (a PROBE job: probe_* and cka_example_* rows)")));
  stat->set_metric("probe_null_best_acc");
  stat->set_count(21);
  EXPECT_THAT(core_->CommitChunk(rows).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[0].count: 21 values, but a PROBE job of 3 seeds and 20 "
                       "permutations has at most 20"));
  stat->set_count(20);  // one value per permutation
  v1::MetricStat* acc = rows.add_stats();
  acc->set_metric("probe_test_acc");
  acc->set_layer(3);  // pythia-tiny's final norm
  acc->set_sum(2.4);
  acc->set_sum_sq(1.94);
  acc->set_count(3);  // one per seed
  LF_ASSERT_OK_AND_ASSIGN(CommitResult committed, core_->CommitChunk(rows));
  EXPECT_TRUE(committed.newly_committed);
  (void)submitted;
}

}  // namespace
}  // namespace layerflow::server

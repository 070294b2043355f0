// The Store conformance suite: every backend must pass it. A backend joins
// by adding a StoreBackend to INSTANTIATE_TEST_SUITE_P at the bottom: SQLite
// (a file in the test's directory) and PostgreSQL (a real server the harness
// starts on loopback, a fresh database per test).
#include <optional>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"
#include "server/store/store.h"
#include "tests/server/postgres_harness.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::layerflow::v1::Job;
using ::layerflow::v1::JobState;
using ::layerflow::v1::MetricStat;
using ::testing::ElementsAre;

struct StoreBackend {
  std::string name;
  // Opens a store on the database identified by `dir`; called again with
  // the same dir it must reach the same data (reopen, second connection).
  std::function<absl::StatusOr<std::unique_ptr<Store>>(const std::string& dir)> open;
};

void PrintTo(const StoreBackend& b, std::ostream* os) { *os << b.name; }

constexpr int64_t kTtl = 100;

NewSweep MakeSweep(const std::string& id, int jobs, int64_t chunks_total, int32_t priority = 0,
                   int64_t created_ms = 1000, const std::string& model = "pythia-tiny") {
  NewSweep sweep;
  sweep.sweep_id = id;
  sweep.spec.set_name(id);
  sweep.spec.add_models(model);
  sweep.spec.set_priority(priority);
  sweep.created_unix_ms = created_ms;
  for (int i = 0; i < jobs; ++i) {
    NewJob& job = sweep.jobs.emplace_back();
    job.job_id = id + "-" + std::to_string(i);
    job.spec.set_model(model);
    job.spec.set_seed(i);
    job.spec.set_context_length(64);
    job.spec.mutable_dataset()->set_name("kvpr");
    job.chunks_total = chunks_total;
  }
  return sweep;
}

// The per-prompt values v of a chunk as sufficient statistics.
MetricStat Stat(const std::string& metric, int layer, const std::vector<double>& values) {
  MetricStat stat;
  stat.set_metric(metric);
  stat.set_layer(layer);
  for (double v : values) {
    stat.set_sum(stat.sum() + v);
    stat.set_sum_sq(stat.sum_sq() + v * v);
  }
  stat.set_count(static_cast<int64_t>(values.size()));
  return stat;
}

class StoreConformance : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override {
    auto store = GetParam().open(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  std::unique_ptr<Store> OpenAnother() {
    auto store = GetParam().open(dir_.path());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  Lease MustLease(const std::string& worker, int64_t now) {
    auto lease = store_->LeaseNextJob(worker, now, kTtl);
    EXPECT_TRUE(lease.ok()) << lease.status();
    EXPECT_TRUE(lease.ok() && lease->has_value()) << "no job to lease";
    return lease.ok() && lease->has_value() ? **lease : Lease{};
  }

  Job MustGetJob(const std::string& job_id) {
    auto jobs = store_->ListJobs("", JobState::JOB_STATE_UNSPECIFIED);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    for (const Job& job : *jobs) {
      if (job.job_id() == job_id) return job;
    }
    ADD_FAILURE() << "no job " << job_id;
    return Job();
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreConformance, CreateGetList) {
  NewSweep sweep = MakeSweep("s1", 3, 2, 0, 1234);
  LF_ASSERT_OK(store_->CreateSweep(sweep));
  LF_ASSERT_OK_AND_ASSIGN(auto got, store_->GetSweep("s1"));
  EXPECT_EQ(got.sweep_id(), "s1");
  EXPECT_EQ(got.spec().name(), "s1");
  EXPECT_EQ(got.created_unix_ms(), 1234);
  EXPECT_EQ(got.jobs_total(), 3);
  EXPECT_EQ(got.jobs_queued(), 3);
  EXPECT_EQ(got.chunks_committed(), 0);
  EXPECT_EQ(got.chunks_total(), 6);
  EXPECT_EQ(got.state(), layerflow::v1::SWEEP_STATE_ACTIVE);

  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s2", 1, 1)));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("s1", JobState::JOB_STATE_UNSPECIFIED));
  std::vector<std::string> ids;
  for (const Job& job : jobs) ids.push_back(job.job_id());
  EXPECT_THAT(ids, ElementsAre("s1-0", "s1-1", "s1-2"));
  EXPECT_EQ(jobs[1].spec().seed(), 1);
  EXPECT_EQ(jobs[1].chunks_total(), 2);
  EXPECT_EQ(jobs[1].state(), JobState::JOB_STATE_QUEUED);
  LF_ASSERT_OK_AND_ASSIGN(auto all, store_->ListJobs("", JobState::JOB_STATE_QUEUED));
  EXPECT_EQ(all.size(), 4u);
  LF_ASSERT_OK_AND_ASSIGN(auto running, store_->ListJobs("", JobState::JOB_STATE_RUNNING));
  EXPECT_TRUE(running.empty());
  EXPECT_THAT(store_->GetSweep("nope").status(), StatusIs(absl::StatusCode::kNotFound, "nope"));
  LF_ASSERT_OK_AND_ASSIGN(auto counts, store_->CountJobsByState());
  EXPECT_EQ(counts[JobState::JOB_STATE_QUEUED], 4);
}

TEST_P(StoreConformance, FailedCreateStoresNothing) {
  NewSweep sweep = MakeSweep("bad", 3, 2);
  sweep.jobs[2].job_id = sweep.jobs[0].job_id;  // fails on the last insert
  EXPECT_THAT(store_->CreateSweep(sweep), StatusIs(absl::StatusCode::kAlreadyExists, "bad-0"));
  EXPECT_THAT(store_->GetSweep("bad").status(), StatusIs(absl::StatusCode::kNotFound, "bad"));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("", JobState::JOB_STATE_UNSPECIFIED));
  EXPECT_TRUE(jobs.empty());

  // A duplicate sweep id leaves the first sweep untouched.
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("ok", 1, 1)));
  EXPECT_THAT(store_->CreateSweep(MakeSweep("ok", 2, 5)),
              StatusIs(absl::StatusCode::kAlreadyExists, ""));
  LF_ASSERT_OK_AND_ASSIGN(auto ok, store_->GetSweep("ok"));
  EXPECT_EQ(ok.jobs_total(), 1);
  EXPECT_EQ(ok.chunks_total(), 1);
}

TEST_P(StoreConformance, JobIdOfAnotherSweepIsAlreadyExistsAndStoresNothing) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("a", 2, 1)));
  NewSweep b = MakeSweep("b", 3, 1);
  b.jobs[2].job_id = "a-1";
  EXPECT_THAT(store_->CreateSweep(b), StatusIs(absl::StatusCode::kAlreadyExists, "a-1"));
  EXPECT_THAT(store_->GetSweep("b").status(), StatusIs(absl::StatusCode::kNotFound, "b"));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("", JobState::JOB_STATE_UNSPECIFIED));
  EXPECT_EQ(jobs.size(), 2u);
}

// More jobs than one statement inserts at once (PostgreSQL batches them):
// creation order is kept across the batches, in listings and leases.
TEST_P(StoreConformance, LargeSweepKeepsCreationOrder) {
  constexpr int kJobs = 1203;
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("big", kJobs, 1)));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("big", JobState::JOB_STATE_UNSPECIFIED));
  ASSERT_EQ(jobs.size(), static_cast<size_t>(kJobs));
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_EQ(jobs[i].job_id(), "big-" + std::to_string(i));
    ASSERT_EQ(jobs[i].spec().seed(), i);
  }
  LF_ASSERT_OK_AND_ASSIGN(
      jobs, store_->ListJobs(JobFilter{"big", JobState::JOB_STATE_UNSPECIFIED, "big-499", 3}));
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].job_id(), "big-500");
  EXPECT_EQ(jobs[2].job_id(), "big-502");
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("big"));
  EXPECT_EQ(sweep.jobs_queued(), kJobs);
  EXPECT_EQ(MustLease("w", 0).job.job_id(), "big-0");
  EXPECT_EQ(MustLease("w", 0).job.job_id(), "big-1");
}

TEST_P(StoreConformance, ReopenKeepsEverything) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 2, 2)));
  Lease lease = MustLease("w", 0);
  LF_ASSERT_OK(store_
                   ->CommitChunk(lease.job.job_id(), lease.lease_id, 0,
                                 {Stat("adjacent_cos", 1, {0.5, 0.7})}, {60, 61}, 10)
                   .status());
  store_.reset();
  store_ = OpenAnother();
  ASSERT_NE(store_, nullptr);
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("s"));
  EXPECT_EQ(sweep.jobs_running(), 1);
  EXPECT_EQ(sweep.jobs_queued(), 1);
  EXPECT_EQ(sweep.chunks_committed(), 1);
  // The lease survives the restart too.
  LF_ASSERT_OK(store_
                   ->CommitChunk(lease.job.job_id(), lease.lease_id, 1,
                                 {Stat("adjacent_cos", 1, {0.9})}, {62}, 20)
                   .status());
  LF_ASSERT_OK(store_->CompleteJob(lease.job.job_id(), lease.lease_id, 30));
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults({"s", "", "", ""}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count(), 3);
  EXPECT_DOUBLE_EQ(rows[0].value(), (0.5 + 0.7 + 0.9) / 3);
}

TEST_P(StoreConformance, TwoConnectionsWriteConcurrently) {
  constexpr int kJobs = 8;
  constexpr int kChunks = 15;
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("c", kJobs, kChunks)));
  std::unique_ptr<Store> other = OpenAnother();
  ASSERT_NE(other, nullptr);
  std::atomic<int> errors{0};
  std::atomic<int> completed{0};
  auto work = [&](Store* store, const std::string& worker) {
    while (true) {
      auto lease = store->LeaseNextJob(worker, 0, 1'000'000);
      if (!lease.ok()) {
        ++errors;
        ADD_FAILURE() << lease.status();
        return;
      }
      if (!lease->has_value()) return;
      const Lease& l = **lease;
      for (int seq = 0; seq < kChunks; ++seq) {
        auto r = store->CommitChunk(l.job.job_id(), l.lease_id, seq,
                                    {Stat("m", 0, {seq * 1.0}), Stat("m", 1, {seq * 2.0})}, {1}, 1);
        if (!r.ok()) {
          ++errors;
          ADD_FAILURE() << r.status();
        }
      }
      if (absl::Status s = store->CompleteJob(l.job.job_id(), l.lease_id, 2); !s.ok()) {
        ++errors;
        ADD_FAILURE() << s;
      } else {
        ++completed;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    Store* store = i % 2 == 0 ? store_.get() : other.get();
    threads.emplace_back(work, store, "w" + std::to_string(i));
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(completed.load(), kJobs);  // every job leased exactly once
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("c"));
  EXPECT_EQ(sweep.jobs_succeeded(), kJobs);
  EXPECT_EQ(sweep.chunks_committed(), kJobs * kChunks);
  LF_ASSERT_OK_AND_ASSIGN(auto rows, other->QueryResults({"c", "", "", ""}));
  ASSERT_EQ(rows.size(), 2u * kJobs);
  // Layer 1 of every job: values 0, 2, ..., 28 -> mean 14.
  EXPECT_EQ(rows[1].layer(), 1);
  EXPECT_EQ(rows[1].count(), kChunks);
  EXPECT_DOUBLE_EQ(rows[1].value(), 14.0);
}

layerflow::v1::PhaseTime Phase(const std::string& phase, double seconds, int64_t count) {
  layerflow::v1::PhaseTime t;
  t.set_phase(phase);
  t.set_seconds(seconds);
  t.set_count(count);
  return t;
}

TEST_P(StoreConformance, PhaseTimesAreSummedPerJobAndSurviveReopening) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 2, 3)));
  Lease lease = MustLease("w", 0);
  const std::string& job = lease.job.job_id();
  EXPECT_EQ(MustGetJob(job).phase_totals_size(), 0);
  LF_ASSERT_OK(store_->AddPhaseTimes(job, {Phase("build", 2.5, 1), Phase("compute", 0.25, 1)}));
  LF_ASSERT_OK(store_->AddPhaseTimes(job, {Phase("compute", 0.5, 1), Phase("upload", 0.125, 1)}));
  LF_ASSERT_OK(store_->AddPhaseTimes(job, {}));  // nothing to add
  auto check = [&](Store& store) {
    LF_ASSERT_OK_AND_ASSIGN(Job got, store.GetJob(job));
    ASSERT_EQ(got.phase_totals_size(), 3);
    EXPECT_EQ(got.phase_totals(0).phase(), "build");  // in the order first reported
    EXPECT_EQ(got.phase_totals(0).seconds(), 2.5);
    EXPECT_EQ(got.phase_totals(0).count(), 1);
    EXPECT_EQ(got.phase_totals(1).phase(), "compute");
    EXPECT_EQ(got.phase_totals(1).seconds(), 0.75);
    EXPECT_EQ(got.phase_totals(1).count(), 2);
    EXPECT_EQ(got.phase_totals(2).phase(), "upload");
    EXPECT_EQ(got.phase_totals(2).seconds(), 0.125);
  };
  check(*store_);
  std::unique_ptr<Store> other = OpenAnother();
  ASSERT_NE(other, nullptr);
  check(*other);
  // The other job of the sweep has none of them.
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("s", JobState::JOB_STATE_UNSPECIFIED));
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].job_id() == job ? jobs[1].phase_totals_size() : jobs[0].phase_totals_size(), 0);
  EXPECT_THAT(store_->AddPhaseTimes("nope", {Phase("build", 1, 1)}),
              StatusIs(absl::StatusCode::kNotFound, "job nope not found"));
}

TEST_P(StoreConformance, RepeatedChunkIsAcknowledgedNotCounted) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 3)));
  Lease lease = MustLease("w", 0);
  const std::string& job = lease.job.job_id();
  LF_ASSERT_OK_AND_ASSIGN(
      CommitResult first,
      store_->CommitChunk(job, lease.lease_id, 0, {Stat("a", 0, {1.0, 3.0})}, {5, 5}, 1));
  EXPECT_TRUE(first.newly_committed);
  EXPECT_EQ(first.job_chunks_committed, 1);
  // Same (job, sequence) with different numbers: ignored.
  LF_ASSERT_OK_AND_ASSIGN(CommitResult again, store_->CommitChunk(job, lease.lease_id, 0,
                                                                  {Stat("a", 0, {100.0})}, {5}, 2));
  EXPECT_FALSE(again.newly_committed);
  EXPECT_EQ(again.job_chunks_committed, 1);
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults({"s", "", "", ""}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count(), 2);
  EXPECT_DOUBLE_EQ(rows[0].value(), 2.0);
  EXPECT_THAT(store_->CommitChunk(job, lease.lease_id, 3, {}, {}, 3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.sequence: 3 is outside [0, 3)"));
  EXPECT_THAT(store_->CommitChunk("ghost", lease.lease_id, 0, {}, {}, 3).status(),
              StatusIs(absl::StatusCode::kNotFound, "ghost"));
}

TEST_P(StoreConformance, LeaseOrderIsPriorityThenCreation) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("low", 2, 1, /*priority=*/0)));
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("high", 1, 1, /*priority=*/5)));
  EXPECT_EQ(MustLease("w", 0).job.job_id(), "high-0");
  EXPECT_EQ(MustLease("w", 0).job.job_id(), "low-0");
  Lease third = MustLease("w", 0);
  EXPECT_EQ(third.job.job_id(), "low-1");
  EXPECT_EQ(third.job.state(), JobState::JOB_STATE_RUNNING);
  EXPECT_EQ(third.job.worker_id(), "w");
  EXPECT_EQ(third.job.attempts(), 1);
  EXPECT_EQ(third.expires_unix_ms, kTtl);
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("w", 0, kTtl));
  EXPECT_FALSE(none.has_value());
}

TEST_P(StoreConformance, LapsedLeaseRequeuesAndResumesAfterCommittedChunks) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 4)));
  Lease first = MustLease("w1", 0);
  const std::string job = first.job.job_id();
  EXPECT_EQ(first.resume_from_sequence, 0);
  for (int seq : {0, 1}) {
    LF_ASSERT_OK(
        store_->CommitChunk(job, first.lease_id, seq, {Stat("a", 0, {1.0})}, {1}, 50).status());
  }
  // A renewal at 90 moves the expiry to 190: nothing lapses at 150.
  LF_ASSERT_OK_AND_ASSIGN(bool cancelled, store_->RenewLease(job, first.lease_id, 90, kTtl));
  EXPECT_FALSE(cancelled);
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(150, 3, 0));
  EXPECT_EQ(lapsed, 0);
  // Expiry is inclusive: at 190 the lease is still live, at 191 it lapsed.
  LF_ASSERT_OK_AND_ASSIGN(lapsed, store_->RequeueLapsedLeases(190, 3, 0));
  EXPECT_EQ(lapsed, 0);
  LF_ASSERT_OK_AND_ASSIGN(lapsed, store_->RequeueLapsedLeases(191, 3, 0));
  EXPECT_EQ(lapsed, 1);
  Job requeued = MustGetJob(job);
  EXPECT_EQ(requeued.state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempts(), 1);
  EXPECT_EQ(requeued.worker_id(), "");
  EXPECT_EQ(requeued.chunks_committed(), 2);

  Lease second = MustLease("w2", 200);
  EXPECT_EQ(second.job.job_id(), job);
  EXPECT_EQ(second.resume_from_sequence, 2);
  EXPECT_EQ(second.job.attempts(), 2);
  EXPECT_NE(second.lease_id, first.lease_id);

  // The first worker's lease is dead for every operation.
  EXPECT_THAT(store_->CommitChunk(job, first.lease_id, 2, {}, {}, 201).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->RenewLease(job, first.lease_id, 201, kTtl).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->CompleteJob(job, first.lease_id, 201),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  // The new one works, and the resent chunk 1 is not counted twice.
  LF_ASSERT_OK_AND_ASSIGN(
      CommitResult resent,
      store_->CommitChunk(job, second.lease_id, 1, {Stat("a", 0, {9.0})}, {1}, 210));
  EXPECT_FALSE(resent.newly_committed);
  for (int seq : {2, 3}) {
    LF_ASSERT_OK(
        store_->CommitChunk(job, second.lease_id, seq, {Stat("a", 0, {1.0})}, {1}, 210).status());
  }
  LF_ASSERT_OK(store_->CompleteJob(job, second.lease_id, 220));
  EXPECT_EQ(MustGetJob(job).state(), JobState::JOB_STATE_SUCCEEDED);
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults({"s", "", "", ""}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count(), 4);
  EXPECT_DOUBLE_EQ(rows[0].value(), 1.0);
}

TEST_P(StoreConformance, RenewOfExpiredLeaseIsAborted) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  Lease lease = MustLease("w", 0);
  // Expired but not yet reaped: still refused, so a late heartbeat cannot
  // revive a lease that the reaper is about to take away.
  EXPECT_THAT(store_->RenewLease(lease.job.job_id(), lease.lease_id, 101, kTtl).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
}

// Issue 14, failure 4: time the coordinator was down or frozen lapsed
// healthy leases. The recovery pass extends every RUNNING lease (expired
// or not) to now + ttl, keeping lease ids and attempts, and leaves the
// others alone.
TEST_P(StoreConformance, ExtendRunningLeasesRevivesExpiredLeasesUncharged) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 3, 2)));
  Lease expired = MustLease("w1", 0);  // expires at 100
  Lease live = MustLease("w2", 150);   // expires at 250
  // The third job stays QUEUED: nothing to extend.
  LF_ASSERT_OK_AND_ASSIGN(int64_t extended, store_->ExtendRunningLeases(200, kTtl));
  EXPECT_EQ(extended, 2);
  // The expired lease lives again until 300: renewable, committable, and
  // not reaped at 299; its job keeps its one attempt.
  LF_ASSERT_OK_AND_ASSIGN(bool cancelled,
                          store_->RenewLease(expired.job.job_id(), expired.lease_id, 299, kTtl));
  EXPECT_FALSE(cancelled);
  LF_ASSERT_OK(store_
                   ->CommitChunk(live.job.job_id(), live.lease_id, 0,
                                 {Stat("adjacent_cos", 0, {0.5})}, {}, 299)
                   .status());
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(299, 3, 0));
  EXPECT_EQ(lapsed, 0);
  EXPECT_EQ(MustGetJob(expired.job.job_id()).attempts(), 1);
  EXPECT_EQ(MustGetJob("s-2").state(), JobState::JOB_STATE_QUEUED);
  // A lease already beyond now + ttl is not shortened.
  LF_ASSERT_OK_AND_ASSIGN(extended, store_->ExtendRunningLeases(0, kTtl));
  EXPECT_EQ(extended, 0);
  LF_ASSERT_OK_AND_ASSIGN(lapsed, store_->RequeueLapsedLeases(300, 3, 0));
  EXPECT_EQ(lapsed, 0);
}

TEST_P(StoreConformance, BackoffDelaysTheRetry) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  MustLease("w", 0);  // expires at 100
  LF_ASSERT_OK(store_->RequeueLapsedLeases(1000, 5, 500).status());
  // attempts 1 -> 500 * 2^0.
  LF_ASSERT_OK_AND_ASSIGN(auto early, store_->LeaseNextJob("w", 1499, kTtl));
  EXPECT_FALSE(early.has_value());
  Lease second = MustLease("w", 1500);  // expires at 1600
  EXPECT_EQ(second.job.attempts(), 2);
  LF_ASSERT_OK(store_->RequeueLapsedLeases(2000, 5, 500).status());
  // attempts 2 -> 500 * 2^1.
  LF_ASSERT_OK_AND_ASSIGN(early, store_->LeaseNextJob("w", 2999, kTtl));
  EXPECT_FALSE(early.has_value());
  EXPECT_EQ(MustLease("w", 3000).job.attempts(), 3);
}

TEST_P(StoreConformance, ExhaustedAttemptsFailTheJob) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  MustLease("w", 0);
  LF_ASSERT_OK_AND_ASSIGN(int64_t n, store_->RequeueLapsedLeases(200, 2, 0));
  EXPECT_EQ(n, 1);
  MustLease("w", 200);
  LF_ASSERT_OK_AND_ASSIGN(n, store_->RequeueLapsedLeases(400, 2, 0));
  EXPECT_EQ(n, 1);
  Job job = MustGetJob("s-0");
  EXPECT_EQ(job.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(), "lease lapsed 2 times");
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("s"));
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_FAILED);
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("w", 10'000, kTtl));
  EXPECT_FALSE(none.has_value());
}

TEST_P(StoreConformance, CompleteNeedsEveryChunkAndFailKeepsTheError) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 2, 2)));
  Lease a = MustLease("w", 0);
  LF_ASSERT_OK(store_->CommitChunk(a.job.job_id(), a.lease_id, 1, {}, {}, 1).status());
  EXPECT_THAT(store_->CompleteJob(a.job.job_id(), a.lease_id, 2),
              StatusIs(absl::StatusCode::kFailedPrecondition, "has 1 of 2 chunks committed"));
  LF_ASSERT_OK(store_->CommitChunk(a.job.job_id(), a.lease_id, 0, {}, {}, 3).status());
  LF_ASSERT_OK(store_->CompleteJob(a.job.job_id(), a.lease_id, 4));
  // A retried CompleteJob (lost reply) is acknowledged.
  LF_ASSERT_OK(store_->CompleteJob(a.job.job_id(), a.lease_id, 5));

  Lease b = MustLease("w", 10);
  LF_ASSERT_OK(store_->FailJob(b.job.job_id(), b.lease_id, "CUDA out of memory", 11));
  Job failed = MustGetJob(b.job.job_id());
  EXPECT_EQ(failed.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(failed.error(), "CUDA out of memory");
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("s"));
  EXPECT_EQ(sweep.jobs_succeeded(), 1);
  EXPECT_EQ(sweep.jobs_failed(), 1);
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_FAILED);
  EXPECT_THAT(store_->CancelSweep("s", 20).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "sweep s already finished"));
}

TEST_P(StoreConformance, CancelStopsQueuedAndRunningJobs) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 3, 1)));
  Lease running = MustLease("w", 0);
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->CancelSweep("s", 5));
  EXPECT_EQ(sweep.jobs_cancelled(), 3);
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_CANCELLED);
  // The holder learns of it on its next heartbeat, and may not commit.
  LF_ASSERT_OK_AND_ASSIGN(bool cancelled,
                          store_->RenewLease(running.job.job_id(), running.lease_id, 6, kTtl));
  EXPECT_TRUE(cancelled);
  EXPECT_THAT(store_->CommitChunk(running.job.job_id(), running.lease_id, 0, {}, {}, 7).status(),
              StatusIs(absl::StatusCode::kAborted, "cancelled"));
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("w", 8, kTtl));
  EXPECT_FALSE(none.has_value());
  // The reaper leaves cancelled jobs alone.
  LF_ASSERT_OK_AND_ASSIGN(int64_t n, store_->RequeueLapsedLeases(10'000, 3, 0));
  EXPECT_EQ(n, 0);
  EXPECT_THAT(store_->CancelSweep("s", 9).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "already finished"));
  EXPECT_THAT(store_->CancelSweep("nope", 9).status(),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
}

TEST_P(StoreConformance, QueryResultsKeysRowsByLayerBHeadAndPosition) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 2)));
  Lease a = MustLease("w", 0);
  auto keyed = [](const std::string& metric, int layer, std::optional<int> layer_b,
                  std::optional<int> head, std::optional<int> position,
                  const std::vector<double>& values) {
    MetricStat stat = Stat(metric, layer, values);
    if (layer_b) stat.set_layer_b(*layer_b);
    if (head) stat.set_head(*head);
    if (position) stat.set_position(*position);
    return stat;
  };
  // cka over pairs (0, 1) and (0, 2); attention at heads 0 and 1 of layer
  // 1, position 0 for head 1; the same metric without keys is its own row.
  LF_ASSERT_OK(
      store_
          ->CommitChunk("s-0", a.lease_id, 0,
                        {keyed("cka", 0, 2, {}, {}, {0.5}), keyed("cka", 0, 1, {}, {}, {0.25}),
                         keyed("attn", 1, {}, 1, 0, {0.75}), keyed("attn", 1, {}, 0, {}, {0.125}),
                         keyed("attn", 1, {}, {}, {}, {1.0})},
                        {}, 1)
          .status());
  LF_ASSERT_OK(
      store_
          ->CommitChunk("s-0", a.lease_id, 1,
                        {keyed("cka", 0, 2, {}, {}, {0.25}), keyed("attn", 1, {}, 1, 0, {0.25})},
                        {}, 1)
          .status());
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults({"s", "", "", ""}));
  ASSERT_EQ(rows.size(), 5u);
  // metric, layer, then layer_b, head, position with "unset" first.
  EXPECT_EQ(rows[0].metric(), "attn");
  EXPECT_FALSE(rows[0].has_head());
  EXPECT_FALSE(rows[0].has_layer_b());
  EXPECT_FALSE(rows[0].has_position());
  EXPECT_EQ(rows[0].value(), 1.0);
  EXPECT_EQ(rows[1].head(), 0);
  EXPECT_FALSE(rows[1].has_position());
  EXPECT_EQ(rows[1].value(), 0.125);
  EXPECT_EQ(rows[2].head(), 1);
  EXPECT_TRUE(rows[2].has_position());
  EXPECT_EQ(rows[2].position(), 0);
  EXPECT_EQ(rows[2].count(), 2);  // merged over both chunks
  EXPECT_NEAR(rows[2].value(), 0.5, 1e-12);
  EXPECT_NEAR(rows[2].std(), 0.25, 1e-12);
  EXPECT_EQ(rows[3].metric(), "cka");
  EXPECT_EQ(rows[3].layer_b(), 1);
  EXPECT_FALSE(rows[3].has_head());
  EXPECT_EQ(rows[3].count(), 1);
  EXPECT_EQ(rows[4].layer_b(), 2);
  EXPECT_EQ(rows[4].count(), 2);
  EXPECT_NEAR(rows[4].value(), 0.375, 1e-12);
  LF_ASSERT_OK_AND_ASSIGN(auto cka, store_->QueryResults({"s", "", "cka", ""}));
  EXPECT_EQ(cka.size(), 2u);
}

// Paging reads by keyset: rows after (job, key), at most row_limit; the
// whole job behind when after_key is unset; later jobs follow.
TEST_P(StoreConformance, QueryResultsKeysetAndJobPagingFilters) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 3, 1)));
  for (const std::string job : {"s-0", "s-1", "s-2"}) {
    Lease lease = MustLease("w", 0);
    ASSERT_EQ(lease.job.job_id(), job);
    MetricStat head0 = Stat("attn", 1, {0.5});
    head0.set_head(0);
    MetricStat head1 = Stat("attn", 1, {0.25});
    head1.set_head(1);
    LF_ASSERT_OK(store_
                     ->CommitChunk(job, lease.lease_id, 0,
                                   {Stat("attn", 1, {1.0}), head0, head1, Stat("cka", 0, {0.1})},
                                   {}, 1)
                     .status());
  }
  auto keys = [](const std::vector<layerflow::v1::ResultRow>& rows) {
    std::vector<std::string> out;
    for (const auto& r : rows) {
      out.push_back(absl::StrCat(r.job_id(), ":", r.metric(), ":",
                                 r.has_head() ? absl::StrCat(r.head()) : "-"));
    }
    return out;
  };
  ResultFilter after{"s", "", "", ""};
  after.after_job_id = "s-1";
  after.after_key = ResultKey{"attn", 1, -1, 0, -1};  // s-1's attn head 0
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults(after));
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"s-1:attn:1", "s-1:cka:-", "s-2:attn:-",
                                                  "s-2:attn:0", "s-2:attn:1", "s-2:cka:-"}));
  after.row_limit = 3;
  LF_ASSERT_OK_AND_ASSIGN(rows, store_->QueryResults(after));
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"s-1:attn:1", "s-1:cka:-", "s-2:attn:-"}));
  after.after_key.reset();  // all of s-1 behind
  LF_ASSERT_OK_AND_ASSIGN(rows, store_->QueryResults(after));
  EXPECT_EQ(keys(rows), (std::vector<std::string>{"s-2:attn:-", "s-2:attn:0", "s-2:attn:1"}));
  after.after_job_id = "s-2";
  after.row_limit = 0;
  LF_ASSERT_OK_AND_ASSIGN(rows, store_->QueryResults(after));
  EXPECT_TRUE(rows.empty());

  // ListJobs after a job, limited; GetJob.
  LF_ASSERT_OK_AND_ASSIGN(
      auto jobs, store_->ListJobs(JobFilter{"s", JobState::JOB_STATE_UNSPECIFIED, "s-0", 1}));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].job_id(), "s-1");
  LF_ASSERT_OK_AND_ASSIGN(
      jobs, store_->ListJobs(JobFilter{"s", JobState::JOB_STATE_UNSPECIFIED, "s-2", 0}));
  EXPECT_TRUE(jobs.empty());
  LF_ASSERT_OK_AND_ASSIGN(Job job, store_->GetJob("s-2"));
  EXPECT_EQ(job.sweep_id(), "s");
  EXPECT_EQ(job.chunks_committed(), 1);
  EXPECT_THAT(store_->GetJob("s-9").status(),
              StatusIs(absl::StatusCode::kNotFound, "job s-9 not found"));
}

TEST_P(StoreConformance, QueryResultsMergesChunksAndFilters) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 2, 2)));
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("t", 1, 1, 0, 1000, "pythia-14m")));
  // Job s-0: adjacent_cos layer 0 over prompts {0.2, 0.4} + {0.9};
  // intertoken_cos layer 0 over {0.1} + {0.3}.
  const std::vector<double> adj = {0.2, 0.4, 0.9};
  Lease a = MustLease("w", 0);
  ASSERT_EQ(a.job.job_id(), "s-0");
  LF_ASSERT_OK(
      store_
          ->CommitChunk("s-0", a.lease_id, 0,
                        {Stat("intertoken_cos", 0, {0.1}), Stat("adjacent_cos", 0, {0.2, 0.4}),
                         Stat("adjacent_cos", 1, {0.5})},
                        {}, 1)
          .status());
  LF_ASSERT_OK(store_
                   ->CommitChunk("s-0", a.lease_id, 1,
                                 {Stat("adjacent_cos", 0, {0.9}), Stat("intertoken_cos", 0, {0.3})},
                                 {}, 1)
                   .status());
  Lease b = MustLease("w", 0);
  LF_ASSERT_OK(
      store_->CommitChunk("s-1", b.lease_id, 0, {Stat("adjacent_cos", 0, {1.0})}, {}, 1).status());
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults({"s", "", "", ""}));
  ASSERT_EQ(rows.size(), 4u);
  // Job order, then metric, then layer.
  EXPECT_EQ(rows[0].job_id(), "s-0");
  EXPECT_EQ(rows[0].metric(), "adjacent_cos");
  EXPECT_EQ(rows[0].layer(), 0);
  EXPECT_EQ(rows[1].metric(), "adjacent_cos");
  EXPECT_EQ(rows[1].layer(), 1);
  EXPECT_EQ(rows[2].metric(), "intertoken_cos");
  EXPECT_EQ(rows[3].job_id(), "s-1");
  // Hand-computed population mean and std of {0.2, 0.4, 0.9}.
  double mean = 0, var = 0;
  for (double v : adj) mean += v / adj.size();
  for (double v : adj) var += (v - mean) * (v - mean) / adj.size();
  EXPECT_NEAR(rows[0].value(), 0.5, 1e-12);
  EXPECT_NEAR(rows[0].value(), mean, 1e-12);
  EXPECT_NEAR(rows[0].std(), std::sqrt(var), 1e-12);
  EXPECT_NEAR(rows[0].std(), 0.29439202887759486, 1e-12);
  EXPECT_EQ(rows[0].count(), 3);
  EXPECT_EQ(rows[0].model(), "pythia-tiny");
  EXPECT_EQ(rows[0].dataset(), "kvpr");
  EXPECT_EQ(rows[0].context_length(), 64);
  EXPECT_EQ(rows[0].sweep_id(), "s");
  EXPECT_NEAR(rows[2].value(), 0.2, 1e-12);
  EXPECT_NEAR(rows[2].std(), 0.1, 1e-12);
  EXPECT_EQ(rows[3].std(), 0.0);  // one prompt

  LF_ASSERT_OK_AND_ASSIGN(auto only_inter, store_->QueryResults({"s", "", "intertoken_cos", ""}));
  ASSERT_EQ(only_inter.size(), 1u);
  LF_ASSERT_OK_AND_ASSIGN(auto only_job, store_->QueryResults({"s", "", "", "s-1"}));
  ASSERT_EQ(only_job.size(), 1u);
  LF_ASSERT_OK_AND_ASSIGN(auto other_model, store_->QueryResults({"s", "pythia-14m", "", ""}));
  EXPECT_TRUE(other_model.empty());
  EXPECT_THAT(store_->QueryResults({"nope", "", "", ""}).status(),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
}

TEST_P(StoreConformance, WorkersRegisterAndAge) {
  LF_ASSERT_OK(store_->RegisterWorker("w1", "host-a", "", 100));
  LF_ASSERT_OK(store_->RegisterWorker("w2", "host-b", "caps", 100));
  EXPECT_THAT(store_->RegisterWorker("w1", "again", "", 100),
              StatusIs(absl::StatusCode::kAlreadyExists, ""));
  LF_ASSERT_OK(store_->TouchWorker("w2", 500));
  EXPECT_THAT(store_->TouchWorker("w9", 500), StatusIs(absl::StatusCode::kNotFound, "w9"));
  LF_ASSERT_OK_AND_ASSIGN(int64_t live, store_->CountLiveWorkers(100));
  EXPECT_EQ(live, 2);
  LF_ASSERT_OK_AND_ASSIGN(live, store_->CountLiveWorkers(101));
  EXPECT_EQ(live, 1);
}

// s-0 (EXTRACT) <- s-1 (PROBE) <- s-2 (a chain, to test transitivity),
// one chunk each, plus an independent s-3.
NewSweep MakeDependentSweep(const std::string& id) {
  NewSweep sweep = MakeSweep(id, 4, 1);
  sweep.jobs[0].spec.mutable_probe()->set_task("kvpr");
  sweep.jobs[1].spec.set_kind(layerflow::v1::JOB_KIND_PROBE);
  sweep.jobs[1].spec.mutable_probe()->set_task("kvpr");
  sweep.jobs[1].spec.mutable_probe()->set_classes(11);
  sweep.jobs[1].depends_on = id + "-0";
  sweep.jobs[2].depends_on = id + "-1";
  return sweep;
}

TEST_P(StoreConformance, DependencyAndKindAndProbeArePersisted) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  auto other = OpenAnother();
  ASSERT_NE(other, nullptr);
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, other->ListJobs("s", JobState::JOB_STATE_UNSPECIFIED));
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(jobs[0].depends_on(), "");
  EXPECT_EQ(jobs[0].spec().kind(), layerflow::v1::JOB_KIND_EXTRACT);
  EXPECT_TRUE(jobs[0].spec().has_probe());
  EXPECT_EQ(jobs[1].depends_on(), "s-0");
  EXPECT_EQ(jobs[1].spec().kind(), layerflow::v1::JOB_KIND_PROBE);
  EXPECT_EQ(jobs[1].spec().probe().classes(), 11);
  EXPECT_EQ(jobs[2].depends_on(), "s-1");
  EXPECT_FALSE(jobs[3].spec().has_probe());
}

TEST_P(StoreConformance, CreateRejectsADependencyOutsideTheSweepOrLater) {
  NewSweep sweep = MakeSweep("s", 2, 1);
  sweep.jobs[0].depends_on = "s-1";  // later: could never run first
  EXPECT_THAT(store_->CreateSweep(sweep),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "job s-0 depends on s-1, which is not an earlier job"));
  sweep.jobs[0].depends_on = "";
  sweep.jobs[1].depends_on = "elsewhere-0";
  EXPECT_THAT(store_->CreateSweep(sweep),
              StatusIs(absl::StatusCode::kInvalidArgument, "elsewhere-0"));
  EXPECT_THAT(store_->GetSweep("s").status(), StatusIs(absl::StatusCode::kNotFound, "s"));
}

TEST_P(StoreConformance, DependentIsLeasedOnlyAfterItsDependencySucceeded) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  Lease first = MustLease("w", 0);
  EXPECT_EQ(first.job.job_id(), "s-0");
  // s-1 and s-2 wait; the independent s-3 is next.
  Lease independent = MustLease("w", 1);
  EXPECT_EQ(independent.job.job_id(), "s-3");
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("w", 2, kTtl));
  EXPECT_FALSE(none.has_value());
  // A lapse and requeue of the dependency still blocks the dependent.
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(1000, 3, 0));
  EXPECT_EQ(lapsed, 2);
  Lease again = MustLease("w", 1000);
  EXPECT_EQ(again.job.job_id(), "s-0");
  LF_ASSERT_OK(store_->CommitChunk("s-0", again.lease_id, 0, {}, {}, 1001).status());
  LF_ASSERT_OK_AND_ASSIGN(none, store_->LeaseNextJob("w", 1001, kTtl));
  ASSERT_TRUE(none.has_value());  // the requeued s-3
  EXPECT_EQ(none->job.job_id(), "s-3");
  LF_ASSERT_OK_AND_ASSIGN(none, store_->LeaseNextJob("w", 1001, kTtl));
  EXPECT_FALSE(none.has_value());  // s-1 waits: s-0 is RUNNING, not SUCCEEDED
  LF_ASSERT_OK(store_->CompleteJob("s-0", again.lease_id, 1002));
  Lease probe = MustLease("w", 1003);
  EXPECT_EQ(probe.job.job_id(), "s-1");
  EXPECT_EQ(probe.job.depends_on(), "s-0");
  EXPECT_EQ(probe.job.spec().kind(), layerflow::v1::JOB_KIND_PROBE);
  LF_ASSERT_OK_AND_ASSIGN(none, store_->LeaseNextJob("w", 1004, kTtl));
  EXPECT_FALSE(none.has_value());  // s-2 waits for s-1
}

TEST_P(StoreConformance, FailedDependencyFailsItsDependentsTransitively) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  Lease first = MustLease("w", 0);
  ASSERT_EQ(first.job.job_id(), "s-0");
  LF_ASSERT_OK(store_->FailJob("s-0", first.lease_id, "CUDA out of memory", 5));
  Job probe = MustGetJob("s-1");
  EXPECT_EQ(probe.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(probe.error(), "dependency s-0 failed: CUDA out of memory");
  EXPECT_EQ(probe.attempts(), 0);
  EXPECT_EQ(probe.updated_unix_ms(), 5);
  Job chained = MustGetJob("s-2");
  EXPECT_EQ(chained.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(chained.error(), "dependency s-1 failed: dependency s-0 failed: CUDA out of memory");
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->GetSweep("s"));
  EXPECT_EQ(sweep.jobs_failed(), 3);
  EXPECT_EQ(sweep.jobs_queued(), 1);  // s-3 still runs
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_ACTIVE);
  Lease last = MustLease("w", 6);
  EXPECT_EQ(last.job.job_id(), "s-3");
  LF_ASSERT_OK(store_->CommitChunk("s-3", last.lease_id, 0, {}, {}, 7).status());
  LF_ASSERT_OK(store_->CompleteJob("s-3", last.lease_id, 8));
  LF_ASSERT_OK_AND_ASSIGN(sweep, store_->GetSweep("s"));
  EXPECT_EQ(sweep.jobs_succeeded(), 1);
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_FAILED);
}

TEST_P(StoreConformance, ExhaustedDependencyFailsItsDependents) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  MustLease("w", 0);  // s-0
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(1000, 1, 0));
  EXPECT_EQ(lapsed, 1);
  Job probe = MustGetJob("s-1");
  EXPECT_EQ(probe.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(probe.error(), "dependency s-0 failed: lease lapsed 1 times");
  EXPECT_EQ(MustGetJob("s-2").state(), JobState::JOB_STATE_FAILED);
}

TEST_P(StoreConformance, CancelSweepCancelsDependencyAndDependents) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  MustLease("w", 0);  // s-0 running
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store_->CancelSweep("s", 5));
  EXPECT_EQ(sweep.jobs_cancelled(), 4);
  EXPECT_EQ(sweep.jobs_failed(), 0);
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_CANCELLED);
  EXPECT_EQ(MustGetJob("s-1").state(), JobState::JOB_STATE_CANCELLED);
  EXPECT_EQ(MustGetJob("s-1").error(), "");
}

TEST_P(StoreConformance, CheckLeaseIsTheLiveLeaseCheck) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  Lease lease = MustLease("w", 0);
  LF_ASSERT_OK(store_->CheckLease("s-0", lease.lease_id, kTtl));
  EXPECT_THAT(store_->CheckLease("s-0", "lease-other", 1),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->CheckLease("s-0", lease.lease_id, kTtl + 1),
              StatusIs(absl::StatusCode::kAborted, "lapsed 1 ms ago"));
  EXPECT_THAT(store_->CheckLease("nope", lease.lease_id, 1),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
  LF_ASSERT_OK(store_->CancelSweep("s", 2).status());
  EXPECT_THAT(store_->CheckLease("s-0", lease.lease_id, 3),
              StatusIs(absl::StatusCode::kAborted, "cancelled"));
}

// --- Failures (issue 14) ---------------------------------------------------

RetryPolicy Policy(int32_t max_attempts, int64_t base, int64_t cap, int32_t quarantine_after) {
  RetryPolicy p;
  p.max_attempts = max_attempts;
  p.backoff_base_ms = base;
  p.backoff_cap_ms = cap;
  p.quarantine_after = quarantine_after;
  return p;
}

TEST_P(StoreConformance, HostErrorRequeuesWithCappedBackoffOnAnotherWorker) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  LF_ASSERT_OK(store_->RegisterWorker("bad", "host-a", "", 0));
  LF_ASSERT_OK(store_->RegisterWorker("good", "host-b", "", 0));
  const RetryPolicy policy = Policy(5, 400, 1000, 0);
  Lease first = MustLease("bad", 0);
  LF_ASSERT_OK_AND_ASSIGN(RetryResult r,
                          store_->RetryJob("s-0", first.lease_id, "RESOURCE_EXHAUSTED: oom", 10,
                                           /*live_since_ms=*/0, policy));
  EXPECT_TRUE(r.requeued);
  EXPECT_FALSE(r.worker_quarantined);
  EXPECT_EQ(r.not_before_unix_ms, 10 + 400);  // attempt 1: base
  Job job = MustGetJob("s-0");
  EXPECT_EQ(job.state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(job.error(), "attempt 1 on bad failed (host error, retrying): RESOURCE_EXHAUSTED: oom");
  // A repeat of the call (a lost reply) changes nothing.
  LF_ASSERT_OK_AND_ASSIGN(r, store_->RetryJob("s-0", first.lease_id, "again", 11, 0, policy));
  EXPECT_TRUE(r.requeued);
  LF_ASSERT_OK_AND_ASSIGN(auto attempts, store_->ListAttempts("s-0"));
  ASSERT_EQ(attempts.size(), 1u);
  // Not before the backoff, and never again on the worker that failed it
  // while another one is alive.
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("good", 409, kTtl));
  EXPECT_FALSE(none.has_value());
  LF_ASSERT_OK_AND_ASSIGN(none, store_->LeaseNextJob("bad", 5000, kTtl));
  EXPECT_FALSE(none.has_value());
  Lease second = MustLease("good", 5000);
  EXPECT_EQ(second.job.attempts(), 2);
  LF_ASSERT_OK_AND_ASSIGN(
      r, store_->RetryJob("s-0", second.lease_id, "INTERNAL: cuda", 5010, 0, policy));
  EXPECT_EQ(r.not_before_unix_ms, 5010 + 800);  // attempt 2: base * 2
  Lease third = MustLease("other", 6000);       // neither of the two
  LF_ASSERT_OK_AND_ASSIGN(
      r, store_->RetryJob("s-0", third.lease_id, "INTERNAL: cuda", 6010, 0, policy));
  EXPECT_EQ(r.not_before_unix_ms, 6010 + 1000);  // attempt 3: 1600, capped
}

TEST_P(StoreConformance, LoneWorkerRetriesItsOwnHostError) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  LF_ASSERT_OK(store_->RegisterWorker("only", "host", "", 0));
  LF_ASSERT_OK(store_->RegisterWorker("gone", "host", "", 0));
  Lease first = MustLease("only", 100);
  // "gone" was last seen at 0, before live_since: nobody else is alive.
  LF_ASSERT_OK(store_
                   ->RetryJob("s-0", first.lease_id, "UNAVAILABLE: x", 110,
                              /*live_since_ms=*/50, Policy(3, 0, 0, 1))
                   .status());
  Lease second = MustLease("only", 120);
  EXPECT_EQ(second.job.attempts(), 2);
  // Nor is the last live worker quarantined (quarantine_after 1 here): the
  // pool would stop. Its job still fails after max_attempts.
  LF_ASSERT_OK_AND_ASSIGN(WorkerRecord w, store_->GetWorker("only"));
  EXPECT_FALSE(w.quarantined);
  LF_ASSERT_OK_AND_ASSIGN(RetryResult r, store_->RetryJob("s-0", second.lease_id, "UNAVAILABLE: y",
                                                          130, 50, Policy(3, 0, 0, 1)));
  EXPECT_FALSE(r.worker_quarantined);
  Lease third = MustLease("only", 140);
  LF_ASSERT_OK_AND_ASSIGN(
      r, store_->RetryJob("s-0", third.lease_id, "UNAVAILABLE: z", 150, 50, Policy(3, 0, 0, 1)));
  EXPECT_FALSE(r.requeued);
  EXPECT_EQ(MustGetJob("s-0").state(), JobState::JOB_STATE_FAILED);
}

TEST_P(StoreConformance, LastAttemptFailsTheJobListingEveryAttempt) {
  LF_ASSERT_OK(store_->CreateSweep(MakeDependentSweep("s")));
  for (const char* w : {"w1", "w2"}) LF_ASSERT_OK(store_->RegisterWorker(w, w, "", 0));
  const RetryPolicy policy = Policy(3, 0, 0, 0);
  Lease a = MustLease("w1", 0);
  LF_ASSERT_OK(
      store_->RetryJob("s-0", a.lease_id, "RESOURCE_EXHAUSTED: oom", 1, 0, policy).status());
  MustLease("w2", 2);  // attempt 2 lapses (expires at 102)
  LF_ASSERT_OK(store_->RequeueLapsedLeases(200, 3, 0).status());
  Lease c = MustLease("w2", 300);
  EXPECT_EQ(c.job.job_id(), "s-0");
  EXPECT_EQ(c.job.attempts(), 3);
  LF_ASSERT_OK_AND_ASSIGN(
      RetryResult r, store_->RetryJob("s-0", c.lease_id, "INTERNAL: cuda fault", 301, 0, policy));
  EXPECT_FALSE(r.requeued);
  Job job = MustGetJob("s-0");
  EXPECT_EQ(job.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(),
            "failed on 3 attempts: attempt 1 on w1: RESOURCE_EXHAUSTED: oom; "
            "attempt 2 on w2: lease lapsed; attempt 3 on w2: INTERNAL: cuda fault");
  // Its dependents fail with it, as after FailJob.
  EXPECT_EQ(MustGetJob("s-1").state(), JobState::JOB_STATE_FAILED);
  LF_ASSERT_OK_AND_ASSIGN(auto attempts, store_->ListAttempts("s-0"));
  ASSERT_EQ(attempts.size(), 3u);
  EXPECT_EQ(attempts[1].outcome, AttemptOutcome::kLeaseLapsed);
  EXPECT_EQ(attempts[2].worker_id, "w2");
  EXPECT_EQ(attempts[2].ended_unix_ms, 301);
  EXPECT_THAT(store_->ListAttempts("nope").status(), StatusIs(absl::StatusCode::kNotFound, "nope"));
}

// Ending in lapsed leases after a host error: still every attempt listed
// (all lapsed keeps "lease lapsed N times", ExhaustedAttemptsFailTheJob).
TEST_P(StoreConformance, LapseOnTheLastAttemptListsTheEarlierHostError) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 1, 1)));
  Lease a = MustLease("w1", 0);
  LF_ASSERT_OK(
      store_->RetryJob("s-0", a.lease_id, "RESOURCE_EXHAUSTED: oom", 1, 0, Policy(2, 0, 0, 0))
          .status());
  MustLease("w2", 2);  // expires at 102
  LF_ASSERT_OK_AND_ASSIGN(int64_t n, store_->RequeueLapsedLeases(200, 2, 0));
  EXPECT_EQ(n, 1);
  Job job = MustGetJob("s-0");
  EXPECT_EQ(job.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(),
            "failed on 2 attempts: attempt 1 on w1: RESOURCE_EXHAUSTED: oom; "
            "attempt 2 on w2: lease lapsed");
}

TEST_P(StoreConformance, HostErrorsInARowQuarantineUntilReleased) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 6, 1)));
  for (const char* w : {"bad", "good"}) LF_ASSERT_OK(store_->RegisterWorker(w, w, "", 0));
  const RetryPolicy policy = Policy(5, 0, 0, 2);
  // bad: a success, then host error, host error -> quarantined on the
  // second in a row (the success before them breaks the run).
  Lease ok = MustLease("bad", 1);
  LF_ASSERT_OK(store_->CommitChunk(ok.job.job_id(), ok.lease_id, 0, {}, {}, 2).status());
  LF_ASSERT_OK(store_->CompleteJob(ok.job.job_id(), ok.lease_id, 3));
  Lease f1 = MustLease("bad", 4);
  LF_ASSERT_OK_AND_ASSIGN(RetryResult r,
                          store_->RetryJob(f1.job.job_id(), f1.lease_id, "OOM one", 5, 0, policy));
  EXPECT_FALSE(r.worker_quarantined);
  LF_ASSERT_OK_AND_ASSIGN(WorkerRecord w, store_->GetWorker("bad"));
  EXPECT_FALSE(w.quarantined);
  Lease f2 = MustLease("bad", 6);
  LF_ASSERT_OK_AND_ASSIGN(r,
                          store_->RetryJob(f2.job.job_id(), f2.lease_id, "OOM two", 7, 0, policy));
  EXPECT_TRUE(r.worker_quarantined);
  LF_ASSERT_OK_AND_ASSIGN(w, store_->GetWorker("bad"));
  EXPECT_TRUE(w.quarantined);
  EXPECT_EQ(w.quarantine_reason, "2 host errors in a row: " + f1.job.job_id() + ": OOM one; " +
                                     f2.job.job_id() + ": OOM two");
  LF_ASSERT_OK_AND_ASSIGN(auto workers, store_->ListWorkers());
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_TRUE(workers[0].quarantined);
  EXPECT_FALSE(workers[1].quarantined);
  EXPECT_THAT(store_->ReleaseWorker("good"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not quarantined"));
  EXPECT_THAT(store_->ReleaseWorker("nope"), StatusIs(absl::StatusCode::kNotFound, "nope"));
  LF_ASSERT_OK(store_->ReleaseWorker("bad"));
  LF_ASSERT_OK_AND_ASSIGN(w, store_->GetWorker("bad"));
  EXPECT_FALSE(w.quarantined);
  EXPECT_EQ(w.quarantine_reason, "");
  // The errors before the release no longer count: one more is not two.
  Lease f3 = MustLease("bad", 8);
  LF_ASSERT_OK_AND_ASSIGN(
      r, store_->RetryJob(f3.job.job_id(), f3.lease_id, "OOM three", 9, 0, policy));
  EXPECT_FALSE(r.worker_quarantined);
  // A bad-input failure is no host error either: it breaks a run.
  Lease f4 = MustLease("bad", 10);
  LF_ASSERT_OK(store_->FailJob(f4.job.job_id(), f4.lease_id, "INVALID_ARGUMENT: x", 11));
  Lease f5 = MustLease("bad", 12);
  LF_ASSERT_OK_AND_ASSIGN(r, store_->RetryJob(f5.job.job_id(), f5.lease_id, "OOM", 13, 0, policy));
  EXPECT_FALSE(r.worker_quarantined);
  EXPECT_THAT(store_->GetWorker("nope").status(), StatusIs(absl::StatusCode::kNotFound, "nope"));
}

// `layerflow retry SWEEP` (issue 14): there was no way to retry a failed
// job. Only failed and cancelled jobs run again, each after its last
// committed chunk, and a chunk sent again is not counted twice.
TEST_P(StoreConformance, RetrySweepRequeuesOnlyFailedAndCancelledJobsKeepingTheirChunks) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 3, 2)));
  LF_ASSERT_OK(store_->RegisterWorker("w", "w", "", 0));
  LF_ASSERT_OK(store_->RegisterWorker("v", "v", "", 0));  // so w's host error excludes w
  Lease a = MustLease("w", 0);
  for (int64_t seq : {0, 1}) {
    LF_ASSERT_OK(
        store_->CommitChunk("s-0", a.lease_id, seq, {Stat("adjacent_cos", 0, {0.5})}, {}, 1)
            .status());
  }
  LF_ASSERT_OK(store_->CompleteJob("s-0", a.lease_id, 2));
  Lease b = MustLease("w", 3);
  ASSERT_EQ(b.job.job_id(), "s-1");
  LF_ASSERT_OK(
      store_->CommitChunk("s-1", b.lease_id, 0, {Stat("adjacent_cos", 0, {0.2, 0.4})}, {}, 4)
          .status());
  // Host errors until the attempts run out: the worker is excluded too.
  LF_ASSERT_OK(
      store_->RetryJob("s-1", b.lease_id, "INTERNAL: x", 5, 0, Policy(1, 0, 0, 0)).status());
  ASSERT_EQ(MustGetJob("s-1").state(), JobState::JOB_STATE_FAILED);
  Lease c = MustLease("w", 6);
  ASSERT_EQ(c.job.job_id(), "s-2");
  LF_ASSERT_OK(store_->CancelSweep("s", 7).status());
  EXPECT_THAT(store_->RetrySweep("nope", 8).status(),
              StatusIs(absl::StatusCode::kNotFound, "nope"));

  LF_ASSERT_OK_AND_ASSIGN(layerflow::v1::Sweep sweep, store_->RetrySweep("s", 8));
  EXPECT_EQ(sweep.jobs_succeeded(), 1);
  EXPECT_EQ(sweep.jobs_queued(), 2);
  EXPECT_EQ(sweep.jobs_failed(), 0);
  EXPECT_EQ(sweep.jobs_cancelled(), 0);
  EXPECT_EQ(sweep.state(), layerflow::v1::SWEEP_STATE_ACTIVE);
  Job s1 = MustGetJob("s-1");
  EXPECT_EQ(s1.state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(s1.attempts(), 0);
  EXPECT_EQ(s1.error(), "");
  EXPECT_EQ(s1.chunks_committed(), 1);
  EXPECT_EQ(MustGetJob("s-0").attempts(), 1);  // left alone
  EXPECT_THAT(store_->RetrySweep("s", 9).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no failed or cancelled jobs"));

  // The same worker may take s-1 again (the retry forgets its exclusion);
  // it resumes after chunk 0, and a resent chunk 0 is acknowledged only.
  Lease again = MustLease("w", 10);
  ASSERT_EQ(again.job.job_id(), "s-1");
  EXPECT_EQ(again.resume_from_sequence, 1);
  EXPECT_EQ(again.job.attempts(), 1);
  LF_ASSERT_OK_AND_ASSIGN(
      CommitResult resent,
      store_->CommitChunk("s-1", again.lease_id, 0, {Stat("adjacent_cos", 0, {9.0, 9.0})}, {}, 11));
  EXPECT_FALSE(resent.newly_committed);
  LF_ASSERT_OK(
      store_->CommitChunk("s-1", again.lease_id, 1, {Stat("adjacent_cos", 0, {0.9})}, {}, 12)
          .status());
  LF_ASSERT_OK(store_->CompleteJob("s-1", again.lease_id, 13));
  Lease last = MustLease("w", 14);
  ASSERT_EQ(last.job.job_id(), "s-2");
  EXPECT_EQ(last.resume_from_sequence, 0);
  ResultFilter filter;
  filter.sweep_id = "s";
  filter.job_id = "s-1";
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults(filter));
  ASSERT_EQ(rows.size(), 1u);
  // Prompts {0.2, 0.4} (first commit) + {0.9}: three, once each.
  EXPECT_EQ(rows[0].count(), 3);
  EXPECT_NEAR(rows[0].value(), (0.2 + 0.4 + 0.9) / 3, 1e-12);
}

// Regression test (issue 14, bench_pool): CountJobsByState, which the
// coordinator's gauges call after every FailJob, counted every job row (650
// us at 10,000 jobs on SQLite, 3.3 ms on PostgreSQL); it now reads counters
// that the database keeps in each transaction that changes a job. They must
// equal a count of the job rows after every kind of transition.
TEST_P(StoreConformance, JobCountsFollowEveryTransition) {
  auto expect_counts_match_rows = [&](const std::string& when) {
    LF_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs("", JobState::JOB_STATE_UNSPECIFIED));
    JobStateCounts from_rows{};
    for (const Job& job : jobs) from_rows[static_cast<size_t>(job.state())]++;
    LF_ASSERT_OK_AND_ASSIGN(JobStateCounts counts, store_->CountJobsByState());
    EXPECT_EQ(counts, from_rows) << when;
  };
  LF_ASSERT_OK(store_->RegisterWorker("w", "host", "", 0));
  LF_ASSERT_OK(store_->RegisterWorker("v", "host", "", 0));
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 6, 1)));
  // A failed create changes no counter.
  EXPECT_FALSE(store_->CreateSweep(MakeSweep("s", 2, 1)).ok());
  expect_counts_match_rows("created");
  LF_ASSERT_OK_AND_ASSIGN(JobStateCounts counts, store_->CountJobsByState());
  EXPECT_EQ(counts[JobState::JOB_STATE_QUEUED], 6);

  Lease a = MustLease("w", 10);  // s-0
  Lease b = MustLease("w", 10);  // s-1
  Lease c = MustLease("w", 10);  // s-2
  Lease d = MustLease("w", 10);  // s-3
  expect_counts_match_rows("leased");
  LF_ASSERT_OK(
      store_->CommitChunk(a.job.job_id(), a.lease_id, 0, {Stat("m", 0, {1.0})}, {}, 11).status());
  LF_ASSERT_OK(store_->CompleteJob(a.job.job_id(), a.lease_id, 12));
  LF_ASSERT_OK(store_->FailJob(b.job.job_id(), b.lease_id, "bad input", 12));
  // A repeated FailJob (lost reply) changes nothing.
  LF_ASSERT_OK(store_->FailJob(b.job.job_id(), b.lease_id, "bad input", 13));
  LF_ASSERT_OK(store_->ReleaseLease(c.job.job_id(), c.lease_id, 12));
  LF_ASSERT_OK(
      store_->RetryJob(d.job.job_id(), d.lease_id, "UNAVAILABLE: x", 12, 0, Policy(3, 0, 0, 0))
          .status());
  expect_counts_match_rows("completed, failed, released, retried");
  // A chain of dependents (priority 1: leased first): p-0 fails, so p-1
  // and p-2 fail with it.
  NewSweep probe = MakeSweep("p", 3, 1, /*priority=*/1);
  probe.jobs[1].depends_on = "p-0";
  probe.jobs[2].depends_on = "p-1";
  LF_ASSERT_OK(store_->CreateSweep(probe));
  Lease p0 = MustLease("v", 20);
  ASSERT_EQ(p0.job.job_id(), "p-0");
  LF_ASSERT_OK(store_->FailJob("p-0", p0.lease_id, "broken", 30));
  EXPECT_EQ(MustGetJob("p-2").state(), JobState::JOB_STATE_FAILED);
  expect_counts_match_rows("dependents failed");
  // A lapsed lease: requeued (attempts left) or failed (none).
  Lease e = MustLease("w", 40);
  LF_ASSERT_OK(store_->RequeueLapsedLeases(40 + kTtl + 1, /*max_attempts=*/1, 0).status());
  expect_counts_match_rows("lapsed");
  LF_ASSERT_OK_AND_ASSIGN(auto cancelled, store_->CancelSweep("s", 200));
  expect_counts_match_rows("cancelled");
  LF_ASSERT_OK(store_->RetrySweep("s", 300).status());
  LF_ASSERT_OK(store_->RetrySweep("p", 300).status());
  expect_counts_match_rows("retried sweeps");
  LF_ASSERT_OK_AND_ASSIGN(counts, store_->CountJobsByState());
  // s-0 stays SUCCEEDED; every other job is QUEUED again.
  EXPECT_EQ(counts[JobState::JOB_STATE_SUCCEEDED], 1);
  EXPECT_EQ(counts[JobState::JOB_STATE_QUEUED], 8);
  // Another connection sees the same counters.
  std::unique_ptr<Store> other = OpenAnother();
  ASSERT_NE(other, nullptr);
  LF_ASSERT_OK_AND_ASSIGN(JobStateCounts again, other->CountJobsByState());
  EXPECT_EQ(again, counts);
  (void)e;
  (void)cancelled;
}

// PostgreSQL's FailJob is one function call (lf_fail_job, schema v4) that
// checks the lease itself and hands the row back: its refusals must be the
// same errors as every other call under a lease, on both stores, and write
// nothing.
TEST_P(StoreConformance, FailJobRefusesAnythingButTheLiveLeaseAndWritesNothing) {
  LF_ASSERT_OK(store_->CreateSweep(MakeSweep("s", 3, 1)));
  EXPECT_THAT(store_->FailJob("nope", "lease-x", "e", 1),
              StatusIs(absl::StatusCode::kNotFound, "unknown job 'nope'"));
  Lease a = MustLease("w", 10);
  EXPECT_THAT(store_->FailJob(a.job.job_id(), "lease-other", "e", 11),
              StatusIs(absl::StatusCode::kAborted, "lapsed; the job was requeued or reassigned"));
  EXPECT_THAT(store_->FailJob(a.job.job_id(), a.lease_id, "e", 10 + kTtl + 5),
              StatusIs(absl::StatusCode::kAborted, "lapsed 5 ms ago"));
  Job job = MustGetJob(a.job.job_id());
  EXPECT_EQ(job.state(), JobState::JOB_STATE_RUNNING);
  EXPECT_EQ(job.error(), "");
  LF_ASSERT_OK_AND_ASSIGN(auto attempts, store_->ListAttempts(a.job.job_id()));
  EXPECT_TRUE(attempts.empty());
  // At the last millisecond of the lease it fails, once.
  LF_ASSERT_OK(store_->FailJob(a.job.job_id(), a.lease_id, "bad input", 10 + kTtl));
  LF_ASSERT_OK(store_->FailJob(a.job.job_id(), a.lease_id, "bad input again", 10 + kTtl + 1));
  job = MustGetJob(a.job.job_id());
  EXPECT_EQ(job.state(), JobState::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(), "bad input");
  LF_ASSERT_OK_AND_ASSIGN(attempts, store_->ListAttempts(a.job.job_id()));
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].worker_id, "w");
  EXPECT_EQ(attempts[0].outcome, AttemptOutcome::kBadInput);
  EXPECT_EQ(attempts[0].error, "bad input");
  // A cancelled job's holder learns of the cancel.
  Lease b = MustLease("w", 20);
  LF_ASSERT_OK(store_->CancelSweep("s", 21).status());
  EXPECT_THAT(store_->FailJob(b.job.job_id(), b.lease_id, "e", 22),
              StatusIs(absl::StatusCode::kAborted, "was cancelled"));
  EXPECT_EQ(MustGetJob(b.job.job_id()).state(), JobState::JOB_STATE_CANCELLED);
}

// Fair share (issue 14, scheduling): a lease goes to the user with the
// fewest running jobs among those with a runnable one (ties by name), and
// within that user to the highest priority, oldest first.
NewSweep UserSweep(const std::string& id, const std::string& user, int jobs, int32_t priority = 0,
                   int64_t created_ms = 1000) {
  NewSweep sweep = MakeSweep(id, jobs, 1, priority, created_ms);
  sweep.user = user;
  return sweep;
}

std::vector<std::string> LeaseIds(Store& store, const std::string& worker, int n, int64_t now) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto lease = store.LeaseNextJob(worker, now, kTtl);
    if (!lease.ok() || !lease->has_value()) break;
    ids.push_back((*lease)->job.job_id());
  }
  return ids;
}

TEST_P(StoreConformance, FairShareGivesTheNextLeaseToTheUserWithFewestRunning) {
  // alice queued 4 jobs first, bob 2 later: they alternate (running 0:0,
  // 1:0, 1:1, 2:1), not alice's whole sweep first.
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("a", "alice", 4, 0, 1000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("b", "bob", 2, 0, 2000)));
  EXPECT_THAT(LeaseIds(*store_, "w", 4, 10), ElementsAre("a-0", "b-0", "a-1", "b-1"));
  // carol arrives with nothing running: her two go next (1 < 2), though
  // alice queued long before; bob, with nothing queued, is not in the way.
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("c", "carol", 2, 0, 3000)));
  EXPECT_THAT(LeaseIds(*store_, "w", 3, 20), ElementsAre("c-0", "c-1", "a-2"));
  EXPECT_THAT(LeaseIds(*store_, "w", 2, 30), ElementsAre("a-3"));
}

TEST_P(StoreConformance, FairShareCountsOnlyRunningJobsAndFollowsEveryEnd) {
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("a", "alice", 5, 0, 1000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("b", "bob", 5, 0, 2000)));
  Lease a0 = MustLease("w", 10);  // alice 1
  Lease b0 = MustLease("w", 10);  // bob 1
  Lease a1 = MustLease("w", 10);  // alice 2
  ASSERT_EQ(a0.job.job_id(), "a-0");
  ASSERT_EQ(b0.job.job_id(), "b-0");
  ASSERT_EQ(a1.job.job_id(), "a-1");
  // alice's two end (one fails, one is given back: queued again), bob
  // keeps one: alice (0 running) goes first, with the job she gave back
  // (a-1, the oldest of her queue).
  LF_ASSERT_OK(store_->FailJob("a-0", a0.lease_id, "bad input", 11));
  LF_ASSERT_OK(store_->ReleaseLease("a-1", a1.lease_id, 11));
  EXPECT_THAT(LeaseIds(*store_, "w", 1, 12), ElementsAre("a-1"));
  // 1:1, alice by name; then bob (1 running against 2).
  EXPECT_THAT(LeaseIds(*store_, "w", 2, 13), ElementsAre("a-2", "b-1"));
  // Lapsed leases count too: all four lapse, both users are at 0 running
  // again, alice first by name, then bob.
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(14 + kTtl, /*max_attempts=*/5,
                                                                      /*backoff_base_ms=*/0));
  EXPECT_EQ(lapsed, 4);  // a-1, a-2, b-1 leased at 12-13 and b-0 at 10, all lapsed
  EXPECT_THAT(LeaseIds(*store_, "w", 2, 200), ElementsAre("a-1", "b-0"));
}

TEST_P(StoreConformance, FairSharePriorityOrdersOneUsersSweepsOnly) {
  // alice: a low sweep, then a high one; bob: one job at priority 0. The
  // high priority goes before alice's low sweep, never before bob's turn.
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("lo", "alice", 2, 0, 1000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("hi", "alice", 2, 5, 2000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("b", "bob", 1, 0, 3000)));
  EXPECT_THAT(LeaseIds(*store_, "w", 5, 10), ElementsAre("hi-0", "b-0", "hi-1", "lo-0", "lo-1"));
}

TEST_P(StoreConformance, FairShareSkipsAUserWithNothingRunnable) {
  LF_ASSERT_OK(store_->RegisterWorker("w", "host", "", 0));
  LF_ASSERT_OK(store_->RegisterWorker("v", "host", "", 0));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("a", "alice", 1, 0, 1000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("b", "bob", 2, 0, 2000)));
  Lease a0 = MustLease("w", 10);
  ASSERT_EQ(a0.job.job_id(), "a-0");
  // alice's only job goes back in backoff (a host error): she has 0
  // running, but nothing runnable until 10 + 1000, so bob gets both.
  LF_ASSERT_OK(
      store_->RetryJob("a-0", a0.lease_id, "UNAVAILABLE: x", 10, 0, Policy(3, 1000, 1000, 0))
          .status());
  EXPECT_THAT(LeaseIds(*store_, "w", 1, 20), ElementsAre("b-0"));
  // At 1010 alice's job is runnable again, but not for w (it failed there
  // while v is alive): w gets bob's, v gets alice's.
  EXPECT_THAT(LeaseIds(*store_, "w", 1, 1010), ElementsAre("b-1"));
  EXPECT_THAT(LeaseIds(*store_, "v", 1, 1010), ElementsAre("a-0"));
}

TEST_P(StoreConformance, FairShareHeadFixesTheLocalitySweep) {
  // The worker holds bob's b-1 model, but alice is owed the first lease:
  // locality looks only inside the fair head's sweep, so it never passes
  // over another user's turn; the next lease, bob's, takes b-1 over b-0.
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("a", "alice", 1, 0, 1000)));
  NewSweep b = UserSweep("b", "bob", 2, 0, 2000);
  b.jobs[1].spec.set_model("pythia-70m");  // seed 1
  LF_ASSERT_OK(store_->CreateSweep(b));
  const std::vector<ResidentModelRef> resident = {{"pythia-70m", "", 1, ""}};
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    LF_ASSERT_OK_AND_ASSIGN(auto lease, store_->LeaseNextJob("w", 10, kTtl, resident));
    ASSERT_TRUE(lease.has_value());
    ids.push_back(lease->job.job_id());
  }
  EXPECT_THAT(ids, ElementsAre("a-0", "b-1"));
}

// Limits (issue 14): a bounded queue and a per-user queued-jobs quota,
// checked in CreateSweep's transaction; past one, RESOURCE_EXHAUSTED naming
// the bound and nothing stored.
TEST_P(StoreConformance, CreateSweepRefusesPastTheQueueBoundAndTheUserQuota) {
  auto limited = [](const std::string& id, const std::string& user, int jobs) {
    NewSweep sweep = UserSweep(id, user, jobs);
    sweep.limits.max_queued_jobs = 10;
    sweep.limits.max_queued_jobs_per_user = 6;
    return sweep;
  };
  LF_ASSERT_OK(store_->CreateSweep(limited("a1", "alice", 4)));
  EXPECT_THAT(store_->CreateSweep(limited("a2", "alice", 3)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "user 'alice' has 4 jobs queued and this sweep adds 3; a user may "
                       "queue at most 6 (--max-queued-jobs-per-user)"));
  EXPECT_THAT(store_->GetSweep("a2").status(), StatusIs(absl::StatusCode::kNotFound, "a2"));
  LF_ASSERT_OK(store_->CreateSweep(limited("a2", "alice", 2)));  // exactly 6
  LF_ASSERT_OK(store_->CreateSweep(limited("b1", "bob", 4)));    // 10 in all
  EXPECT_THAT(store_->CreateSweep(limited("c1", "carol", 1)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "queue full: 10 jobs queued and this sweep adds 1; the coordinator "
                       "queues at most 10 (--max-queued-jobs)"));
  LF_ASSERT_OK_AND_ASSIGN(JobStateCounts counts, store_->CountJobsByState());
  EXPECT_EQ(counts[JobState::JOB_STATE_QUEUED], 10);
  // Leased jobs no longer count as queued: alice may queue two more.
  MustLease("w", 10);  // alice, a1-0 (by name)
  MustLease("w", 10);  // bob
  MustLease("w", 10);  // alice
  LF_ASSERT_OK(store_->CreateSweep(limited("a3", "alice", 2)));
  EXPECT_THAT(store_->CreateSweep(limited("a4", "alice", 1)),
              StatusIs(absl::StatusCode::kResourceExhausted, "user 'alice' has 6 jobs queued"));
  // No limits: anything goes.
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("free", "alice", 20)));
}

// The per-user quota of running jobs (issue 14): a user at it is passed
// over; when every user with queued jobs is, nothing is leased.
TEST_P(StoreConformance, UsersAtTheirRunningQuotaArePassedOver) {
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("a", "alice", 4, 0, 1000)));
  LF_ASSERT_OK(store_->CreateSweep(UserSweep("b", "bob", 1, 0, 2000)));
  auto lease = [&](int64_t now) -> std::string {
    auto l = store_->LeaseNextJob("w", now, kTtl, {}, /*max_running_jobs_per_user=*/2);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() && l->has_value() ? (*l)->job.job_id() : "";
  };
  EXPECT_EQ(lease(10), "a-0");
  EXPECT_EQ(lease(10), "b-0");
  EXPECT_EQ(lease(10), "a-1");
  // alice has 2 running (her quota), bob nothing queued: none.
  EXPECT_EQ(lease(10), "");
  // Without the quota the queue goes on; one of alice's ends: her turn again.
  LF_ASSERT_OK_AND_ASSIGN(auto running, store_->ListJobs("a", JobState::JOB_STATE_RUNNING));
  ASSERT_EQ(running.size(), 2u);
  auto again = store_->LeaseNextJob("w", 10, kTtl);
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->job.job_id(), "a-2");
  LF_ASSERT_OK(store_->FailJob("a-2", (*again)->lease_id, "bad input", 11));
  LF_ASSERT_OK(store_->RequeueLapsedLeases(10 + kTtl + 1, 5, 0).status());  // a-0, a-1, b-0
  EXPECT_EQ(lease(200), "a-0");
  EXPECT_EQ(lease(200), "b-0");
  EXPECT_EQ(lease(200), "a-1");
  EXPECT_EQ(lease(200), "");
}

INSTANTIATE_TEST_SUITE_P(
    Backends, StoreConformance,
    ::testing::Values(
        StoreBackend{"Sqlite",
                     [](const std::string& dir) { return OpenSqliteStore(dir + "/lf.db"); }},
        StoreBackend{"Postgres",
                     [](const std::string& dir) -> absl::StatusOr<std::unique_ptr<Store>> {
                       // The same database again for the same directory.
                       LF_ASSIGN_OR_RETURN(std::string url,
                                           ::layerflow::server::testing::PostgresUrlFor(dir));
                       return OpenPostgresStore(url);
                     }}),
    [](const ::testing::TestParamInfo<StoreBackend>& info) { return info.param.name; });

}  // namespace
}  // namespace layerflow::server

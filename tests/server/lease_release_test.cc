// Leases given back and leases held ahead (issue 13): a worker that leases
// its next job while the current one runs either gives that lease back
// (Store::ReleaseLease) or dies with it; in both cases the job runs once,
// from its last committed chunk, and nothing is lost or counted twice.
#include <memory>
#include <string>
#include <vector>

#include "server/store/sqlite_store.h"
#include "server/store/store.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::layerflow::v1::JobState;

constexpr int64_t kTtl = 100;

// Sweep `id` of `jobs` jobs (seeds 0..jobs-1) of `chunks` chunks each.
NewSweep Sweep(const std::string& id, int jobs, int64_t chunks) {
  NewSweep sweep;
  sweep.sweep_id = id;
  sweep.spec.set_name(id);
  sweep.spec.add_models("pythia-tiny");
  sweep.created_unix_ms = 0;
  for (int i = 0; i < jobs; ++i) {
    NewJob& job = sweep.jobs.emplace_back();
    job.job_id = id + "-" + std::to_string(i);
    job.spec.set_model("pythia-tiny");
    job.spec.set_seed(i);
    job.spec.set_context_length(64);
    job.spec.mutable_dataset()->set_name("kvpr");
    job.chunks_total = chunks;
  }
  return sweep;
}

layerflow::v1::MetricStat Stat(double value) {
  layerflow::v1::MetricStat stat;
  stat.set_metric("adjacent_cos");
  stat.set_layer(0);
  stat.set_sum(value);
  stat.set_sum_sq(value * value);
  stat.set_count(1);
  return stat;
}

class LeaseReleaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteStore(dir_.File("lf.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  Lease MustLease(const std::string& worker, int64_t now) {
    auto lease = store_->LeaseNextJob(worker, now, kTtl);
    EXPECT_TRUE(lease.ok()) << lease.status();
    EXPECT_TRUE(lease.ok() && lease->has_value()) << "nothing to lease at " << now;
    return lease.ok() && lease->has_value() ? **lease : Lease{};
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(LeaseReleaseTest, GivenBackLeaseRequeuesTheJobUnchargedWithItsChunks) {
  LF_ASSERT_OK(store_->CreateSweep(Sweep("s", 1, 2)));
  const Lease first = MustLease("w1", 10);
  ASSERT_EQ(first.job.attempts(), 1);
  LF_ASSERT_OK(store_->CommitChunk("s-0", first.lease_id, 0, {Stat(0.25)}, {}, 11).status());
  LF_ASSERT_OK(store_->ReleaseLease("s-0", first.lease_id, 12));

  LF_ASSERT_OK_AND_ASSIGN(auto job, store_->GetJob("s-0"));
  EXPECT_EQ(job.state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempts(), 0);  // a lease given back is no attempt
  EXPECT_EQ(job.chunks_committed(), 1);
  EXPECT_EQ(job.worker_id(), "");
  // The old lease is dead for every call made under it, and a second
  // give-back is refused the same way.
  EXPECT_THAT(store_->CommitChunk("s-0", first.lease_id, 1, {Stat(0.5)}, {}, 13).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->RenewLease("s-0", first.lease_id, 13, kTtl).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->ReleaseLease("s-0", first.lease_id, 13),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));

  // Runnable at once, resuming after the committed chunk.
  const Lease second = MustLease("w2", 12);
  EXPECT_EQ(second.job.job_id(), "s-0");
  EXPECT_EQ(second.job.attempts(), 1);
  EXPECT_EQ(second.resume_from_sequence, 1);
  LF_ASSERT_OK(store_->CommitChunk("s-0", second.lease_id, 1, {Stat(0.5)}, {}, 14).status());
  LF_ASSERT_OK(store_->CompleteJob("s-0", second.lease_id, 15));
  // Each chunk's prompt counted once: 0.25 + 0.5 over 2.
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store_->QueryResults(ResultFilter{"s"}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count(), 2);
  EXPECT_DOUBLE_EQ(rows[0].value(), 0.375);
}

TEST_F(LeaseReleaseTest, GivingBackNeverSpendsAttempts) {
  LF_ASSERT_OK(store_->CreateSweep(Sweep("s", 1, 1)));
  // Given back five times, then lapsing once with max_attempts 2: requeued,
  // not failed, because only the lapsed lease counted.
  for (int i = 0; i < 5; ++i) {
    const Lease lease = MustLease("w", 10 + i);
    LF_ASSERT_OK(store_->ReleaseLease("s-0", lease.lease_id, 10 + i));
  }
  MustLease("w", 20);
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(20 + kTtl + 1, 2, 0));
  EXPECT_EQ(lapsed, 1);
  LF_ASSERT_OK_AND_ASSIGN(auto job, store_->GetJob("s-0"));
  EXPECT_EQ(job.state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempts(), 1);
}

TEST_F(LeaseReleaseTest, GiveBackChecksTheLease) {
  LF_ASSERT_OK(store_->CreateSweep(Sweep("s", 2, 1)));
  const Lease lease = MustLease("w", 10);
  EXPECT_THAT(store_->ReleaseLease("s-0", "lease-forged", 11),
              StatusIs(absl::StatusCode::kAborted, "lease-forged"));
  EXPECT_THAT(store_->ReleaseLease("s-9", lease.lease_id, 11),
              StatusIs(absl::StatusCode::kNotFound, "s-9"));
  // Past its expiry (not yet reaped) the lease is no longer the worker's.
  EXPECT_THAT(store_->ReleaseLease("s-0", lease.lease_id, 10 + kTtl + 1),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  // A cancelled job stays cancelled.
  LF_ASSERT_OK(store_->CancelSweep("s", 12).status());
  EXPECT_THAT(store_->ReleaseLease("s-0", lease.lease_id, 13),
              StatusIs(absl::StatusCode::kAborted, "cancelled"));
  LF_ASSERT_OK_AND_ASSIGN(auto job, store_->GetJob("s-0"));
  EXPECT_EQ(job.state(), JobState::JOB_STATE_CANCELLED);
}

// A worker holds its current job and the one it leased ahead, then dies:
// no heartbeat, no give-back. Both leases lapse and both jobs are leased
// again like any other, each once, from its committed chunks.
TEST_F(LeaseReleaseTest, DeadWorkersLeaseAheadJobIsReleasedLikeAnyOther) {
  LF_ASSERT_OK(store_->CreateSweep(Sweep("s", 3, 2)));
  const Lease current = MustLease("doomed", 0);
  const Lease ahead = MustLease("doomed", 1);
  ASSERT_EQ(current.job.job_id(), "s-0");
  ASSERT_EQ(ahead.job.job_id(), "s-1");
  LF_ASSERT_OK(store_->CommitChunk("s-0", current.lease_id, 0, {Stat(1.0)}, {}, 2).status());

  // Before the leases expire nothing comes back; the third job is next.
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, store_->RequeueLapsedLeases(kTtl, 3, 0));
  EXPECT_EQ(lapsed, 0);
  const Lease third = MustLease("survivor", 3);
  EXPECT_EQ(third.job.job_id(), "s-2");
  LF_ASSERT_OK(store_->RenewLease("s-2", third.lease_id, kTtl, kTtl).status());

  LF_ASSERT_OK_AND_ASSIGN(lapsed, store_->RequeueLapsedLeases(kTtl + 2, 3, 0));
  EXPECT_EQ(lapsed, 2);
  for (const char* id : {"s-0", "s-1"}) {
    LF_ASSERT_OK_AND_ASSIGN(auto job, store_->GetJob(id));
    EXPECT_EQ(job.state(), JobState::JOB_STATE_QUEUED) << id;
    EXPECT_EQ(job.attempts(), 1) << id;  // charged, as every lapsed lease is
  }
  const Lease again0 = MustLease("survivor", kTtl + 3);
  const Lease again1 = MustLease("survivor", kTtl + 3);
  EXPECT_EQ(again0.job.job_id(), "s-0");
  EXPECT_EQ(again0.resume_from_sequence, 1);
  EXPECT_EQ(again1.job.job_id(), "s-1");
  EXPECT_EQ(again1.resume_from_sequence, 0);
  LF_ASSERT_OK_AND_ASSIGN(auto none, store_->LeaseNextJob("survivor", kTtl + 3, kTtl));
  EXPECT_FALSE(none.has_value());
  // The dead worker's leases are gone for good.
  EXPECT_THAT(store_->CommitChunk("s-1", ahead.lease_id, 0, {Stat(2.0)}, {}, kTtl + 4).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
}

}  // namespace
}  // namespace layerflow::server

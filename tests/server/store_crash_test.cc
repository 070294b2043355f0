// kill -9 mid-commit, on both backends (issue 14): a child process commits
// chunks in a tight loop, so nearly all its time is spent inside CommitChunk's
// transaction (on PostgreSQL the server's log confirms it), and is killed
// with SIGKILL; the reopened store has every
// chunk committed before the kill complete (all its statistics) and nothing
// of the one being committed, and the job continues where it stopped.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "server/store/open_store.h"
#include "server/store/store.h"
#include "tests/server/postgres_harness.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::TempDir;
using ::layerflow::v1::MetricStat;

struct CrashBackend {
  std::string name;
  // The --db value of a fresh database for the test's directory.
  std::function<absl::StatusOr<std::string>(const std::string& dir)> db;
  // How many clients so far died inside an open transaction (empty: the
  // backend cannot tell).
  std::function<int()> in_transaction;
};

constexpr int kKillsInATransaction = 3;

// PostgreSQL logs "unexpected EOF on client connection with an open
// transaction" for each client that vanished mid-transaction.
int PostgresKillsInATransaction() {
  absl::StatusOr<::layerflow::server::testing::PostgresServer*> pg =
      ::layerflow::server::testing::SharedPostgres();
  if (!pg.ok()) return 0;
  const std::string log = (*pg)->Log();
  int n = 0;
  for (size_t at = 0; (at = log.find("with an open transaction", at)) != std::string::npos; ++at) {
    ++n;
  }
  return n;
}

void PrintTo(const CrashBackend& b, std::ostream* os) { *os << b.name; }

constexpr int kStats = 12;            // statistics per chunk
constexpr int64_t kChunks = 1000000;  // more than the child ever reaches

// Chunk `seq`'s statistic k: two prompts, values seq + k and seq / 2.
std::vector<MetricStat> ChunkStats(int64_t seq) {
  std::vector<MetricStat> stats;
  for (int k = 0; k < kStats; ++k) {
    MetricStat& s = stats.emplace_back();
    s.set_metric("m" + std::to_string(k));
    s.set_layer(k);
    const double a = static_cast<double>(seq + k);
    const double b = static_cast<double>(seq) / 2;
    s.set_sum(a + b);
    s.set_sum_sq(a * a + b * b);
    s.set_count(2);
  }
  return stats;
}

class StoreCrash : public ::testing::TestWithParam<CrashBackend> {
 protected:
  std::unique_ptr<Store> Open() {
    auto store = OpenStore(db_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Every statistic's merged row covers exactly chunks 0..n-1.
  void ExpectExactlyTheFirstChunks(Store& store, int64_t n) {
    LF_ASSERT_OK_AND_ASSIGN(auto rows, store.QueryResults({"s", "", "", ""}));
    ASSERT_EQ(rows.size(), static_cast<size_t>(kStats));
    for (const auto& row : rows) {
      const int k = row.layer();
      EXPECT_EQ(row.metric(), "m" + std::to_string(k));
      EXPECT_EQ(row.count(), 2 * n) << row.metric();
      double sum = 0;  // recomputed from the definition of ChunkStats
      for (int64_t seq = 0; seq < n; ++seq) {
        sum += static_cast<double>(seq + k) + static_cast<double>(seq) / 2;
      }
      EXPECT_NEAR(row.value(), sum / static_cast<double>(2 * n), 1e-9) << row.metric();
    }
  }

  TempDir dir_;
  std::string db_;
};

TEST_P(StoreCrash, KillDashNineMidCommitLosesNothingCommittedAndHalfWritesNothing) {
  LF_ASSERT_OK_AND_ASSIGN(db_, GetParam().db(dir_.path()));
  std::unique_ptr<Store> store = Open();
  ASSERT_NE(store, nullptr);
  NewSweep sweep;
  sweep.sweep_id = "s";
  sweep.spec.set_name("s");
  NewJob& job = sweep.jobs.emplace_back();
  job.job_id = "s-0";
  job.spec.set_model("pythia-tiny");
  job.chunks_total = kChunks;
  LF_ASSERT_OK(store->CreateSweep(sweep));
  LF_ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNextJob("w", 0, int64_t{1} << 50));
  ASSERT_TRUE(lease.has_value());
  const std::string lease_id = lease->lease_id;

  std::mt19937 rng(20261202);
  int64_t next = 0;  // the first chunk not committed
  // Three kills; on PostgreSQL, until three landed inside an open
  // transaction (its server log says so), which nearly every kill does.
  auto cut = [&] { return GetParam().in_transaction ? GetParam().in_transaction() : 0; };
  const int earlier = cut();  // by tests before this one
  for (int round = 0; round < (GetParam().in_transaction ? 20 : 3); ++round) {
    if (GetParam().in_transaction && cut() - earlier >= kKillsInATransaction) break;
    const int before = cut();
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Its own connection; never returns into the test (_exit skips every
      // destructor, as a kill would).
      absl::StatusOr<std::unique_ptr<Store>> own = OpenStore(db_);
      if (!own.ok()) _exit(2);
      for (int64_t seq = next; seq < kChunks; ++seq) {
        if (!(*own)->CommitChunk("s-0", lease_id, seq, ChunkStats(seq), {64, 64}, 1).ok()) {
          _exit(3);
        }
      }
      _exit(0);
    }
    // A failed assertion below must not leave the child committing.
    struct Reap {
      pid_t pid;
      ~Reap() {
        if (pid > 0) {
          kill(pid, SIGKILL);
          waitpid(pid, nullptr, 0);
        }
      }
    } reap{child};
    // Wait until the child is well into its loop, then kill it at a random
    // moment of a commit.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int64_t committed = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      LF_ASSERT_OK_AND_ASSIGN(auto job_now, store->GetJob("s-0"));
      committed = job_now.chunks_committed();
      if (committed >= next + 20) break;
      int status = 0;
      ASSERT_EQ(waitpid(child, &status, WNOHANG), 0) << "child exited early, status " << status;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(committed, next + 20) << "child too slow";
    std::this_thread::sleep_for(
        std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    reap.pid = -1;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    if (GetParam().in_transaction) {
      // The server logs the cut transaction as soon as it reads the EOF.
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (cut() == before && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }

    // A restarted coordinator: a new connection to what is on disk.
    store.reset();
    store = Open();
    ASSERT_NE(store, nullptr);
    LF_ASSERT_OK_AND_ASSIGN(auto after, store->GetJob("s-0"));
    const int64_t n = after.chunks_committed();
    EXPECT_GE(n, committed);
    ExpectExactlyTheFirstChunks(*store, n);
    // The chunks are 0..n-1: n-1 is there, n is not, and the job goes on
    // under the same lease.
    LF_ASSERT_OK_AND_ASSIGN(CommitResult again,
                            store->CommitChunk("s-0", lease_id, n - 1, ChunkStats(n - 1), {}, 2));
    EXPECT_FALSE(again.newly_committed);
    LF_ASSERT_OK_AND_ASSIGN(CommitResult more,
                            store->CommitChunk("s-0", lease_id, n, ChunkStats(n), {}, 2));
    EXPECT_TRUE(more.newly_committed);
    EXPECT_EQ(more.job_chunks_committed, n + 1);
    ExpectExactlyTheFirstChunks(*store, n + 1);
    next = n + 1;
  }
  if (GetParam().in_transaction) {
    EXPECT_GE(cut() - earlier, kKillsInATransaction)
        << "fewer kills than wanted landed inside a transaction";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, StoreCrash,
    ::testing::Values(CrashBackend{"Sqlite",
                                   [](const std::string& dir) -> absl::StatusOr<std::string> {
                                     return dir + "/lf.db";
                                   },
                                   nullptr},
                      CrashBackend{"Postgres",
                                   [](const std::string& dir) {
                                     return ::layerflow::server::testing::PostgresUrlFor(dir);
                                   },
                                   PostgresKillsInATransaction}),
    [](const ::testing::TestParamInfo<CrashBackend>& info) { return info.param.name; });

}  // namespace
}  // namespace layerflow::server

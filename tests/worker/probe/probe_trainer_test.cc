// The batched linear-probe trainer (worker/probe): a planted signal is found
// and noise stays at chance, the split is stratified, seeds are
// deterministic, test accuracy matches an independent float64 logistic
// regression, and bad input names its field.
#include "worker/probe/probe_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/worker/probe/probe_reference.h"

namespace layerflow::worker {
namespace {

const c10::Device kCpu(c10::kCPU);

at::Generator Gen(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// n labels, i % C, shuffled (classes balanced to within one).
std::vector<int32_t> BalancedLabels(int64_t n, int C, uint64_t seed) {
  std::vector<int32_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>(i % C);
  std::mt19937_64 rng(seed);
  std::shuffle(y.begin(), y.end(), rng);
  return y;
}

at::Tensor Noise(int64_t n, int64_t p, int64_t d, uint64_t seed) {
  return at::randn({n, p, d}, Gen(seed), at::TensorOptions().dtype(at::kFloat));
}

// Adds `strength` * e_{label} (first C coordinates) at point `point`.
void PlantSignal(at::Tensor& x, const std::vector<int32_t>& y, int64_t point,
                 double strength) {
  auto a = x.accessor<float, 3>();
  for (size_t i = 0; i < y.size(); ++i) a[i][point][y[i]] += static_cast<float>(strength);
}

// chance +- 3 sigma of a single test set, sigma = sqrt(p (1 - p) / n_test).
double ThreeSigma(double chance, int64_t n_test) {
  return 3.0 * std::sqrt(chance * (1.0 - chance) / static_cast<double>(n_test));
}

ProbeOptions Options(int C) {
  ProbeOptions o;
  o.num_classes = C;
  return o;
}

TEST(ProbeTrainer, PlantedSignalIsFoundAndNoiseStaysAtChance) {
  c10::InferenceMode guard;
  const int C = 4;
  const int64_t N = 1000, P = 6, d = 16, kSignal = 3;
  const std::vector<int32_t> y = BalancedLabels(N, C, 7);
  at::Tensor x = Noise(N, P, d, 11);
  PlantSignal(x, y, kSignal, 4.0);
  absl::StatusOr<ProbeReport> r = TrainProbes(x, y, Options(C), kCpu);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_train, 800);
  EXPECT_EQ(r->num_test, 200);
  EXPECT_DOUBLE_EQ(r->chance, 0.25);
  ASSERT_EQ(r->points.size(), static_cast<size_t>(P));
  const double band = ThreeSigma(0.25, r->num_test);
  for (int64_t p = 0; p < P; ++p) {
    const ProbePointReport& pt = r->points[p];
    SCOPED_TRACE(::testing::Message() << "point " << p);
    if (p == kSignal) {
      EXPECT_GE(pt.test_accuracy_mean, 0.95);
      for (double a : pt.per_class_test_accuracy) EXPECT_GE(a, 0.9);
    } else {
      EXPECT_NEAR(pt.test_accuracy_mean, 0.25, band);
    }
    // Each wrong prediction is 1..C-1 positions away.
    EXPECT_GE(pt.test_mae_mean, 1.0 - pt.test_accuracy_mean - 1e-12);
    EXPECT_LE(pt.test_mae_mean, (1.0 - pt.test_accuracy_mean) * (C - 1) + 1e-12);
    EXPECT_EQ(pt.test_accuracy_per_seed.size(), 3u);
    ASSERT_EQ(pt.per_class_test_accuracy.size(), static_cast<size_t>(C));
  }
  EXPECT_EQ(r->best_point, kSignal);
  EXPECT_EQ(r->best_test_accuracy, r->points[kSignal].test_accuracy_mean);
  EXPECT_EQ(r->final_test_accuracy, r->points[P - 1].test_accuracy_mean);
  EXPECT_DOUBLE_EQ(r->drop, r->best_test_accuracy - r->final_test_accuracy);
  EXPECT_GT(r->drop, 0.5);
}

TEST(ProbeTrainer, RandomLabelsStayAtChance) {
  c10::InferenceMode guard;
  const int C = 5;
  const int64_t N = 1000, P = 5, d = 12;
  // Structured features (clusters by a hidden variable) and labels drawn
  // independently of them.
  const std::vector<int32_t> hidden = BalancedLabels(N, C, 3);
  at::Tensor x = Noise(N, P, d, 5);
  for (int64_t p = 0; p < P; ++p) PlantSignal(x, hidden, p, 4.0);
  const std::vector<int32_t> y = BalancedLabels(N, C, 99);
  absl::StatusOr<ProbeReport> r = TrainProbes(x, y, Options(C), kCpu);
  ASSERT_TRUE(r.ok()) << r.status();
  const double band = ThreeSigma(0.2, r->num_test);
  for (int64_t p = 0; p < P; ++p) {
    EXPECT_NEAR(r->points[p].test_accuracy_mean, 0.2, band) << "point " << p;
  }
}

// n_train_c = clamp(floor(f n_c + 0.5), 1, n_c - 1) (round half up).
TEST(ProbeSplit, IsStratifiedDisjointAndCovering) {
  const std::vector<int> sizes = {2, 3, 5, 7, 10, 0, 13, 4};
  const double f = 0.8;
  std::vector<int32_t> y;
  for (int c = 0; c < static_cast<int>(sizes.size()); ++c) {
    for (int k = 0; k < sizes[c]; ++k) y.push_back(c);
  }
  std::mt19937_64 rng(1);
  std::shuffle(y.begin(), y.end(), rng);
  const std::vector<int64_t> want_train = {1, 2, 4, 6, 8, 0, 10, 3};
  for (uint64_t seed : {0u, 1u, 2u, 12345u}) {
    absl::StatusOr<ProbeSplit> s = StratifiedSplit(y, 8, f, seed);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(std::is_sorted(s->train.begin(), s->train.end()));
    EXPECT_TRUE(std::is_sorted(s->test.begin(), s->test.end()));
    std::vector<int64_t> all = s->train;
    all.insert(all.end(), s->test.begin(), s->test.end());
    std::sort(all.begin(), all.end());
    std::vector<int64_t> every(y.size());
    std::iota(every.begin(), every.end(), 0);
    EXPECT_EQ(all, every);  // disjoint and covering
    std::vector<int64_t> train_count(8, 0), test_count(8, 0);
    for (int64_t i : s->train) ++train_count[y[i]];
    for (int64_t i : s->test) ++test_count[y[i]];
    for (int c = 0; c < 8; ++c) {
      EXPECT_EQ(train_count[c], want_train[c]) << "class " << c;
      EXPECT_EQ(train_count[c] + test_count[c], sizes[c]) << "class " << c;
    }
  }
  // Round half up: 0.5 * 5 = 2.5 -> 3; 0.3 * 5 = 1.5 -> 2.
  const std::vector<int32_t> five = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  EXPECT_EQ(StratifiedSplit(five, 2, 0.5, 0)->train.size(), 6u);
  EXPECT_EQ(StratifiedSplit(five, 2, 0.3, 0)->train.size(), 4u);
}

TEST(ProbeSplit, IsSeeded) {
  const std::vector<int32_t> y = BalancedLabels(200, 4, 2);
  absl::StatusOr<ProbeSplit> a = StratifiedSplit(y, 4, 0.8, 5);
  absl::StatusOr<ProbeSplit> b = StratifiedSplit(y, 4, 0.8, 5);
  absl::StatusOr<ProbeSplit> c = StratifiedSplit(y, 4, 0.8, 6);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->train, b->train);
  EXPECT_EQ(a->test, b->test);
  EXPECT_NE(a->train, c->train);
}

bool BitEqual(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void ExpectBitEqual(const ProbeReport& a, const ProbeReport& b) {
  ASSERT_EQ(a.points.size(), b.points.size());
  EXPECT_EQ(a.best_point, b.best_point);
  EXPECT_TRUE(BitEqual(a.drop, b.drop));
  EXPECT_TRUE(BitEqual(a.best_test_accuracy, b.best_test_accuracy));
  EXPECT_TRUE(BitEqual(a.final_test_accuracy, b.final_test_accuracy));
  for (size_t p = 0; p < a.points.size(); ++p) {
    const ProbePointReport& x = a.points[p];
    const ProbePointReport& y = b.points[p];
    EXPECT_TRUE(BitEqual(x.test_accuracy_mean, y.test_accuracy_mean)) << p;
    EXPECT_TRUE(BitEqual(x.test_accuracy_std, y.test_accuracy_std)) << p;
    EXPECT_TRUE(BitEqual(x.train_accuracy_mean, y.train_accuracy_mean)) << p;
    EXPECT_TRUE(BitEqual(x.train_accuracy_std, y.train_accuracy_std)) << p;
    EXPECT_TRUE(BitEqual(x.test_mae_mean, y.test_mae_mean)) << p;
    ASSERT_EQ(x.per_class_test_accuracy.size(), y.per_class_test_accuracy.size());
    for (size_t c = 0; c < x.per_class_test_accuracy.size(); ++c) {
      EXPECT_TRUE(BitEqual(x.per_class_test_accuracy[c], y.per_class_test_accuracy[c]));
    }
    ASSERT_EQ(x.test_accuracy_per_seed.size(), y.test_accuracy_per_seed.size());
    for (size_t s = 0; s < x.test_accuracy_per_seed.size(); ++s) {
      EXPECT_TRUE(BitEqual(x.test_accuracy_per_seed[s], y.test_accuracy_per_seed[s]));
    }
  }
}

TEST(ProbeTrainer, EqualSeedsGiveBitEqualReportsAndOtherSeedsDiffer) {
  c10::InferenceMode guard;
  const int C = 3;
  const int64_t N = 300, P = 3, d = 8;
  const std::vector<int32_t> y = BalancedLabels(N, C, 4);
  at::Tensor x = Noise(N, P, d, 8);
  PlantSignal(x, y, 1, 1.0);  // a weak signal: accuracies vary with the split
  ProbeOptions o = Options(C);
  o.epochs = 60;
  absl::StatusOr<ProbeReport> a = TrainProbes(x, y, o, kCpu);
  absl::StatusOr<ProbeReport> b = TrainProbes(x, y, o, kCpu);
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectBitEqual(*a, *b);
  o.seeds = {3, 4, 5};
  absl::StatusOr<ProbeReport> c = TrainProbes(x, y, o, kCpu);
  ASSERT_TRUE(c.ok());
  bool differ = false;
  for (int64_t p = 0; p < P; ++p) {
    differ |= a->points[p].test_accuracy_per_seed != c->points[p].test_accuracy_per_seed;
  }
  EXPECT_TRUE(differ);
}

TEST(ProbeTrainer, HalfPrecisionFeaturesAreCastToFloat32) {
  c10::InferenceMode guard;
  const int C = 3;
  const std::vector<int32_t> y = BalancedLabels(120, C, 1);
  at::Tensor x = Noise(120, 2, 5, 2);
  PlantSignal(x, y, 0, 2.0);
  ProbeOptions o = Options(C);
  o.epochs = 30;
  const at::Tensor half = x.to(at::kHalf);
  absl::StatusOr<ProbeReport> a = TrainProbes(half, y, o, kCpu);
  absl::StatusOr<ProbeReport> b = TrainProbes(half.to(at::kFloat), y, o, kCpu);
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectBitEqual(*a, *b);
}

TEST(ProbeTrainer, ClassWithoutExamplesReportsMinusOne) {
  c10::InferenceMode guard;
  const int C = 5;  // class 4 never occurs
  const std::vector<int32_t> y = BalancedLabels(200, 4, 1);
  at::Tensor x = Noise(200, 2, 6, 3);
  PlantSignal(x, y, 1, 4.0);
  ProbeOptions o = Options(C);
  o.epochs = 50;
  absl::StatusOr<ProbeReport> r = TrainProbes(x, y, o, kCpu);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->chance, 0.2);
  for (const ProbePointReport& pt : r->points) {
    ASSERT_EQ(pt.per_class_test_accuracy.size(), 5u);
    EXPECT_EQ(pt.per_class_test_accuracy[4], -1.0);
    for (int c = 0; c < 4; ++c) {
      EXPECT_GE(pt.per_class_test_accuracy[c], 0.0);
      EXPECT_LE(pt.per_class_test_accuracy[c], 1.0);
    }
    EXPECT_FALSE(std::isnan(pt.test_mae_mean));
  }
}

// Trainer (float32, Adam run to near convergence) vs Newton's method in
// float64 on the same split, z-scoring and L2 penalty.
TEST(ProbeTrainer, MatchesFloat64LogisticRegression) {
  c10::InferenceMode guard;
  const int C = 4;
  const int64_t N = 2000, P = 2, d = 6;
  const std::vector<int32_t> y = BalancedLabels(N, C, 21);
  at::Tensor x = Noise(N, P, d, 22);
  // Class means of two strengths (overlapping classes: accuracy well below 1),
  // an offset and a scale per feature (so z-scoring matters).
  at::Tensor means = at::randn({P, C, d}, Gen(23));
  auto xa = x.accessor<float, 3>();
  auto ma = means.accessor<float, 3>();
  const double strength[P] = {0.6, 1.2};
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t j = 0; j < d; ++j) {
        xa[i][p][j] = static_cast<float>(
            (xa[i][p][j] + strength[p] * ma[p][y[i]][j]) * (1.0 + j) + 3.0 * j);
      }
    }
  }
  ProbeOptions o = Options(C);
  o.seeds = {0, 1};
  o.epochs = 1500;
  o.learning_rate = 0.02;
  o.weight_decay = 1e-2;
  absl::StatusOr<ProbeReport> r = TrainProbes(x, y, o, kCpu);
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t s = 0; s < o.seeds.size(); ++s) {
    absl::StatusOr<ProbeSplit> split = StratifiedSplit(y, C, o.train_fraction, o.seeds[s]);
    ASSERT_TRUE(split.ok());
    for (int64_t p = 0; p < P; ++p) {
      testing::Matrix tr{static_cast<int64_t>(split->train.size()), d, {}};
      testing::Matrix te{static_cast<int64_t>(split->test.size()), d, {}};
      std::vector<int> ytr, yte;
      for (int64_t i : split->train) {
        for (int64_t j = 0; j < d; ++j) tr.v.push_back(xa[i][p][j]);
        ytr.push_back(y[i]);
      }
      for (int64_t i : split->test) {
        for (int64_t j = 0; j < d; ++j) te.v.push_back(xa[i][p][j]);
        yte.push_back(y[i]);
      }
      testing::ZScoreWithTrainStats(tr, te, o.std_floor);
      const testing::LogisticModel m = testing::FitLogistic(tr, ytr, C, o.weight_decay);
      ASSERT_LT(m.grad_norm, 1e-10);
      const std::vector<int> pred = testing::PredictLogistic(m, te);
      int correct = 0;
      for (size_t k = 0; k < pred.size(); ++k) correct += pred[k] == yte[k];
      const double ref_acc = static_cast<double>(correct) / pred.size();
      const double acc = r->points[p].test_accuracy_per_seed[s];
      EXPECT_NEAR(acc, ref_acc, 0.01) << "seed " << o.seeds[s] << " point " << p;
      EXPECT_GT(ref_acc, 0.4);  // the problem is not at chance
      EXPECT_LT(ref_acc, 0.97);  // nor trivially separable
    }
  }
}

// Bad input: INVALID_ARGUMENT with the field in the message.
class ProbeErrors : public ::testing::Test {
 protected:
  at::Tensor x_ = at::randn({6, 2, 3}, Gen(0));
  std::vector<int32_t> y_ = {0, 0, 1, 1, 2, 2};
  ProbeOptions o_ = Options(3);

  void Expect(const absl::StatusOr<ProbeReport>& r, const std::string& message) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), message);
  }
};

TEST_F(ProbeErrors, Options) {
  ProbeOptions o = o_;
  o.num_classes = 1;
  Expect(TrainProbes(x_, y_, o, kCpu), "num_classes: 1; need at least 2");
  for (double f : {0.0, 1.0, -0.5}) {
    o = o_;
    o.train_fraction = f;
    Expect(TrainProbes(x_, y_, o, kCpu),
           "train_fraction: " + absl::StrCat(f) + " is outside (0, 1)");
  }
  o = o_;
  o.train_fraction = std::nan("");
  Expect(TrainProbes(x_, y_, o, kCpu), "train_fraction: nan is outside (0, 1)");
  o = o_;
  o.seeds = {};
  Expect(TrainProbes(x_, y_, o, kCpu), "seeds: empty; need at least one seed");
  o = o_;
  o.epochs = 0;
  Expect(TrainProbes(x_, y_, o, kCpu), "epochs: 0; need at least 1");
  o = o_;
  o.learning_rate = 0;
  Expect(TrainProbes(x_, y_, o, kCpu), "learning_rate: 0; need a finite value > 0");
  o = o_;
  o.weight_decay = -1;
  Expect(TrainProbes(x_, y_, o, kCpu), "weight_decay: -1; need a finite value >= 0");
  o = o_;
  o.std_floor = 0;
  Expect(TrainProbes(x_, y_, o, kCpu), "std_floor: 0; need a finite value > 0");
}

TEST_F(ProbeErrors, Features) {
  Expect(TrainProbes(at::Tensor(), y_, o_, kCpu),
         "features: undefined tensor; expected [N, P, d]");
  Expect(TrainProbes(x_.select(2, 0), y_, o_, kCpu),
         "features: expected [N, P, d], got 2 dimensions [6, 2]");
  Expect(TrainProbes(at::zeros({6, 0, 3}), y_, o_, kCpu),
         "features: expected [N, P, d] with N, P, d >= 1, got [6, 0, 3]");
  Expect(TrainProbes(x_.to(at::kInt), y_, o_, kCpu),
         "features: dtype Int not supported (float16, bfloat16, float32, float64)");
  at::Tensor bad = x_.clone();
  bad[4][1][2] = std::nan("");
  Expect(TrainProbes(bad, y_, o_, kCpu), "features: contains NaN or Inf");
  bad[4][1][2] = INFINITY;
  Expect(TrainProbes(bad, y_, o_, kCpu), "features: contains NaN or Inf");
}

TEST_F(ProbeErrors, Labels) {
  Expect(TrainProbes(x_, {0, 0, 1, 1, 2}, o_, kCpu),
         "labels: 5 entries for N = 6 examples (features.size(0))");
  Expect(TrainProbes(x_, {0, 0, 1, 1, 2, 3}, o_, kCpu), "labels[5]: 3 is outside [0, 3)");
  Expect(TrainProbes(x_, {0, -1, 1, 1, 2, 2}, o_, kCpu), "labels[1]: -1 is outside [0, 3)");
  Expect(TrainProbes(x_, {0, 0, 1, 1, 1, 2}, o_, kCpu),
         "labels: class 2 has 1 example; a stratified split needs at least 2 per "
         "class (one for train, one for test) or none");
  // The example.
  std::vector<int32_t> y(22);
  for (int i = 0; i < 22; ++i) y[i] = i % 11;
  y[17] = 12;
  ProbeOptions o = Options(11);
  Expect(TrainProbes(at::randn({22, 1, 2}), y, o, kCpu), "labels[17]: 12 is outside [0, 11)");
}

TEST_F(ProbeErrors, Split) {
  auto expect = [](const absl::StatusOr<ProbeSplit>& s, const std::string& message) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.status().message(), message);
  };
  expect(StratifiedSplit(y_, 1, 0.8, 0), "num_classes: 1; need at least 2");
  expect(StratifiedSplit(y_, 3, 1.5, 0), "train_fraction: 1.5 is outside (0, 1)");
  expect(StratifiedSplit({0, 0, 5}, 3, 0.8, 0), "labels[2]: 5 is outside [0, 3)");
  expect(StratifiedSplit({0, 0, 1}, 3, 0.8, 0),
         "labels: class 1 has 1 example; a stratified split needs at least 2 per "
         "class (one for train, one for test) or none");
}

}  // namespace
}  // namespace layerflow::worker

// The counter-based generator of random init (worker/model/counter_rng.h,
// init.h) on the CPU: Philox against the published known answers and
// LibTorch's own Philox, the hash against FNV-1a's published values, the
// transforms against libm in long double, every scheme's distribution by
// moments and a Kolmogorov-Smirnov test against the exact CDF, and the
// independence of values across indices, names and seeds.
//
// Statistical checks run on fixed seeds (so they are deterministic) with
// bounds of 5 standard errors, or a critical value at alpha = 0.001: a
// generator or transform that is wrong by more than that fails them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/PhiloxRNGEngine.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "worker/model/counter_rng.h"
#include "worker/model/init.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"

namespace layerflow::worker {
namespace {

namespace cr = counter_rng;

// Kolmogorov's asymptotic critical value at alpha = 0.001:
// sqrt(-ln(alpha / 2) / 2) / sqrt(n).
double KsCritical(size_t n) { return std::sqrt(-0.5 * std::log(0.0005)) / std::sqrt(double(n)); }

// sup |F_n - F| of the sample against the CDF.
template <typename Cdf>
double KsStatistic(std::vector<double> x, Cdf cdf) {
  std::sort(x.begin(), x.end());
  const double n = static_cast<double>(x.size());
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double f = cdf(x[i]);
    d = std::max({d, (i + 1) / n - f, f - i / n});
  }
  return d;
}

double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

std::vector<double> ToDoubles(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

at::Tensor Filled(int64_t n, const cr::FillSpec& spec, c10::ScalarType dtype = at::kFloat) {
  at::Tensor t = at::empty({n}, at::TensorOptions().dtype(dtype));
  CounterFill(t, spec);
  return t;
}

cr::FillSpec Normal(uint64_t seed, const std::string& name, double std) {
  cr::FillSpec spec;
  spec.key = ParameterDraws(seed, name).key();
  spec.distribution = cr::Distribution::kNormal;
  spec.a = std;
  return spec;
}

cr::FillSpec Uniform(uint64_t seed, const std::string& name, double lo, double hi) {
  cr::FillSpec spec;
  spec.key = ParameterDraws(seed, name).key();
  spec.distribution = cr::Distribution::kUniform;
  spec.a = lo;
  spec.b = hi;
  return spec;
}

// Random123's kat_vectors for philox4x32 10: counter, key -> output.
TEST(PhiloxTest, KnownAnswers) {
  struct Case {
    cr::Block counter;
    uint32_t key[2];
    cr::Block expected;
  };
  const Case cases[] = {
      {{{0, 0, 0, 0}}, {0, 0}, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {0xffffffff, 0xffffffff},
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {0xa4093822, 0x299f31d0},
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Case& c : cases) {
    const cr::Block out = cr::Philox4x32_10(c.counter, c.key[0], c.key[1]);
    for (int j = 0; j < 4; ++j) EXPECT_EQ(out.w[j], c.expected.w[j]) << "word " << j;
  }
}

// LibTorch's Philox (ATen/core/PhiloxRNGEngine.h), an independent
// implementation: key = seed, counter = (offset lo, hi, subsequence lo, hi).
TEST(PhiloxTest, BlocksEqualLibTorchPhilox) {
  const uint64_t keys[] = {0, 1, 0x0123456789abcdefull,
                           ParameterDraws(7, "embed_out.weight").key()};
  const uint64_t blocks[] = {0, 1, 3, 1ull << 32, 123456789012ull};
  for (uint64_t key : keys) {
    for (uint64_t block : blocks) {
      at::Philox4_32 torch_philox(key, /*subsequence=*/0, /*offset=*/block);
      const cr::Block ours = cr::BlockAt(key, block);
      for (int j = 0; j < 4; ++j) {
        EXPECT_EQ(ours.w[j], torch_philox())
            << "key " << key << " block " << block << " word " << j;
      }
    }
  }
}

// Published FNV-1a 64-bit test values (Fowler, Noll, Vo).
TEST(NameHashTest, Fnv1aPublishedValues) {
  EXPECT_EQ(cr::NameHash("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(cr::NameHash("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(cr::NameHash("foobar", 6), 0x85944171f73967e8ull);
}

// The transforms against libm in long double: ln to a few double ulps, sin
// and cos of 2 pi u likewise, and the float values within one float ulp of
// the correctly rounded ones (equal to them but for near-ties).
TEST(TransformTest, LogSinCosAndValuesAgainstLibm) {
  const uint64_t key = ParameterDraws(3, "transform").key();
  int64_t normal_equal = 0, uniform_equal = 0, total = 0;
  double worst_log = 0, worst_trig = 0;
  for (uint64_t g = 0; g < 50000; ++g) {
    const cr::Block blk = cr::BlockAt(key, g);
    for (int j = 0; j < 4; ++j) {
      const double u = cr::Uniform01(blk.w[j]);
      ASSERT_GT(u, 0.0);
      ASSERT_LT(u, 1.0);
      const long double ref_log = std::log(static_cast<long double>(u));
      worst_log = std::max<double>(worst_log, std::fabs((cr::Log(u) - ref_log) / ref_log));
      double s, c;
      cr::SinCos2Pi(u, &s, &c);
      const long double angle = 2.0L * 3.141592653589793238462643383279502884L * u;
      worst_trig = std::max<double>(worst_trig, std::fabs(s - std::sin(angle)));
      worst_trig = std::max<double>(worst_trig, std::fabs(c - std::cos(angle)));
    }
    float normals[4], uniforms[4];
    cr::FillSpec spec;
    spec.key = key;
    spec.a = 0.02;
    cr::Values4(spec, g, normals);
    // A bound like xavier's: with a width such as 0.8, whose 2^-32 steps
    // are commensurate with float's grid, lattice points land on float
    // rounding ties far more often than chance and the comparison below
    // would test the tie rule, not the transform.
    spec.distribution = cr::Distribution::kUniform;
    spec.a = -std::sqrt(6.0 / 1024);
    spec.b = std::sqrt(6.0 / 1024);
    cr::Values4(spec, g, uniforms);
    for (int j = 0; j < 4; j += 2) {
      const long double r =
          std::sqrt(-2.0L * std::log(static_cast<long double>(cr::Uniform01(blk.w[j]))));
      const long double angle =
          2.0L * 3.141592653589793238462643383279502884L * cr::Uniform01(blk.w[j + 1]);
      const float ref[2] = {static_cast<float>(0.02L * r * std::cos(angle)),
                            static_cast<float>(0.02L * r * std::sin(angle))};
      for (int k = 0; k < 2; ++k) {
        EXPECT_LE(std::fabs(normals[j + k] - ref[k]),
                  std::nextafter(std::fabs(ref[k]), 1.0f) - std::fabs(ref[k]))
            << "block " << g << " word " << j + k;
        normal_equal += normals[j + k] == ref[k];
      }
    }
    for (int j = 0; j < 4; ++j) {
      const long double lo = spec.a, width = 2.0L * spec.b;
      const float ref = static_cast<float>(lo + width * cr::Uniform01(blk.w[j]));
      EXPECT_LE(std::fabs(uniforms[j] - ref),
                std::nextafter(std::fabs(ref), 1.0f) - std::fabs(ref));
      uniform_equal += uniforms[j] == ref;
      ++total;
    }
  }
  EXPECT_LT(worst_log, 4e-16);
  EXPECT_LT(worst_trig, 4e-16);
  // A value off by an ulp needs the double result within ~1e-16 of a float
  // rounding tie (~1e-8 of values): expected none in 200000.
  EXPECT_GE(normal_equal, total - 2);
  EXPECT_GE(uniform_equal, total - 2);
}

// normal(0, s): mean, variance, kurtosis within 5 standard errors, and the
// Kolmogorov-Smirnov distance to Phi(x / s) below its alpha = 0.001 value.
TEST(DistributionTest, NormalMomentsAndKolmogorovSmirnov) {
  c10::InferenceMode guard;
  const int64_t n = 1 << 20;
  const double s = 0.02;
  const std::vector<double> x = ToDoubles(Filled(n, Normal(0, "gpt_neox.embed_in.weight", s)));
  double m1 = 0, m2 = 0, m4 = 0;
  for (double v : x) {
    m1 += v;
    m2 += v * v;
    m4 += v * v * v * v;
  }
  m1 /= n;
  m2 /= n;
  m4 /= n;
  EXPECT_NEAR(m1, 0.0, 5 * s / std::sqrt(double(n)));
  EXPECT_NEAR(m2, s * s, 5 * std::sqrt(2.0 / n) * s * s);  // var(x^2) = 2 s^4
  EXPECT_NEAR(m4 / (m2 * m2), 3.0, 5 * std::sqrt(24.0 / n));
  EXPECT_LT(KsStatistic(x, [s](double v) { return NormalCdf(v / s); }), KsCritical(n));
  // A wrong scale is caught: the same sample against normal(0, 1.01 s).
  EXPECT_GT(KsStatistic(x, [s](double v) { return NormalCdf(v / (1.01 * s)); }), KsCritical(n));
}

// uniform(lo, hi): mean (lo + hi) / 2, variance (hi - lo)^2 / 12, KS against
// the linear CDF, every value inside [lo, hi].
TEST(DistributionTest, UniformMomentsAndKolmogorovSmirnov) {
  c10::InferenceMode guard;
  const int64_t n = 1 << 20;
  const double lo = -0.05, hi = 0.05, w = hi - lo;
  const std::vector<double> x =
      ToDoubles(Filled(n, Uniform(0, "mlp.dense_h_to_4h.weight", lo, hi)));
  double m1 = 0, m2 = 0;
  for (double v : x) {
    ASSERT_GE(v, lo);
    ASSERT_LE(v, hi);
    m1 += v;
    m2 += v * v;
  }
  m1 /= n;
  m2 /= n;
  const double var = w * w / 12;
  EXPECT_NEAR(m1, 0.0, 5 * std::sqrt(var / n));
  // var(x^2) for uniform(-a, a) = a^4 (1/5 - 1/9).
  const double a = w / 2;
  EXPECT_NEAR(m2, var, 5 * std::sqrt(a * a * a * a * (1.0 / 5 - 1.0 / 9) / n));
  EXPECT_LT(KsStatistic(x, [&](double v) { return (v - lo) / w; }), KsCritical(n));
}

// Every scheme of METHODS.md through CreateRandomModel: every 2-D weight of
// a preset, divided by the std or bound WeightDistribution gives its shape,
// pooled, against the standard normal or uniform(-1, 1) CDF; norms 1,
// biases 0.
TEST(DistributionTest, EverySchemeKeepsItsDistribution) {
  c10::InferenceMode guard;
  auto preset = FindModelPreset("pythia-tiny");
  ASSERT_TRUE(preset.ok()) << preset.status();
  const double reference_std = preset->config.gpt_neox.initializer_range;
  // A larger vocabulary: ~620k values in all, square and oblong weights.
  ModelConfig config = preset->config;
  config.gpt_neox.vocab_size = 4096;
  for (const char* text : {"reference", "normal(0.05)", "uniform(0.1)", "xavier_uniform",
                           "xavier_normal", "kaiming_normal"}) {
    SCOPED_TRACE(text);
    const InitScheme scheme = *ParseInitScheme(text);
    auto model = CreateRandomModel(config, scheme, 11, c10::Device(c10::kCPU), c10::kFloat);
    ASSERT_TRUE(model.ok()) << model.status();
    std::vector<double> pooled;
    bool uniform = false;
    for (const auto& [name, tensor] : (*model)->parameters().items()) {
      if (tensor.dim() != 2) {
        const double want = absl::EndsWith(name, ".bias") ? 0.0 : 1.0;
        EXPECT_TRUE(at::all(tensor == want).item<bool>()) << name;
        continue;
      }
      const InitDistribution dist =
          WeightDistribution(scheme, reference_std, tensor.size(1), tensor.size(0));
      uniform = dist.uniform;
      const std::vector<double> x = ToDoubles(tensor);
      for (double v : x) pooled.push_back(v / dist.scale);
    }
    ASSERT_GT(pooled.size(), 600000u);
    const double d = uniform ? KsStatistic(pooled, [](double z) { return (z + 1) / 2; })
                             : KsStatistic(pooled, NormalCdf);
    EXPECT_LT(d, KsCritical(pooled.size())) << pooled.size() << " values";
  }
}

// Mamba's and Mamba-2's own random parameters, drawn from the counter
// generator (they came from a torch CPU generator before, copied to the
// device): under `reference`, dt_proj.weight ~ uniform(+-dt_rank^-0.5 *
// time_step_scale), conv1d and out_proj ~ uniform(+-1 / sqrt(fan_in))
// (kaiming_uniform, a = sqrt 5); under every scheme softplus(dt bias) is
// log-uniform on [time_step_min, time_step_max] (the floor is below min).
// KS against those CDFs, pooled over layers; the uniform weights are the
// parameter's own counter draws, element for element; a deeper model has
// the same values in the layers both have.
TEST(DistributionTest, SsmOwnParametersKeepTheirDistributions) {
  c10::InferenceMode guard;
  auto mamba = FindModelPreset("mamba-130m");
  auto mamba2 = FindModelPreset("mamba2-130m");
  ASSERT_TRUE(mamba.ok() && mamba2.ok());
  ModelConfig m1 = mamba->config;
  m1.mamba.vocab_size = 256;
  m1.mamba.num_hidden_layers = 2;
  ModelConfig m2 = mamba2->config;
  m2.mamba2.vocab_size = 256;
  m2.mamba2.num_hidden_layers = 4;
  m2.mamba2.head_dim = 4;  // 384 heads a layer: 1536 dt biases in all
  m2.mamba2.num_heads = m2.mamba2.intermediate_size() / 4;
  const uint64_t seed = 5;
  for (const ModelConfig& config : {m1, m2}) {
    SCOPED_TRACE(config.architecture);
    const bool is_mamba = config.architecture == "mamba";
    const double t_min = is_mamba ? config.mamba.time_step_min : config.mamba2.time_step_min;
    const double t_max = is_mamba ? config.mamba.time_step_max : config.mamba2.time_step_max;
    const double dt_std =
        is_mamba ? std::pow(double(config.mamba.dt_rank()), -0.5) * config.mamba.time_step_scale
                 : 0;
    for (const char* text : {"reference", "xavier_normal"}) {
      SCOPED_TRACE(text);
      const InitScheme scheme = *ParseInitScheme(text);
      const bool reference = scheme.kind == InitScheme::Kind::kReference;
      auto model = CreateRandomModel(config, scheme, seed, c10::Device(c10::kCPU), c10::kFloat);
      ASSERT_TRUE(model.ok()) << model.status();
      std::vector<double> log_dt, uniform;  // uniform: value / bound
      for (const auto& [name, tensor] : (*model)->parameters().items()) {
        if (absl::EndsWith(name, ".dt_proj.bias") || absl::EndsWith(name, ".dt_bias")) {
          // softplus in double: log(1 + e^b).
          for (double b : ToDoubles(tensor)) log_dt.push_back(std::log(std::log1p(std::exp(b))));
          continue;
        }
        double bound = 0;
        if (reference && absl::EndsWith(name, ".dt_proj.weight")) bound = dt_std;
        if (reference &&
            (absl::EndsWith(name, ".conv1d.weight") || absl::EndsWith(name, ".out_proj.weight"))) {
          const int64_t receptive = tensor.dim() == 3 ? tensor.size(2) : 1;
          bound = 1.0 / std::sqrt(double(tensor.size(1) * receptive));
        }
        if (bound == 0) continue;
        EXPECT_TRUE(at::equal(tensor.reshape({-1}),
                              Filled(tensor.numel(), Uniform(seed, name, -bound, bound))))
            << name;
        for (double v : ToDoubles(tensor)) {
          ASSERT_LE(std::fabs(v), bound * (1 + 1e-7)) << name;
          uniform.push_back(v / bound);
        }
      }
      ASSERT_GE(log_dt.size(), 1536u);
      const double lo = std::log(t_min), hi = std::log(t_max);
      double mean = 0;
      for (double x : log_dt) mean += x;
      mean /= log_dt.size();
      EXPECT_NEAR(mean, (lo + hi) / 2, 5 * (hi - lo) / std::sqrt(12.0 * log_dt.size()));
      EXPECT_LT(KsStatistic(log_dt, [&](double x) { return (x - lo) / (hi - lo); }),
                KsCritical(log_dt.size()))
          << log_dt.size() << " dt biases";
      if (!reference) continue;
      ASSERT_GT(uniform.size(), 100000u);
      EXPECT_LT(KsStatistic(uniform, [](double z) { return (z + 1) / 2; }),
                KsCritical(uniform.size()))
          << uniform.size() << " values";
    }
    // One layer more: the layers both have hold the same values.
    ModelConfig deeper = config;
    if (is_mamba) {
      deeper.mamba.num_hidden_layers += 1;
    } else {
      deeper.mamba2.num_hidden_layers += 1;
    }
    auto a = CreateRandomModel(config, InitScheme{}, seed, c10::Device(c10::kCPU), c10::kFloat);
    auto b = CreateRandomModel(deeper, InitScheme{}, seed, c10::Device(c10::kCPU), c10::kFloat);
    ASSERT_TRUE(a.ok() && b.ok());
    for (const auto& [name, tensor] : (*a)->parameters().items()) {
      EXPECT_TRUE(at::equal(tensor, (*b)->parameters().Get(name))) << name;
    }
  }
}

// Pearson correlation of two equally long samples.
double Correlation(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ma += a[i];
    mb += b[i];
  }
  ma /= a.size();
  mb /= b.size();
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// Chi-square quantile at 1 - alpha by Wilson-Hilferty, z = the normal
// quantile (3.0902 for alpha = 0.001).
double ChiSquareCritical(double dof, double z) {
  const double h = 2.0 / (9.0 * dof);
  return dof * std::pow(1 - h + z * std::sqrt(h), 3);
}

// Same name, other indices: no serial correlation at lags within a Philox
// block (1..3) and across blocks (4, 5, 8, 4096), and pairs (x_i, x_i+1)
// spread evenly over a 16 x 16 grid (chi-square at alpha = 0.001).
TEST(IndependenceTest, SameNameOtherIndex) {
  c10::InferenceMode guard;
  const int64_t n = 1 << 20;
  const std::vector<double> x = ToDoubles(Filled(n + 4096, Uniform(0, "w", 0, 1)));
  for (int lag : {1, 2, 3, 4, 5, 8, 4096}) {
    const std::vector<double> a(x.begin(), x.begin() + n), b(x.begin() + lag, x.begin() + lag + n);
    EXPECT_LT(std::fabs(Correlation(a, b)), 5 / std::sqrt(double(n))) << "lag " << lag;
  }
  std::vector<double> bins(256, 0);
  for (int64_t i = 0; i + 1 < n; i += 2) {
    // x may round up to 1.0f: the top bin holds it.
    const int row = std::min(15, static_cast<int>(x[i] * 16));
    const int col = std::min(15, static_cast<int>(x[i + 1] * 16));
    bins[row * 16 + col] += 1;
  }
  const double expected = (n / 2) / 256.0;
  double chi2 = 0;
  for (double c : bins) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, ChiSquareCritical(255, 3.0902));
}

// Other names (one character apart, the usual case between layers) and
// other seeds give uncorrelated streams whose words agree in half their bits.
TEST(IndependenceTest, OtherNamesAndSeeds) {
  c10::InferenceMode guard;
  const int64_t n = 1 << 18;
  const std::string base = "gpt_neox.layers.1.attention.dense.weight";
  struct Other {
    uint64_t seed;
    std::string name;
  };
  const Other others[] = {{0, "gpt_neox.layers.2.attention.dense.weight"},
                          {0, "gpt_neox.layers.1.attention.dense.weighs"},
                          {0, "gpt_neox.layers.11.attention.dense.weight"},
                          {1, base},
                          {1ull << 32, base}};
  const std::vector<double> a = ToDoubles(Filled(n, Normal(0, base, 1)));
  const uint64_t key_a = ParameterDraws(0, base).key();
  for (const Other& other : others) {
    SCOPED_TRACE(other.name + " seed " + std::to_string(other.seed));
    const std::vector<double> b = ToDoubles(Filled(n, Normal(other.seed, other.name, 1)));
    EXPECT_LT(std::fabs(Correlation(a, b)), 5 / std::sqrt(double(n)));
    const uint64_t key_b = ParameterDraws(other.seed, other.name).key();
    int64_t same_bits = 0;
    const int64_t blocks = n / 4;
    for (int64_t g = 0; g < blocks; ++g) {
      const cr::Block x = cr::BlockAt(key_a, g), y = cr::BlockAt(key_b, g);
      for (int j = 0; j < 4; ++j) same_bits += 32 - __builtin_popcount(x.w[j] ^ y.w[j]);
    }
    const double bits = 128.0 * blocks;
    EXPECT_NEAR(same_bits / bits, 0.5, 5 * 0.5 / std::sqrt(bits));
  }
}

// No two parameters of the largest presets, under seeds 0..3, share a key.
TEST(IndependenceTest, NoKeyCollisionsInLargePresets) {
  std::set<uint64_t> keys;
  std::set<std::string> pairs;  // (seed, name); Mamba and Mamba-2 share names
  for (const char* preset_name : {"pythia-2.8b", "gpt-neo-2.7b", "mamba-2.8b", "mamba2-2.7b"}) {
    auto preset = FindModelPreset(preset_name);
    ASSERT_TRUE(preset.ok()) << preset.status();
    // The names only: meta tensors hold no memory.
    auto model = CreateEmptyModel(preset->config, c10::Device(c10::kMeta), c10::kBFloat16);
    ASSERT_TRUE(model.ok()) << model.status();
    for (uint64_t seed = 0; seed < 4; ++seed) {
      for (const auto& [name, tensor] : (*model)->parameters().items()) {
        keys.insert(ParameterDraws(seed, name).key());
        pairs.insert(std::to_string(seed) + "/" + name);
      }
    }
  }
  EXPECT_GT(pairs.size(), 4000u);
  EXPECT_EQ(keys.size(), pairs.size());
}

// A value depends on (seed, name, index) only: a model with one layer more
// has the same weights in the layers both have, whatever the parameter order,
// and a prefix of a fill is the fill of the shorter tensor.
TEST(IndependenceTest, ValuesDependOnlyOnSeedNameIndex) {
  c10::InferenceMode guard;
  auto preset = FindModelPreset("pythia-tiny");
  ASSERT_TRUE(preset.ok());
  ModelConfig deeper = preset->config;
  deeper.gpt_neox.num_hidden_layers += 1;
  const InitScheme scheme = *ParseInitScheme("xavier_uniform");
  auto a = CreateRandomModel(preset->config, scheme, 4, c10::Device(c10::kCPU), c10::kFloat);
  auto b = CreateRandomModel(deeper, scheme, 4, c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [name, tensor] : (*a)->parameters().items()) {
    EXPECT_TRUE(at::equal(tensor, (*b)->parameters().Get(name))) << name;
  }
  // reference = normal(0, initializer_range) of the parameter's own key.
  auto reference =
      CreateRandomModel(preset->config, InitScheme{}, 4, c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(reference.ok());
  const std::string name = "gpt_neox.layers.1.mlp.dense_h_to_4h.weight";
  const at::Tensor w = (*reference)->parameters().Get(name);
  EXPECT_TRUE(
      at::equal(w.reshape({-1}),
                Filled(w.numel(), Normal(4, name, preset->config.gpt_neox.initializer_range))));
  const cr::FillSpec spec = Normal(4, "x", 1);
  const at::Tensor whole = Filled(1001, spec);
  for (int64_t k : {1, 2, 3, 5, 998}) {
    EXPECT_TRUE(at::equal(Filled(k, spec), whole.narrow(0, 0, k))) << k;
    EXPECT_EQ(whole[k].item<float>(), cr::ValueAt(spec, k)) << k;
  }
}

// bf16, fp16 and fp64 fills are the float32 fill rounded to nearest (by
// ATen's own conversion), for both distributions.
TEST(DtypeTest, OtherDtypesAreTheFloat32ValuesRounded) {
  c10::InferenceMode guard;
  for (const cr::FillSpec& spec : {Normal(2, "a", 0.7), Uniform(2, "b", -3, 1)}) {
    const at::Tensor f32 = Filled(10007, spec);
    for (c10::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kDouble}) {
      EXPECT_TRUE(at::equal(Filled(10007, spec, dtype), f32.to(dtype))) << c10::toString(dtype);
    }
  }
}

// A whole model in bf16 holds its float32 weights rounded, including the
// SSMs' own parameters (A_log, D, dt bias, and under reference their
// conv1d / out_proj / dt_proj bounds).
TEST(DtypeTest, ModelsInBf16AreTheirFloat32WeightsRounded) {
  c10::InferenceMode guard;
  for (const char* preset_name : {"pythia-tiny", "gpt-neo-tiny", "mamba-tiny", "mamba2-tiny"}) {
    SCOPED_TRACE(preset_name);
    auto preset = FindModelPreset(preset_name);
    ASSERT_TRUE(preset.ok());
    const InitScheme scheme;  // reference
    auto f32 = CreateRandomModel(preset->config, scheme, 9, c10::Device(c10::kCPU), c10::kFloat);
    auto bf16 =
        CreateRandomModel(preset->config, scheme, 9, c10::Device(c10::kCPU), c10::kBFloat16);
    ASSERT_TRUE(f32.ok() && bf16.ok());
    for (const auto& [name, tensor] : (*f32)->parameters().items()) {
      EXPECT_TRUE(at::equal(tensor.to(at::kBFloat16), (*bf16)->parameters().Get(name))) << name;
    }
  }
}

}  // namespace
}  // namespace layerflow::worker

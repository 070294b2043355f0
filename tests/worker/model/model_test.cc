// GPT-NeoX: seeded init schemes, and every layer's hidden states against the
// independent float64 reference (tests/worker/testing/naive_reference.cc).
#include <algorithm>
#include <cmath>
#include <random>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/worker/testing/naive_reference.h"
#include "tests/worker/testing/torch_export.h"
#include "worker/model/language_model.h"
#include "worker/model/init.h"
#include "worker/model/model_config.h"
#include "worker/model/torch_status.h"

namespace layerflow::worker {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::Eq;
using testing::ExportToNaive;
using testing::NaiveForward;
using testing::ToDoubles;

GptNeoXConfig Tiny() {
  auto preset = FindModelPreset("pythia-tiny");
  EXPECT_TRUE(preset.ok());
  return preset->config.gpt_neox;
}

ModelConfig Neox(const GptNeoXConfig& config) {
  ModelConfig c;
  c.architecture = "gpt_neox";
  c.gpt_neox = config;
  return c;
}

std::unique_ptr<LanguageModel> Make(const GptNeoXConfig& config, const std::string& scheme,
                                    uint64_t seed, c10::ScalarType dtype = c10::kFloat) {
  auto parsed = ParseInitScheme(scheme);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  auto model = CreateRandomModel(Neox(config), *parsed, seed, c10::Device(c10::kCPU), dtype);
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

TEST(GptNeoXModelTest, ParameterNamesFollowHuggingFace) {
  auto model = Make(Tiny(), "reference", 1);
  const auto& items = model->parameters().items();
  // embed_in + 12 per layer + final norm (2) + embed_out.
  ASSERT_EQ(items.size(), 1u + 12u * 2 + 2 + 1);
  EXPECT_EQ(items[0].first, "gpt_neox.embed_in.weight");
  EXPECT_EQ(items[1].first, "gpt_neox.layers.0.input_layernorm.weight");
  EXPECT_EQ(items[5].first, "gpt_neox.layers.0.attention.query_key_value.weight");
  EXPECT_EQ(items.back().first, "embed_out.weight");
  EXPECT_EQ(model->parameters().Get("gpt_neox.layers.1.attention.query_key_value.weight").sizes(),
            (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(model->parameters().Get("gpt_neox.layers.1.mlp.dense_4h_to_h.weight").sizes(),
            (std::vector<int64_t>{64, 256}));
}

// Empirical moments of every 2-D weight match the scheme; norms 1, biases 0.
TEST(GptNeoXInitTest, EmpiricalMomentsMatchEachScheme) {
  const GptNeoXConfig config = Tiny();
  for (const char* text : {"reference", "normal(0.05)", "uniform(0.1)", "xavier_uniform",
                           "xavier_normal", "kaiming_normal"}) {
    SCOPED_TRACE(text);
    const InitScheme scheme = *ParseInitScheme(text);
    auto model = Make(config, text, 123);
    for (const auto& [name, tensor] : model->parameters().items()) {
      SCOPED_TRACE(name);
      const std::vector<double> w = ToDoubles(tensor);
      if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
        EXPECT_TRUE(std::all_of(w.begin(), w.end(), [](double x) { return x == 0; }));
        continue;
      }
      if (name.find("norm") != std::string::npos) {
        EXPECT_TRUE(std::all_of(w.begin(), w.end(), [](double x) { return x == 1; }));
        continue;
      }
      const InitDistribution dist =
          WeightDistribution(scheme, config.initializer_range, tensor.size(1), tensor.size(0));
      double mean = 0, sq = 0, max_abs = 0;
      for (double x : w) {
        mean += x;
        sq += x * x;
        max_abs = std::max(max_abs, std::abs(x));
      }
      mean /= w.size();
      const double std = std::sqrt(sq / w.size() - mean * mean);
      const double expected_std = dist.uniform ? dist.scale / std::sqrt(3.0) : dist.scale;
      // >= 4096 draws per weight: the std's sampling error is < 2%.
      EXPECT_NEAR(std, expected_std, 0.05 * expected_std);
      EXPECT_NEAR(mean, 0.0, 0.1 * expected_std);
      if (dist.uniform) {
        EXPECT_LE(max_abs, dist.scale);
        EXPECT_GT(max_abs, 0.99 * dist.scale);
      }
    }
  }
  // Hand-computed scales for a [256, 64] weight (mlp.dense_h_to_4h).
  EXPECT_DOUBLE_EQ(WeightDistribution(*ParseInitScheme("xavier_uniform"), 0.02, 64, 256).scale,
                   std::sqrt(6.0 / 320));
  EXPECT_DOUBLE_EQ(WeightDistribution(*ParseInitScheme("kaiming_normal"), 0.02, 64, 256).scale,
                   std::sqrt(2.0 / 64));
}

TEST(GptNeoXInitTest, SameSeedSameWeightsOtherSeedOther) {
  c10::InferenceMode guard;
  auto a = Make(Tiny(), "xavier_normal", 5);
  auto b = Make(Tiny(), "xavier_normal", 5);
  auto c = Make(Tiny(), "xavier_normal", 6);
  // Other dtypes start from the same draws: bf16 == bf16(fp32 weights).
  auto bf16 = Make(Tiny(), "xavier_normal", 5, c10::kBFloat16);
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    const auto& [name, wa] = a->parameters().items()[i];
    SCOPED_TRACE(name);
    EXPECT_TRUE(at::equal(wa, b->parameters().items()[i].second));
    EXPECT_TRUE(at::equal(wa.to(at::kBFloat16), bf16->parameters().items()[i].second));
    if (wa.dim() == 2) {
      EXPECT_FALSE(at::equal(wa, c->parameters().items()[i].second));
    }
  }
}

// Max |ours - reference| over one representation point, relative to the
// reference's max |value|.
double RelativeMaxError(const std::vector<double>& ours, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(ours[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

std::vector<int32_t> RandomIds(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

void ExpectMatchesNaiveForward(const GptNeoXConfig& config, const std::string& scheme) {
  auto model = Make(config, scheme, 2024);
  const std::vector<int32_t> ids = RandomIds(41, config.vocab_size, 9);
  const auto naive = NaiveForward(ExportToNaive(*model), ids);

  std::vector<std::vector<double>> ours;
  at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  model->Forward(input, [&](int64_t point, const at::Tensor& hidden) {
    EXPECT_EQ(point, static_cast<int64_t>(ours.size()));
    EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{1, 41, config.hidden_size}));
    ours.push_back(ToDoubles(hidden));
  });
  ASSERT_EQ(ours.size(), naive.size());
  ASSERT_EQ(ours.size(), static_cast<size_t>(config.num_hidden_layers + 2));
  for (size_t p = 0; p < ours.size(); ++p) {
    const double err = RelativeMaxError(ours[p], naive[p]);
    EXPECT_LE(err, 1e-4) << "point " << p;
    std::printf("  %s point %zu: max rel err %.3g\n", scheme.c_str(), p, err);
  }
}

TEST(GptNeoXForwardTest, ParallelResidualMatchesFloat64Reference) {
  ExpectMatchesNaiveForward(Tiny(), "reference");
  // Larger weights make attention sharper and the layers less trivial.
  ExpectMatchesNaiveForward(Tiny(), "xavier_normal");
}

TEST(GptNeoXForwardTest, SequentialResidualMatchesFloat64Reference) {
  GptNeoXConfig config = Tiny();
  config.use_parallel_residual = false;
  ExpectMatchesNaiveForward(config, "xavier_normal");
}

TEST(GptNeoXForwardTest, FullRotaryNoBiasAndThreeLayers) {
  GptNeoXConfig config = Tiny();
  config.rotary_pct = 1.0;
  config.attention_bias = false;
  config.num_hidden_layers = 3;
  ExpectMatchesNaiveForward(config, "xavier_normal");
}

TEST(GptNeoXForwardTest, BatchEqualsPromptsOneByOne) {
  c10::InferenceMode guard;
  auto model = Make(Tiny(), "xavier_normal", 3);
  const std::vector<int32_t> a = RandomIds(17, 512, 1), b = RandomIds(17, 512, 2);
  std::vector<int64_t> both(a.begin(), a.end());
  both.insert(both.end(), b.begin(), b.end());
  std::vector<at::Tensor> batched, single_a, single_b;
  model->Forward(at::tensor(both).view({2, 17}),
                 [&](int64_t, const at::Tensor& h) { batched.push_back(h); });
  model->Forward(at::tensor(std::vector<int64_t>(a.begin(), a.end())).view({1, 17}),
                 [&](int64_t, const at::Tensor& h) { single_a.push_back(h); });
  model->Forward(at::tensor(std::vector<int64_t>(b.begin(), b.end())).view({1, 17}),
                 [&](int64_t, const at::Tensor& h) { single_b.push_back(h); });
  for (size_t p = 0; p < batched.size(); ++p) {
    EXPECT_TRUE(at::allclose(batched[p][0], single_a[p][0], 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(batched[p][1], single_b[p][0], 1e-5, 1e-6));
  }
}

TEST(GptNeoXForwardTest, Bf16AndFp16StayCloseToFp32) {
  c10::InferenceMode guard;
  const std::vector<int32_t> ids = RandomIds(33, 512, 4);
  at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  std::vector<at::Tensor> ref;
  Make(Tiny(), "reference", 8)->Forward(input, [&](int64_t, const at::Tensor& h) {
    ref.push_back(h);
  });
  for (c10::ScalarType dtype : {c10::kBFloat16, c10::kHalf}) {
    std::vector<at::Tensor> low;
    Make(Tiny(), "reference", 8, dtype)->Forward(input, [&](int64_t, const at::Tensor& h) {
      EXPECT_EQ(h.scalar_type(), dtype);
      low.push_back(h.to(at::kFloat));
    });
    ASSERT_EQ(low.size(), ref.size());
    for (size_t p = 0; p < ref.size(); ++p) {
      const double err =
          (low[p] - ref[p]).abs().max().item<double>() / ref[p].abs().max().item<double>();
      EXPECT_LT(err, 0.05) << c10::toString(dtype) << " point " << p;
    }
  }
}

TEST(GptNeoXModelTest, RejectsInconsistentConfig) {
  GptNeoXConfig config = Tiny();
  config.num_attention_heads = 5;
  auto model =
      CreateRandomModel(Neox(config), InitScheme{}, 0, c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("hidden_size"), std::string::npos);
}

TEST(GptNeoXModelTest, ErrorsInsideABlockNameTheLayer) {
  auto model = Make(Tiny(), "reference", 1);
  at::Tensor input = at::zeros({1, 4}, at::kLong);
  try {
    model->Forward(input, [](int64_t point, const at::Tensor&) {
      if (point == 2) throw std::runtime_error("boom");
    });
    FAIL() << "no exception";
  } catch (const LayerError& e) {
    EXPECT_EQ(e.layer(), 2);
    EXPECT_STREQ(e.what(), "boom");
  }
}

// The one exception edge (torch_status.h): each kind of failure gets its
// most specific code and a message without LibTorch's backtrace.
TEST(TorchStatusTest, EachFailureGetsItsCode) {
  using ::testing::HasSubstr;
  using ::testing::Not;
  const absl::Status oom = GuardTorch("model m", []() -> absl::Status {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2 GiB");
    return absl::OkStatus();
  });
  EXPECT_THAT(oom, StatusIs(absl::StatusCode::kResourceExhausted, "model m: CUDA out of memory"));
  EXPECT_THAT(std::string(oom.message()), Not(HasSubstr("Exception raised from")));

  const absl::Status torch = GuardTorch("model m", []() -> absl::Status {
    TORCH_CHECK(false, "shapes differ");
    return absl::OkStatus();
  });
  EXPECT_THAT(torch, StatusIs(absl::StatusCode::kInternal, Eq("model m: shapes differ")));

  const absl::StatusOr<int> host =
      GuardTorch("model m", []() -> absl::StatusOr<int> { throw std::bad_alloc(); });
  EXPECT_THAT(host.status(),
              StatusIs(absl::StatusCode::kResourceExhausted, Eq("model m: out of memory")));

  const absl::Status plain =
      GuardTorch("", []() -> absl::Status { throw std::runtime_error("x"); });
  EXPECT_THAT(plain, StatusIs(absl::StatusCode::kInternal, Eq("x")));
}

// Regression: out of memory inside a forward was reported as INTERNAL (the
// forward's LayerError hid what had been thrown), so a job short of memory
// looked like a bug rather than a resource limit. Now RESOURCE_EXHAUSTED,
// naming the representation point.
TEST(TorchStatusTest, OutOfMemoryInsideAForwardIsResourceExhausted) {
  auto model = Make(Tiny(), "reference", 1);
  const at::Tensor input = at::zeros({1, 4}, at::kLong);
  auto forward = [&](bool oom) {
    return GuardTorch(
        "model tiny, prompt 0",
        [&]() -> absl::Status {
          model->Forward(input, [oom](int64_t point, const at::Tensor&) {
            if (point != 2) return;
            if (oom) TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory");
            TORCH_CHECK(false, "boom");
          });
          return absl::OkStatus();
        },
        [&](int64_t point) { return model->PointName(point); });
  };
  const absl::Status oom = forward(true);
  EXPECT_THAT(oom, StatusIs(absl::StatusCode::kResourceExhausted,
                            Eq("model tiny, prompt 0: layer 2 (gpt_neox.layers.1): "
                               "CUDA out of memory")));
  const absl::Status other = forward(false);
  EXPECT_THAT(other, StatusIs(absl::StatusCode::kInternal,
                              Eq("model tiny, prompt 0: layer 2 (gpt_neox.layers.1): boom")));
}

}  // namespace
}  // namespace layerflow::worker

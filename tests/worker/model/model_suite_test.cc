// The conformance suite every architecture passes (GPT-NeoX, GPT-Neo, Mamba,
// Mamba-2), on the test-size presets with the published structure, plus the
// SSM scans held against the sequential recurrence in float64. Parity with
// transformers is tests/worker/checkpoint/checkpoint_parity_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"
#include "worker/model/config_json.h"
#include "worker/model/language_model.h"
#include "worker/model/mamba.h"
#include "worker/model/mamba2.h"

namespace layerflow::worker {
namespace {

const c10::Device kCpu(c10::kCPU);

std::unique_ptr<LanguageModel> Make(const std::string& preset_name, uint64_t seed,
                                    const std::string& scheme = "reference") {
  auto preset = FindModelPreset(preset_name);
  EXPECT_TRUE(preset.ok()) << preset.status();
  auto model = CreateRandomModel(preset->config, *ParseInitScheme(scheme), seed, kCpu, c10::kFloat);
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

std::vector<at::Tensor> Points(const LanguageModel& model, const at::Tensor& ids) {
  std::vector<at::Tensor> points;
  model.Forward(ids, [&](int64_t point, const at::Tensor& h) {
    EXPECT_EQ(point, static_cast<int64_t>(points.size()));
    points.push_back(h.to(at::kFloat).clone());
  });
  return points;
}

double MaxRel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

class ModelSuite : public ::testing::TestWithParam<std::string> {};

// A float64 model is the reference of the GPU tests and the conformance
// suite, so no step may hand it back in float32 (the SSMs' float32 residual
// did): every point of a float64 forward is float64, and it agrees with the
// float32 model of the same seed to float32 precision (the weights are drawn
// in float32, so both start from the same values).
TEST_P(ModelSuite, Float64ModelStaysFloat64) {
  c10::InferenceMode guard;
  const ModelConfig config = FindModelPreset(GetParam())->config;
  auto wide = CreateRandomModel(config, InitScheme{}, 3, kCpu, c10::kDouble);
  ASSERT_TRUE(wide.ok()) << wide.status();
  const at::Tensor ids = at::randint(0, 256, {2, 41}, at::kLong);
  std::vector<at::Tensor> want;
  (*wide)->Forward(ids, [&](int64_t, const at::Tensor& h) {
    EXPECT_EQ(h.scalar_type(), at::kDouble) << GetParam();
    want.push_back(h.clone());
  });
  auto narrow = CreateRandomModel(config, InitScheme{}, 3, kCpu, c10::kFloat);
  ASSERT_TRUE(narrow.ok());
  std::vector<at::Tensor> got;
  (*narrow)->Forward(ids, [&](int64_t, const at::Tensor& h) { got.push_back(h.to(at::kDouble)); });
  ASSERT_EQ(got.size(), want.size());
  for (size_t p = 0; p < got.size(); ++p) {
    EXPECT_LE(MaxRel(got[p], want[p]), 1e-4) << GetParam() << " point " << p;
  }
}

TEST_P(ModelSuite, ExposesEveryPointWithTheResidualShape) {
  c10::InferenceMode guard;
  auto model = Make(GetParam(), 1);
  at::Tensor ids = at::randint(0, 256, {2, 37}, at::kLong);
  std::vector<at::Tensor> points = Points(*model, ids);
  ASSERT_EQ(points.size(), static_cast<size_t>(model->num_layers() + 2));
  for (const at::Tensor& h : points) {
    EXPECT_EQ(h.sizes(), (std::vector<int64_t>{2, 37, model->hidden_size()}));
    EXPECT_TRUE(at::isfinite(h).all().item<bool>());
  }
  EXPECT_EQ(model->Logits(points.back()).sizes(),
            (std::vector<int64_t>{2, 37, model->vocab_size()}));
  EXPECT_NE(model->PointName(1).find("layer 1"), std::string::npos) << model->PointName(1);
}

// No position sees the future: changing token t leaves every point of every
// earlier position unchanged (the local window, the conv padding, the scans'
// chunk boundaries and padding all included).
TEST_P(ModelSuite, IsCausal) {
  c10::InferenceMode guard;
  auto model = Make(GetParam(), 2);
  at::Tensor ids = at::randint(0, 256, {1, 45}, at::kLong);
  for (int64_t t : {1, 20, 33, 44}) {
    at::Tensor changed = ids.clone();
    changed[0][t] = (ids[0][t].item<int64_t>() + 7) % 256;
    std::vector<at::Tensor> a = Points(*model, ids);
    std::vector<at::Tensor> b = Points(*model, changed);
    for (size_t p = 0; p < a.size(); ++p) {
      EXPECT_LE(MaxRel(b[p].narrow(1, 0, t), a[p].narrow(1, 0, t)), 1e-6)
          << GetParam() << " point " << p << " t " << t;
      EXPECT_GT((b[p].narrow(1, t, 1) - a[p].narrow(1, t, 1)).abs().max().item<double>(), 0)
          << GetParam() << " point " << p << " t " << t << ": the change must show at t";
    }
  }
}

// Prompts of a batch do not mix.
TEST_P(ModelSuite, BatchRowsAreIndependent) {
  c10::InferenceMode guard;
  auto model = Make(GetParam(), 3);
  at::Tensor ids = at::randint(0, 256, {3, 29}, at::kLong);
  std::vector<at::Tensor> batch = Points(*model, ids);
  for (int64_t row = 0; row < 3; ++row) {
    std::vector<at::Tensor> single = Points(*model, ids.narrow(0, row, 1));
    for (size_t p = 0; p < batch.size(); ++p) {
      EXPECT_LE(MaxRel(batch[p].narrow(0, row, 1), single[p]), 1e-5)
          << GetParam() << " row " << row << " point " << p;
    }
  }
}

// Seeded init: equal seeds give equal weights (and replicas equal outputs),
// other seeds other weights; norms 1, biases 0, the SSM structure its own.
TEST_P(ModelSuite, SeededInitIsDeterministicAndStructured) {
  c10::InferenceMode guard;
  auto a = Make(GetParam(), 5, "xavier_normal");
  auto b = Make(GetParam(), 5, "xavier_normal");
  auto c = Make(GetParam(), 6, "xavier_normal");
  bool any_differs = false;
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    const auto& [name, ta] = a->parameters().items()[i];
    const at::Tensor& tb = b->parameters().items()[i].second;
    const at::Tensor& tc = c->parameters().items()[i].second;
    EXPECT_TRUE(at::equal(ta, tb)) << name;
    any_differs |= !at::equal(ta, tc);
    if (ta.dim() == 1 && absl::EndsWith(name, ".weight")) {
      EXPECT_TRUE(at::equal(ta, at::ones_like(ta))) << name << ": norms start at 1";
    } else if (absl::EndsWith(name, ".bias") && !absl::StrContains(name, "dt_proj")) {
      EXPECT_TRUE(at::equal(ta, at::zeros_like(ta))) << name << ": biases start at 0";
    } else if (absl::EndsWith(name, ".A_log")) {
      const int64_t n = ta.size(-1);
      EXPECT_TRUE(at::allclose(ta, at::log(at::arange(1, n + 1, at::kFloat)).expand(ta.sizes())))
          << name << ": S4D-real A = -(1..N)";
    } else if (absl::EndsWith(name, ".D")) {
      EXPECT_TRUE(at::equal(ta, at::ones_like(ta))) << name;
    } else if (absl::EndsWith(name, "dt_proj.bias") || absl::EndsWith(name, ".dt_bias")) {
      at::Tensor dt = at::softplus(ta);
      EXPECT_GE(dt.min().item<double>(), 0.001 * (1 - 1e-4)) << name;
      EXPECT_LE(dt.max().item<double>(), 0.1 * (1 + 1e-4)) << name;
    }
  }
  EXPECT_TRUE(any_differs) << "another seed must give other weights";
  at::Tensor ids = at::randint(0, 256, {1, 9}, at::kLong);
  auto replica = a->Replicate(kCpu);
  std::vector<at::Tensor> pa = Points(*a, ids), pr = Points(*replica, ids);
  for (size_t p = 0; p < pa.size(); ++p) EXPECT_TRUE(at::equal(pa[p], pr[p])) << p;
}

TEST_P(ModelSuite, HalfPrecisionRunsStayClose) {
  c10::InferenceMode guard;
  auto preset = FindModelPreset(GetParam());
  auto fp32 = Make(GetParam(), 4);
  auto bf16 = CreateRandomModel(preset->config, InitScheme{}, 4, kCpu, c10::kBFloat16);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  at::Tensor ids = at::randint(0, 256, {1, 21}, at::kLong);
  std::vector<at::Tensor> a = Points(*fp32, ids), b = Points(**bf16, ids);
  for (size_t p = 0; p < a.size(); ++p) EXPECT_LE(MaxRel(b[p], a[p]), 0.1) << p;
}

INSTANTIATE_TEST_SUITE_P(Architectures, ModelSuite,
                         ::testing::Values("pythia-tiny", "gpt-neo-tiny", "mamba-tiny",
                                           "mamba2-tiny"));

// Every architecture has presets of the published sizes, each buildable.
TEST(ModelPresets, PublishedSizesOfEveryArchitecture) {
  for (const char* name : {"pythia-70m", "pythia-2.8b", "gpt-neo-125m", "gpt-neo-2.7b",
                           "mamba-130m", "mamba-2.8b", "mamba2-130m", "mamba2-2.7b"}) {
    auto preset = FindModelPreset(name);
    ASSERT_TRUE(preset.ok()) << name;
    EXPECT_TRUE(ValidateModelConfig(preset->config).ok()) << name;
  }
  EXPECT_EQ(FindModelPreset("mamba-2.8b")->config.num_layers(), 64);
  EXPECT_EQ(FindModelPreset("mamba2-2.7b")->config.mamba2.num_heads, 80);
  EXPECT_EQ(FindModelPreset("gpt-neo-2.7b")->config.gpt_neo.attention_layers[1], "local");
}

// ---------------------------------------------------------------------------
// The scans against the sequential recurrence, in float64.

TEST(MambaScan, ParallelScanEqualsTheSequentialRecurrence) {
  c10::InferenceMode guard;
  for (int64_t len : {1, 2, 7, 64, 100}) {
    at::Tensor a = at::rand({2, 3, len, 4}, at::kDouble);  // decays in (0, 1)
    at::Tensor b = at::randn({2, 3, len, 4}, at::kDouble);
    at::Tensor fast = MambaModel::ParallelScan(a, b);
    at::Tensor h = at::zeros({2, 3, 4}, at::kDouble);
    for (int64_t t = 0; t < len; ++t) {
      h = a.select(2, t) * h + b.select(2, t);
      EXPECT_LE((fast.select(2, t) - h).abs().max().item<double>(), 1e-12)
          << "len " << len << " t " << t;
    }
  }
}

// h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T ; y_t = h_t C_t + D_h x_t.
TEST(Mamba2Scan, ChunkScanEqualsTheSequentialRecurrence) {
  c10::InferenceMode guard;
  const int64_t batch = 2, seq = 37, heads = 3, head_dim = 4, state = 5;
  at::Tensor x = at::randn({batch, seq, heads, head_dim}, at::kDouble);
  at::Tensor dt = at::rand({batch, seq, heads}, at::kDouble) * 0.5 + 0.01;
  at::Tensor A = -at::rand({heads}, at::kDouble) * 3 - 0.1;
  at::Tensor B = at::randn({batch, seq, heads, state}, at::kDouble);
  at::Tensor C = at::randn({batch, seq, heads, state}, at::kDouble);
  at::Tensor D = at::randn({heads}, at::kDouble);
  at::Tensor expected = at::empty({batch, seq, heads, head_dim}, at::kDouble);
  at::Tensor h = at::zeros({batch, heads, head_dim, state}, at::kDouble);
  for (int64_t t = 0; t < seq; ++t) {
    at::Tensor decay = at::exp(dt.select(1, t) * A).unsqueeze(-1).unsqueeze(-1);
    at::Tensor input = (dt.select(1, t).unsqueeze(-1) * x.select(1, t)).unsqueeze(-1) *
                       B.select(1, t).unsqueeze(2);
    h = decay * h + input;
    expected.select(1, t).copy_((h * C.select(1, t).unsqueeze(2)).sum(-1) +
                                D.unsqueeze(-1) * x.select(1, t));
  }
  // Several chunks with a padded tail, an exact multiple, one chunk.
  for (int64_t chunk : {4, 8, 37, 64}) {
    at::Tensor y =
        Mamba2Model::ChunkScan(x.to(at::kFloat), dt.to(at::kFloat), A.to(at::kFloat),
                               B.to(at::kFloat), C.to(at::kFloat), D.to(at::kFloat), chunk);
    EXPECT_LE(MaxRel(y.to(at::kDouble), expected), 1e-5) << "chunk " << chunk;
  }
}

// ---------------------------------------------------------------------------
// Bad configs name the field.

TEST(ModelConfigErrors, NameTheField) {
  ModelConfig neo = FindModelPreset("gpt-neo-tiny")->config;
  // Either key of config.json fills attention_layers, so the message names both.
  neo.gpt_neo.attention_layers.pop_back();
  absl::Status s = ValidateModelConfig(neo);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "attention_types / attention_layers: expand to " +
                             std::to_string(neo.gpt_neo.attention_layers.size()) +
                             " layers, but num_layers is " + std::to_string(neo.gpt_neo.num_layers))
      << s;
  neo.gpt_neo.attention_layers.push_back("sliding");
  s = ValidateModelConfig(neo);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // The value may come from a checkpoint's config.json: not repeated (issue 14).
  EXPECT_EQ(s.message(), "attention_types / attention_layers: layer " +
                             std::to_string(neo.gpt_neo.num_layers - 1) +
                             " is neither \"global\" nor \"local\"")
      << s;

  ModelConfig m2 = FindModelPreset("mamba2-tiny")->config;
  m2.mamba2.head_dim = 7;
  s = ValidateModelConfig(m2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("num_heads"), std::string::npos) << s;

  ModelConfig unknown;
  unknown.architecture = "rwkv";
  s = ValidateModelConfig(unknown);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown 'rwkv'"), std::string::npos) << s;
}

TEST(CheckpointConfigJson, MambaSsmConfigPadsTheVocabulary) {
  auto c = ParseCheckpointConfigJson(
      R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
          "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
          "pad_vocab_size_multiple": 8})",
      "/m/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.architecture, "mamba");
  EXPECT_EQ(c->model.mamba.vocab_size, 50280);
  EXPECT_TRUE(c->mamba_ssm_naming);
  EXPECT_TRUE(c->tie_word_embeddings);

  auto m2 = ParseCheckpointConfigJson(
      R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "pad_vocab_size_multiple": 16,
          "ssm_cfg": {"layer": "Mamba2"}})",
      "/m2/config.json");
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_EQ(m2->model.architecture, "mamba2");
  EXPECT_EQ(m2->model.mamba2.vocab_size, 50288);
  EXPECT_EQ(m2->model.mamba2.num_heads, 24);
}

// Regression: a GPT-Neo config with the expanded attention_layers list and
// no attention_types passed the presence check but parsed to zero layers.
TEST(CheckpointConfigJson, GptNeoAttentionLayersListIsRead) {
  auto c = ParseCheckpointConfigJson(
      R"({"model_type": "gpt_neo", "vocab_size": 10, "hidden_size": 8, "num_layers": 3,
          "num_heads": 2, "attention_layers": ["global", "local", "global"]})",
      "/n/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.gpt_neo.attention_layers,
            (std::vector<std::string>{"global", "local", "global"}));
  EXPECT_TRUE(c->tie_word_embeddings) << "GPTNeoConfig ties by default";
  EXPECT_TRUE(ValidateModelConfig(c->model).ok()) << ValidateModelConfig(c->model);
}

TEST(CheckpointConfigJson, BareInfinityInTimeStepLimitIsRead) {
  auto c = ParseCheckpointConfigJson(
      R"({"model_type": "mamba2", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
          "num_heads": 1, "head_dim": 16, "time_step_limit": [0.0, Infinity]})",
      "/x/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_GE(c->model.mamba2.time_step_limit_max, 1e300);
}

TEST(CheckpointConfigJson, ErrorsNameTheFileAndKey) {
  auto hybrid = ParseCheckpointConfigJson(
      R"({"d_model": 8, "n_layer": 2, "vocab_size": 10, "attn_layer_idx": [1]})", "/h/config.json");
  EXPECT_EQ(hybrid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(hybrid.status().message().find("/h/config.json: attn_layer_idx"), std::string::npos)
      << hybrid.status();
  auto neo =
      ParseCheckpointConfigJson(R"({"model_type": "gpt_neo", "hidden_size": 8})", "/n/config.json");
  EXPECT_EQ(neo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(neo.status().message().find("attention_types"), std::string::npos) << neo.status();
  auto mamba = ParseCheckpointConfigJson(
      R"({"model_type": "mamba", "hidden_size": "big", "num_hidden_layers": 2})", "/m/config.json");
  EXPECT_EQ(mamba.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mamba.status().message().find("vocab_size"), std::string::npos) << mamba.status();
}

}  // namespace
}  // namespace layerflow::worker

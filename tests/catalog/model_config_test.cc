// Presets and their shapes (the published config.json of each hub repo) and
// the random-init schemes.
#include "catalog/model_config.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::catalog {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ModelPresetsTest, ShapesOfThePublishedSizes) {
  // EleutherAI/pythia-160m: 768 hidden, 12 layers, 12 heads, 3072 MLP.
  const ModelConfig pythia = FindModelPreset("pythia-160m")->config;
  EXPECT_EQ(pythia.architecture, "gpt_neox");
  EXPECT_EQ(pythia.num_layers(), 12);
  EXPECT_EQ(pythia.hidden_size(), 768);
  EXPECT_EQ(pythia.vocab_size(), 50304);
  EXPECT_EQ(pythia.gpt_neox.num_attention_heads, 12);
  EXPECT_EQ(pythia.gpt_neox.intermediate_size, 3072);
  EXPECT_DOUBLE_EQ(pythia.gpt_neox.rotary_pct, 0.25);
  // EleutherAI/gpt-neo-125m: alternating global / local attention, window 256.
  const ModelConfig neo = FindModelPreset("gpt-neo-125m")->config;
  EXPECT_EQ(neo.architecture, "gpt_neo");
  EXPECT_EQ(neo.num_layers(), 12);
  EXPECT_EQ(neo.vocab_size(), 50257);
  EXPECT_EQ(neo.gpt_neo.ffn_size(), 3072);
  EXPECT_EQ(neo.gpt_neo.window_size, 256);
  ASSERT_EQ(neo.gpt_neo.attention_layers.size(), 12u);
  EXPECT_EQ(neo.gpt_neo.attention_layers[0], "global");
  EXPECT_EQ(neo.gpt_neo.attention_layers[1], "local");
  // state-spaces/mamba-130m-hf: 24 layers, d_inner 1536, dt_rank 48.
  const ModelConfig mamba = FindModelPreset("mamba-130m")->config;
  EXPECT_EQ(mamba.architecture, "mamba");
  EXPECT_EQ(mamba.num_layers(), 24);
  EXPECT_EQ(mamba.vocab_size(), 50280);
  EXPECT_EQ(mamba.mamba.intermediate_size(), 1536);
  EXPECT_EQ(mamba.mamba.dt_rank(), 48);
  EXPECT_EQ(mamba.mamba.state_size, 16);
  // state-spaces/mamba2-2.7b: 64 layers, 80 heads of 64, d_state 128.
  const ModelConfig mamba2 = FindModelPreset("mamba2-2.7b")->config;
  EXPECT_EQ(mamba2.architecture, "mamba2");
  EXPECT_EQ(mamba2.num_layers(), 64);
  EXPECT_EQ(mamba2.mamba2.num_heads, 80);
  EXPECT_EQ(mamba2.mamba2.head_dim, 64);
  EXPECT_EQ(mamba2.mamba2.conv_dim(), 2 * 2560 + 2 * 128);
}

TEST(ModelPresetsTest, TestSizesKeepThePublishedStructure) {
  const ModelConfig tiny = FindModelPreset("pythia-tiny")->config;
  EXPECT_EQ(tiny.num_layers(), 2);
  EXPECT_EQ(tiny.hidden_size(), 64);
  EXPECT_EQ(tiny.vocab_size(), 512);
  EXPECT_EQ(tiny.gpt_neox.intermediate_size, 256);
  const ModelConfig m2 = FindModelPreset("mamba2-tiny")->config;
  // num_heads * head_dim = expand * hidden_size.
  EXPECT_EQ(m2.mamba2.num_heads * m2.mamba2.head_dim, m2.mamba2.intermediate_size());
  EXPECT_EQ(m2.mamba2.chunk_size, 32);
  EXPECT_EQ(FindModelPreset("gpt-neo-tiny")->config.gpt_neo.window_size, 16);
}

TEST(ModelPresetsTest, EveryPresetIsFoundByNameAndOfAKnownArchitecture) {
  EXPECT_EQ(KnownArchitectures(),
            (std::vector<std::string>{"gpt_neox", "gpt_neo", "mamba", "mamba2"}));
  ASSERT_EQ(ModelPresets().size(), 24u);
  for (const ModelPreset& preset : ModelPresets()) {
    auto found = FindModelPreset(preset.name);
    ASSERT_TRUE(found.ok()) << preset.name;
    EXPECT_EQ(found->config.num_layers(), preset.config.num_layers());
    EXPECT_THAT(KnownArchitectures(), ::testing::Contains(preset.config.architecture));
  }
}

TEST(ModelPresetsTest, UnknownNameListsTheKnownOnes) {
  auto missing = FindModelPreset("pythia-7b");
  ASSERT_THAT(missing.status(),
              StatusIs(absl::StatusCode::kNotFound,
                       "unknown model preset 'pythia-7b'; known presets: pythia-tiny, "
                       "pythia-14m, pythia-70m"));
}

// Resized presets ("NAME?layers=..&width=..&heads=..&state=.."), the
// scaling sweeps' models: shapes worked out by hand from the published ones.
TEST(ModelPresetsTest, ResizedPresetsKeepTheFamilysRatios) {
  absl::StatusOr<ModelPreset> neox = FindModelPreset("pythia-160m?layers=6&width=384");
  ASSERT_TRUE(neox.ok()) << neox.status();
  EXPECT_EQ(neox->name, "pythia-160m?layers=6&width=384");
  EXPECT_EQ(neox->config.gpt_neox.num_hidden_layers, 6);
  EXPECT_EQ(neox->config.gpt_neox.hidden_size, 384);
  EXPECT_EQ(neox->config.gpt_neox.num_attention_heads, 6);  // head size 64 kept
  EXPECT_EQ(neox->config.gpt_neox.intermediate_size, 1536);
  EXPECT_EQ(neox->config.gpt_neox.vocab_size, 50304);
  absl::StatusOr<ModelPreset> heads = FindModelPreset("pythia-160m?heads=4");
  ASSERT_TRUE(heads.ok()) << heads.status();
  EXPECT_EQ(heads->config.gpt_neox.num_attention_heads, 4);
  EXPECT_EQ(heads->config.gpt_neox.hidden_size, 768);

  absl::StatusOr<ModelPreset> neo = FindModelPreset("gpt-neo-125m?layers=3");
  ASSERT_TRUE(neo.ok()) << neo.status();
  EXPECT_EQ(neo->config.gpt_neo.attention_layers,
            (std::vector<std::string>{"global", "local", "global"}));

  absl::StatusOr<ModelPreset> mamba = FindModelPreset("mamba-130m?width=512&state=64");
  ASSERT_TRUE(mamba.ok()) << mamba.status();
  EXPECT_EQ(mamba->config.mamba.hidden_size, 512);
  EXPECT_EQ(mamba->config.mamba.intermediate_size(), 1024);
  EXPECT_EQ(mamba->config.mamba.dt_rank(), 32);
  EXPECT_EQ(mamba->config.mamba.state_size, 64);
  EXPECT_EQ(mamba->config.mamba.num_hidden_layers, 24);

  absl::StatusOr<ModelPreset> mamba2 = FindModelPreset("mamba2-130m?width=256&layers=12&state=32");
  ASSERT_TRUE(mamba2.ok()) << mamba2.status();
  EXPECT_EQ(mamba2->config.mamba2.num_heads, 8);  // 2 * 256 / 64
  EXPECT_EQ(mamba2->config.mamba2.state_size, 32);
  EXPECT_EQ(mamba2->config.mamba2.num_hidden_layers, 12);
  EXPECT_EQ(mamba2->config.mamba2.conv_dim(), 512 + 2 * 32);
}

TEST(ModelPresetsTest, ResizeErrorsNameTheSize) {
  using absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(FindModelPreset("pythia-7b?layers=2").status(),
              StatusIs(absl::StatusCode::kNotFound, "unknown model preset 'pythia-7b'"));
  EXPECT_THAT(FindModelPreset("pythia-70m?depth=2").status(),
              StatusIs(kInvalidArgument, "model 'pythia-70m?depth=2': unknown size 'depth'; "
                                         "known: layers, width, heads, state"));
  EXPECT_THAT(FindModelPreset("pythia-70m?layers=0").status(),
              StatusIs(kInvalidArgument, "model 'pythia-70m?layers=0': layers=0: expected an "
                                         "integer in [1, 65536]"));
  EXPECT_THAT(FindModelPreset("pythia-70m?layers=2&layers=3").status(),
              StatusIs(kInvalidArgument, "model 'pythia-70m?layers=2&layers=3': layers given twice"));
  EXPECT_THAT(FindModelPreset("pythia-70m?state=16").status(),
              StatusIs(kInvalidArgument, "model 'pythia-70m?state=16': state: attention models"));
  EXPECT_THAT(FindModelPreset("pythia-70m?width=100").status(),
              StatusIs(kInvalidArgument, "model 'pythia-70m?width=100': width 100 is not a "
                                         "multiple of the head size 64"));
  EXPECT_THAT(FindModelPreset("mamba2-130m?heads=4").status(),
              StatusIs(kInvalidArgument, "model 'mamba2-130m?heads=4': heads: Mamba-2's heads"));
  EXPECT_THAT(FindModelPreset("mamba2-130m?width=100").status(),
              StatusIs(kInvalidArgument, "model 'mamba2-130m?width=100': width 100: expand"));
  EXPECT_THAT(FindModelPreset("mamba-130m?").status(),
              StatusIs(kInvalidArgument, "model 'mamba-130m?': nothing after '?'"));
}

TEST(InitSchemeTest, ParsesEveryScheme) {
  using Kind = InitScheme::Kind;
  const std::vector<std::pair<std::string, InitScheme>> cases = {
      {"reference", {Kind::kReference, 0}},        {"normal(0.02)", {Kind::kNormal, 0.02}},
      {"uniform(0.05)", {Kind::kUniform, 0.05}},   {"xavier_uniform", {Kind::kXavierUniform, 0}},
      {"xavier_normal", {Kind::kXavierNormal, 0}}, {"kaiming_normal", {Kind::kKaimingNormal, 0}}};
  for (const auto& [text, want] : cases) {
    auto parsed = ParseInitScheme(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(parsed->kind, want.kind) << text;
    EXPECT_DOUBLE_EQ(parsed->param, want.param) << text;
  }
}

TEST(InitSchemeTest, RejectsBadParametersAndNames) {
  for (const char* bad : {"normal(0)", "normal(-1)", "normal(x)", "uniform(0.1", "normal(inf)"}) {
    auto parsed = ParseInitScheme(bad);
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr("with X a positive number")) << bad;
  }
  EXPECT_EQ(ParseInitScheme("he_normal").status().message(),
            "unknown init scheme 'he_normal'; known: reference, normal(STD), uniform(A), "
            "xavier_uniform, xavier_normal, kaiming_normal");
}

}  // namespace
}  // namespace layerflow::catalog

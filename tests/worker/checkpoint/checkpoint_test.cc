// Checkpoint files without the reference library: config.json parsing, the
// safetensors reader's validation, the loader's error paths (each status
// code, and a message naming the file and the tensor or key), our writer
// round-tripping through the loader, and the Hugging Face cache lookup.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/worker/checkpoint/checkpoint_test_util.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config_json.h"
#include "worker/model/language_model.h"
#include "worker/model/model_checkpoint.h"

namespace layerflow::worker {
namespace {

using ::testing::HasSubstr;
using testing::MakeTempDir;
using testing::ReadText;
using testing::WriteText;

const c10::Device kCpu(c10::kCPU);

GptNeoXConfig SmallConfig() {
  GptNeoXConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.rotary_pct = 0.5;
  return c;
}

nlohmann::json ConfigJson(const GptNeoXConfig& c) {
  // transformers 5 spelling of the rotary settings.
  return {{"architectures", {"GPTNeoXForCausalLM"}},
          {"model_type", "gpt_neox"},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"intermediate_size", c.intermediate_size},
          {"rope_parameters",
           {{"partial_rotary_factor", c.rotary_pct},
            {"rope_theta", c.rotary_emb_base},
            {"rope_type", "default"}}},
          {"use_parallel_residual", c.use_parallel_residual},
          {"attention_bias", c.attention_bias},
          {"layer_norm_eps", c.layer_norm_eps}};
}

// A random model's parameters, as float32 CPU tensors by name.
std::vector<std::pair<std::string, at::Tensor>> RandomParams(const GptNeoXConfig& c) {
  ModelConfig config;
  config.architecture = "gpt_neox";
  config.gpt_neox = c;
  auto model = CreateRandomModel(config, InitScheme{InitScheme::Kind::kNormal, 0.3}, 7, kCpu,
                                 c10::kFloat);
  EXPECT_TRUE(model.ok()) << model.status();
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& [name, t] : (*model)->parameters().items()) {
    params.emplace_back(name, t.contiguous());
  }
  return params;
}

SafetensorsWriteTensor ViewOf(const std::string& name, const at::Tensor& t) {
  SafetensorsWriteTensor w;
  w.name = name;
  w.dtype = t.scalar_type() == at::kLong ? SafetensorsDtype::kI64
            : t.scalar_type() == at::kBool ? SafetensorsDtype::kBool
                                           : SafetensorsDtype::kF32;
  w.shape.assign(t.sizes().begin(), t.sizes().end());
  w.data = t.data_ptr();
  w.nbytes = t.nbytes();
  return w;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    config_ = SmallConfig();
    params_ = RandomParams(config_);
  }
  // Writes config.json and model.safetensors, with `edit` applied to the
  // tensor list first.
  void Write(const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>&
                 edit = nullptr) {
    auto params = params_;
    if (edit) edit(params);
    std::vector<SafetensorsWriteTensor> views;
    for (const auto& [name, t] : params) views.push_back(ViewOf(name, t));
    WriteText(dir_ + "/config.json", ConfigJson(config_).dump(1));
    ASSERT_TRUE(WriteSafetensors(weights(), views, {{"format", "pt"}}).ok());
  }
  std::string weights() const { return dir_ + "/model.safetensors"; }
  absl::Status Load() {
    return LoadModelCheckpoint(dir_, c10::kFloat, kCpu).status();
  }

  std::string dir_;
  GptNeoXConfig config_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
};

TEST_F(CheckpointTest, WriterRoundTripsThroughLoaderExactly) {
  Write();
  auto model = LoadModelCheckpoint(dir_, c10::kFloat, kCpu);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().gpt_neox.hidden_size, 16);
  EXPECT_DOUBLE_EQ((*model)->config().gpt_neox.rotary_pct, 0.5);
  c10::InferenceMode guard;
  for (const auto& [name, t] : params_) {
    EXPECT_TRUE(at::equal((*model)->parameters().Get(name), t)) << name;
  }
  // Header padded so that data starts 8-byte aligned.
  auto file = SafetensorsFile::Open(weights());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const SafetensorsTensor& t : (*file)->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 8, 0u) << t.name;
  }
}

TEST_F(CheckpointTest, MissingTensorIsNotFoundNamingFileAndTensor) {
  const std::string gone = "gpt_neox.layers.1.mlp.dense_4h_to_h.bias";
  Write([&](auto& params) {
    std::erase_if(params, [&](const auto& p) { return p.first == gone; });
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
  EXPECT_THAT(std::string(s.message()), HasSubstr(gone));
}

TEST_F(CheckpointTest, MissingHeadNamesBothSpellings) {
  Write([&](auto& params) {
    std::erase_if(params, [&](const auto& p) { return p.first == "embed_out.weight"; });
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("lm_head.weight"));
}

TEST_F(CheckpointTest, WrongShapeNamesTensorExpectedAndActual) {
  const std::string name = "gpt_neox.layers.0.attention.query_key_value.weight";
  Write([&](auto& params) {
    for (auto& [n, t] : params) {
      if (n == name) t = t.t().contiguous();  // [48, 16] -> [16, 48]
    }
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(name));
  EXPECT_THAT(std::string(s.message()), HasSubstr("has shape [16, 48], expected [48, 16]"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
}

TEST_F(CheckpointTest, LmHeadAcceptedAndKnownBuffersIgnored) {
  Write([&](auto& params) {
    for (auto& [n, t] : params) {
      if (n == "embed_out.weight") n = "lm_head.weight";
    }
    params.emplace_back("gpt_neox.layers.0.attention.bias",
                        at::ones({1, 1, 8, 8}, at::kBool).tril());
    params.emplace_back("gpt_neox.layers.0.attention.masked_bias", at::full({}, -1e9));
    params.emplace_back("gpt_neox.layers.0.attention.rotary_emb.inv_freq", at::ones({2}));
  });
  auto model = LoadModelCheckpoint(dir_, c10::kFloat, kCpu);
  ASSERT_TRUE(model.ok()) << model.status();
  c10::InferenceMode guard;
  EXPECT_TRUE(at::equal((*model)->parameters().Get("embed_out.weight"),
                        params_.back().second));
}

TEST_F(CheckpointTest, TiedHeadMayBeLeftOut) {
  Write([&](auto& params) {
    std::erase_if(params, [&](const auto& p) { return p.first == "embed_out.weight"; });
  });
  nlohmann::json config = ConfigJson(config_);
  config["tie_word_embeddings"] = true;
  WriteText(dir_ + "/config.json", config.dump());
  auto model = LoadModelCheckpoint(dir_, c10::kFloat, kCpu);
  ASSERT_TRUE(model.ok()) << model.status();
  c10::InferenceMode guard;
  EXPECT_TRUE(at::equal((*model)->parameters().Get("embed_out.weight"),
                        (*model)->parameters().Get("gpt_neox.embed_in.weight")));
}

TEST_F(CheckpointTest, UnexpectedTensorIsRejected) {
  Write([&](auto& params) { params.emplace_back("score.weight", at::ones({2, 16})); });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("score.weight"));
}

TEST_F(CheckpointTest, IntegerWeightIsRejectedNamingDtype) {
  const std::string name = "gpt_neox.final_layer_norm.bias";
  Write([&](auto& params) {
    for (auto& [n, t] : params) {
      if (n == name) t = at::zeros({16}, at::kLong);
    }
  });
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(name));
  EXPECT_THAT(std::string(s.message()), HasSubstr("I64"));
}

TEST_F(CheckpointTest, TruncatedFileNamesFileAndTensor) {
  Write();
  const std::string bytes = ReadText(weights());
  WriteText(weights(), bytes.substr(0, bytes.size() - 100));
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
  // The last tensor in the data section is the head.
  EXPECT_THAT(std::string(s.message()), HasSubstr("'embed_out.weight'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("out of range"));

  WriteText(weights(), bytes.substr(0, 5));
  s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated"));
}

TEST_F(CheckpointTest, HeaderLengthBeyondFile) {
  Write();
  std::string bytes = ReadText(weights());
  const uint64_t huge = 1u << 30;
  bytes.replace(0, 8, reinterpret_cast<const char*>(&huge), 8);
  WriteText(weights(), bytes);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
  EXPECT_THAT(std::string(s.message()), HasSubstr("header length 1073741824"));
}

TEST_F(CheckpointTest, CorruptHeader) {
  Write();
  std::string bytes = ReadText(weights());
  bytes[8] = '[';  // '{' -> '[' : no longer a JSON object
  bytes[9] = '#';
  WriteText(weights(), bytes);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
  EXPECT_THAT(std::string(s.message()), HasSubstr("corrupt safetensors header"));
}

TEST_F(CheckpointTest, UnknownDtypeNamesFileAndTensor) {
  const std::string header =
      R"({"gpt_neox.embed_in.weight":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  const uint64_t len = header.size();
  bytes.replace(0, 8, reinterpret_cast<const char*>(&len), 8);
  bytes += header + std::string(4, '\0');
  WriteText(dir_ + "/config.json", ConfigJson(config_).dump());
  WriteText(weights(), bytes);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(weights()));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'gpt_neox.embed_in.weight'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("unknown dtype 'Q7'"));
}

TEST_F(CheckpointTest, OffsetsNotMatchingShape) {
  const std::string header =
      R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  const uint64_t len = header.size();
  bytes.replace(0, 8, reinterpret_cast<const char*>(&len), 8);
  bytes += header + std::string(8, '\0');
  WriteText(weights(), bytes);
  auto file = SafetensorsFile::Open(weights());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("'x'"));
}

// Other writers need not align the data section: such tensors are copied
// to an aligned buffer before LibTorch sees them.
TEST_F(CheckpointTest, UnalignedDataLoads) {
  Write();
  std::string bytes = ReadText(weights());
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  // One more header byte shifts every tensor to an odd address.
  bytes.insert(8 + len, " ");
  ++len;
  bytes.replace(0, 8, reinterpret_cast<const char*>(&len), 8);
  WriteText(weights(), bytes);
  auto file = SafetensorsFile::Open(weights());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_NE(reinterpret_cast<uintptr_t>((*file)->tensors()[0].data) % 4, 0u);
  auto model = LoadModelCheckpoint(dir_, c10::kFloat, kCpu);
  ASSERT_TRUE(model.ok()) << model.status();
  c10::InferenceMode guard;
  for (const auto& [name, t] : params_) {
    EXPECT_TRUE(at::equal((*model)->parameters().Get(name), t)) << name;
  }
}

// A shard that lacks a tensor its index assigns to it.
TEST_F(CheckpointTest, ShardMissingIndexedTensor) {
  Write();
  ASSERT_EQ(std::rename(weights().c_str(), (dir_ + "/model-00001-of-00001.safetensors").c_str()), 0);
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : params_) index["weight_map"][name] = "model-00001-of-00001.safetensors";
  index["weight_map"]["gpt_neox.extra.weight"] = "model-00001-of-00001.safetensors";
  WriteText(dir_ + "/model.safetensors.index.json", index.dump());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("model-00001-of-00001.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'gpt_neox.extra.weight'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors.index.json"));
}

TEST_F(CheckpointTest, NoWeightsNamesEveryFileLookedFor) {
  WriteText(dir_ + "/config.json", ConfigJson(config_).dump());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("pytorch_model.bin"));
}

TEST_F(CheckpointTest, CorruptPytorchBinIsInvalidArgumentNamingTheFile) {
  WriteText(dir_ + "/config.json", ConfigJson(config_).dump());
  WriteText(dir_ + "/pytorch_model.bin", "x");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir_ + "/pytorch_model.bin"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a readable torch.save archive"));
}

// The GPT-NeoX part of a parsed config.json (errors as the parser gives them).
absl::StatusOr<GptNeoXConfig> ParseNeoX(absl::string_view json, absl::string_view source) {
  absl::StatusOr<CheckpointConfig> c = ParseCheckpointConfigJson(json, source);
  if (!c.ok()) return c.status();
  EXPECT_EQ(c->model.architecture, "gpt_neox");
  return c->model.gpt_neox;
}

// Without the key, tie_word_embeddings takes the transformers config class's
// default: true for GPT-Neo and Mamba, false for GPT-NeoX and Mamba-2
// (Mamba2Config; an earlier reader took true for Mamba-2).
TEST(CheckpointConfigJson, TieWordEmbeddingsDefaultsPerArchitecture) {
  const std::map<std::string, bool> want = {
      {"gpt_neox", false}, {"gpt_neo", true}, {"mamba", true}, {"mamba2", false}};
  const std::map<std::string, std::string> keys = {
      {"gpt_neox", R"("num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 8)"},
      {"gpt_neo", R"("num_layers": 2, "num_heads": 2, "attention_types": [[["global"], 2]])"},
      {"mamba", R"("num_hidden_layers": 2, "state_size": 4)"},
      {"mamba2", R"("num_hidden_layers": 2, "num_heads": 4, "head_dim": 4, "state_size": 4)"}};
  for (const auto& [type, tied] : want) {
    const std::string json = absl::StrCat(R"({"model_type": ")", type,
                                          R"(", "vocab_size": 64, "hidden_size": 8, )",
                                          keys.at(type), "}");
    absl::StatusOr<CheckpointConfig> c = ParseCheckpointConfigJson(json, type);
    ASSERT_TRUE(c.ok()) << type << ": " << c.status();
    EXPECT_EQ(c->tie_word_embeddings, tied) << type;
    const std::string explicit_json =
        json.substr(0, json.size() - 1) + R"(, "tie_word_embeddings": )" +
        (tied ? "false" : "true") + "}";
    c = ParseCheckpointConfigJson(explicit_json, type);
    ASSERT_TRUE(c.ok()) << type << ": " << c.status();
    EXPECT_EQ(c->tie_word_embeddings, !tied) << type << " (explicit)";
  }
}

TEST(GptNeoXConfigJson, UnknownModelTypeNamesFileAndKey) {
  auto c = ParseNeoX(R"({"model_type": "llama", "hidden_size": 8})",
                                  "/x/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/x/config.json"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("model_type \"llama\""));
}

TEST(GptNeoXConfigJson, MissingRequiredKeysAreAllNamed) {
  auto c = ParseNeoX(
      R"({"model_type": "gpt_neox", "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 8})",
      "cfg.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("cfg.json: missing required keys vocab_size, hidden_size"));
}

TEST(GptNeoXConfigJson, ReadsBothRotarySpellings) {
  // Published Pythia config.json (transformers 4 era).
  auto old = ParseNeoX(
      R"({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
          "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
          "num_attention_heads": 8, "intermediate_size": 2048,
          "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true,
          "layer_norm_eps": 1e-05, "hidden_act": "gelu", "rope_scaling": null})",
      "old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_DOUBLE_EQ(old->rotary_pct, 0.25);
  EXPECT_TRUE(old->attention_bias);  // HF default
  auto v5 = ParseNeoX(ConfigJson(SmallConfig()).dump(), "v5");
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_DOUBLE_EQ(v5->rotary_pct, 0.5);
  EXPECT_EQ(v5->intermediate_size, 32);
  auto scaled = ParseNeoX(
      R"({"model_type": "gpt_neox", "rope_parameters": {"rope_type": "linear"}})", "s");
  EXPECT_EQ(scaled.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(scaled.status().message()), HasSubstr("rope_type"));
}

// The local Hugging Face cache, with HF_HOME pointing at a fake one.
class HfCacheTest : public CheckpointTest {
 protected:
  void SetUp() override {
    CheckpointTest::SetUp();
    home_ = MakeTempDir();
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", home_.c_str(), 1);
    repo_ = home_ + "/hub/models--Org--tiny-neox";
  }
  void TearDown() override { unsetenv("HF_HOME"); }
  // A snapshot folder <repo>/snapshots/<rev> holding the small checkpoint.
  void AddSnapshot(const std::string& rev) {
    Write();
    for (const std::string& d : {home_ + "/hub", repo_, repo_ + "/snapshots",
                                 repo_ + "/snapshots/" + rev, repo_ + "/refs"}) {
      mkdir(d.c_str(), 0755);
    }
    for (const std::string& f : {"config.json", "model.safetensors"}) {
      // The real cache links snapshot files to blobs/; a symlink here too.
      ASSERT_EQ(symlink((dir_ + "/" + f).c_str(),
                        (repo_ + "/snapshots/" + rev + "/" + f).c_str()), 0);
    }
  }
  std::string home_, repo_;
};

TEST_F(HfCacheTest, RefsMainPicksTheSnapshot) {
  AddSnapshot("aaaa");
  AddSnapshot("bbbb");
  WriteText(repo_ + "/refs/main", "bbbb");
  auto source = ResolveModelSource("Org/tiny-neox");
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(source->dir, repo_ + "/snapshots/bbbb");
  auto model = LoadModelCheckpoint(source->dir, c10::kFloat, kCpu);
  EXPECT_TRUE(model.ok()) << model.status();
}

TEST_F(HfCacheTest, SingleSnapshotWithoutRefs) {
  AddSnapshot("cccc");
  auto dir = ResolveHfCacheSnapshot("Org/tiny-neox");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, repo_ + "/snapshots/cccc");
}

TEST_F(HfCacheTest, SeveralSnapshotsWithoutRefsIsAmbiguous) {
  AddSnapshot("aaaa");
  AddSnapshot("bbbb");
  auto dir = ResolveHfCacheSnapshot("Org/tiny-neox");
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr("aaaa, bbbb"));
}

TEST_F(HfCacheTest, AbsentModelIsNotFoundListingWhereItLooked) {
  auto source = ResolveModelSource("EleutherAI/pythia-160m");
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(source.status().message()),
              HasSubstr(home_ + "/hub/models--EleutherAI--pythia-160m"));
}

TEST_F(HfCacheTest, FoldersAndPresetsResolveFirst) {
  Write();
  auto folder = ResolveModelSource(dir_);
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->kind, ModelSource::Kind::kCheckpoint);
  auto preset = ResolveModelSource("pythia-tiny");
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_EQ(preset->kind, ModelSource::Kind::kPreset);
  EXPECT_EQ(preset->preset.config.gpt_neox.hidden_size, 64);
}

}  // namespace
}  // namespace layerflow::worker

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
#include <algorithm>
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
#include "worker/tokenizer/bpe_tokenizer.h"

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
  auto model =
      CreateRandomModel(config, InitScheme{InitScheme::Kind::kNormal, 0.3}, 7, kCpu, c10::kFloat);
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
  w.dtype = t.scalar_type() == at::kLong   ? SafetensorsDtype::kI64
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
  void Write(
      const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit = nullptr) {
    auto params = params_;
    if (edit) edit(params);
    std::vector<SafetensorsWriteTensor> views;
    for (const auto& [name, t] : params) views.push_back(ViewOf(name, t));
    WriteText(dir_ + "/config.json", ConfigJson(config_).dump(1));
    ASSERT_TRUE(WriteSafetensors(weights(), views, {{"format", "pt"}}).ok());
  }
  std::string weights() const { return dir_ + "/model.safetensors"; }
  absl::Status Load() { return LoadModelCheckpoint(dir_, c10::kFloat, kCpu).status(); }

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
  Write(
      [&](auto& params) { std::erase_if(params, [&](const auto& p) { return p.first == gone; }); });
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
  EXPECT_TRUE(at::equal((*model)->parameters().Get("embed_out.weight"), params_.back().second));
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
  // The dtype is the file's content: listed as the format has them, not
  // repeated (issue 14).
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("unknown dtype (the format's dtypes: BOOL, U8, I8, I16, U16, F16, "
                        "BF16, I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2)"));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("Q7")));
}

TEST_F(CheckpointTest, OffsetsNotMatchingShape) {
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})";
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
  ASSERT_EQ(std::rename(weights().c_str(), (dir_ + "/model-00001-of-00001.safetensors").c_str()),
            0);
  nlohmann::json index = {{"metadata", nlohmann::json::object()},
                          {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : params_)
    index["weight_map"][name] = "model-00001-of-00001.safetensors";
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
    const std::string json =
        absl::StrCat(R"({"model_type": ")", type, R"(", "vocab_size": 64, "hidden_size": 8, )",
                     keys.at(type), "}");
    absl::StatusOr<CheckpointConfig> c = ParseCheckpointConfigJson(json, type);
    ASSERT_TRUE(c.ok()) << type << ": " << c.status();
    EXPECT_EQ(c->tie_word_embeddings, tied) << type;
    const std::string explicit_json = json.substr(0, json.size() - 1) +
                                      R"(, "tie_word_embeddings": )" + (tied ? "false" : "true") +
                                      "}";
    c = ParseCheckpointConfigJson(explicit_json, type);
    ASSERT_TRUE(c.ok()) << type << ": " << c.status();
    EXPECT_EQ(c->tie_word_embeddings, !tied) << type << " (explicit)";
  }
}

TEST(GptNeoXConfigJson, UnknownModelTypeNamesFileAndKeyButNotTheValue) {
  auto c = ParseNeoX(R"({"model_type": "llama", "hidden_size": 8})", "/x/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "/x/config.json: model_type is not supported (supported: \"gpt_neox\", "
            "\"gpt_neo\", \"mamba\", \"mamba2\"; the value is not repeated here)");
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
  auto scaled =
      ParseNeoX(R"({"model_type": "gpt_neox", "rope_parameters": {"rope_type": "linear"}})", "s");
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
  // A snapshot folder <repo>/snapshots/<rev> holding the small checkpoint,
  // its files links into <repo>/blobs/ as the real cache has them.
  void AddSnapshot(const std::string& rev) {
    Write();
    for (const std::string& d : {home_ + "/hub", repo_, repo_ + "/snapshots", repo_ + "/blobs",
                                 repo_ + "/snapshots/" + rev, repo_ + "/refs"}) {
      mkdir(d.c_str(), 0755);
    }
    for (const char* f : {"config.json", "model.safetensors"}) {
      const std::string blob = repo_ + "/blobs/" + rev + "-" + f;
      ASSERT_EQ(std::rename((dir_ + "/" + f).c_str(), blob.c_str()), 0);
      ASSERT_EQ(symlink(("../../blobs/" + rev + "-" + f).c_str(),
                        (repo_ + "/snapshots/" + rev + "/" + f).c_str()),
                0);
    }
  }
  static std::string Real(const std::string& path) {
    char* r = realpath(path.c_str(), nullptr);
    std::string out = r == nullptr ? "" : r;
    free(r);
    return out;
  }
  ModelFilePolicy policy_;  // the Hugging Face cache only
  std::string home_, repo_;
};

TEST_F(HfCacheTest, RefsMainPicksTheSnapshot) {
  AddSnapshot("aaaa");
  AddSnapshot("bbbb");
  WriteText(repo_ + "/refs/main", "bbbb");
  auto source = ResolveModelSource("Org/tiny-neox", policy_);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(source->folder.path(), Real(repo_ + "/snapshots/bbbb"));
  // The snapshot's links lead into blobs/, inside the repo folder: allowed.
  auto model = LoadModelCheckpoint(source->folder, c10::kFloat, kCpu, ModelFileLimits{});
  EXPECT_TRUE(model.ok()) << model.status();
}

TEST_F(HfCacheTest, SingleSnapshotWithoutRefs) {
  AddSnapshot("cccc");
  auto dir = ResolveHfCacheSnapshot("Org/tiny-neox");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(dir->dir, repo_ + "/snapshots/cccc");
  EXPECT_EQ(dir->repo, repo_);
}

TEST_F(HfCacheTest, SeveralSnapshotsWithoutRefsIsAmbiguous) {
  AddSnapshot("aaaa");
  AddSnapshot("bbbb");
  auto dir = ResolveHfCacheSnapshot("Org/tiny-neox");
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(dir.status().message()), HasSubstr("aaaa, bbbb"));
}

TEST_F(HfCacheTest, AbsentModelIsNotFoundWithoutNamingWorkerFolders) {
  auto source = ResolveModelSource("EleutherAI/pythia-160m", policy_);
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(source.status().message(),
            "model 'EleutherAI/pythia-160m' is not in this worker's Hugging Face cache; "
            "this build never downloads: fetch it with `huggingface-cli download "
            "EleutherAI/pythia-160m` or pass a checkpoint folder under the worker's "
            "--model-root");
}

TEST_F(HfCacheTest, SnapshotLinkLeadingOutOfTheRepoIsPermissionDenied) {
  AddSnapshot("dddd");
  // Re-point the weights link at a file outside models--Org--tiny-neox.
  const std::string link = repo_ + "/snapshots/dddd/model.safetensors";
  ASSERT_EQ(std::rename((repo_ + "/blobs/dddd-model.safetensors").c_str(),
                        (home_ + "/outside.safetensors").c_str()),
            0);
  ASSERT_EQ(unlink(link.c_str()), 0);
  ASSERT_EQ(symlink((home_ + "/outside.safetensors").c_str(), link.c_str()), 0);
  auto source = ResolveModelSource("Org/tiny-neox", policy_);
  ASSERT_TRUE(source.ok()) << source.status();
  absl::Status s =
      LoadModelCheckpoint(source->folder, c10::kFloat, kCpu, ModelFileLimits{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_EQ(s.message(),
            "model.safetensors: resolves (through a symbolic link) outside the checkpoint "
            "folder");
}

TEST_F(HfCacheTest, FoldersAndPresetsResolveFirst) {
  Write();
  ModelFilePolicy rooted = policy_;
  rooted.roots = {dir_};
  auto folder = ResolveModelSource(dir_, rooted);
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(folder->folder.path(), Real(dir_));
  auto preset = ResolveModelSource("pythia-tiny", policy_);
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_EQ(preset->kind, ModelSource::Kind::kPreset);
  EXPECT_EQ(preset->preset.config.gpt_neox.hidden_size, 64);
}

// ---------------------------------------------------------------------------
// Files on workers (issue 14, item 2): model roots, shard names confined to
// the checkpoint folder, regular files of bounded size, errors that name
// the file and key but neither the file's contents nor the worker's paths.

std::string RealPathOf(const std::string& path) {
  char* r = realpath(path.c_str(), nullptr);
  std::string out = r == nullptr ? "" : r;
  free(r);
  return out;
}

// dir_ holds ckpt/ (the checkpoint a job names) and, beside it, files a
// hostile index points at: secret.safetensors (a valid weights file: were
// it opened, the load would get further) and secret.bin.
class ConfinedTest : public CheckpointTest {
 protected:
  void SetUp() override {
    CheckpointTest::SetUp();
    outer_ = dir_;
    dir_ = outer_ + "/ckpt";
    ASSERT_EQ(mkdir(dir_.c_str(), 0755), 0);
    Write();
    ASSERT_EQ(std::rename(weights().c_str(), (outer_ + "/secret.safetensors").c_str()), 0);
    WriteText(outer_ + "/secret.bin", "not a checkpoint");
    first_tensor_ = params_[0].first;
    for (const auto& [name, t] : params_) first_tensor_ = std::min(first_tensor_, name);
  }
  // The job's view: confined to ckpt/, names relative to it.
  ConfinedDir Folder() const {
    auto folder = ConfinedDir::Open(dir_, dir_);
    EXPECT_TRUE(folder.ok()) << folder.status();
    return *folder;
  }
  absl::Status LoadJob(const ModelFileLimits& limits = ModelFileLimits{}) {
    return LoadModelCheckpoint(Folder(), c10::kFloat, kCpu, limits).status();
  }
  // An index file mapping every tensor to `shard`.
  void WriteIndex(const std::string& file, const std::string& shard) {
    nlohmann::json index = {{"metadata", nlohmann::json::object()},
                            {"weight_map", nlohmann::json::object()}};
    for (const auto& [name, t] : params_) index["weight_map"][name] = shard;
    WriteText(dir_ + "/" + file, index.dump());
  }
  std::string Field(const std::string& file) const {
    return file + ": weight_map['" + first_tensor_ + "']";
  }
  std::string outer_, first_tensor_;
};

// Regression: a shard name climbing out of the checkpoint, absolute, or not
// one file name, in both index formats, is refused before any shard opens.
TEST_F(ConfinedTest, IndexShardNamesOutsideTheFolderAreRefusedInBothFormats) {
  for (const std::string index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    SCOPED_TRACE(index);
    const std::string secret = index[0] == 'm' ? "secret.safetensors" : "secret.bin";
    const std::pair<std::string, std::string> cases[] = {
        {"../" + secret, "must be a file name in the folder, without '/'"},
        {outer_ + "/" + secret, "must be a file name in the folder, without '/'"},
        {"/etc/passwd", "must be a file name in the folder, without '/'"},
        {"..", "'.' and '..' do not name a file in the folder"},
        {"", "empty file name"},
    };
    for (const auto& [shard, why] : cases) {
      SCOPED_TRACE(shard);
      WriteIndex(index, shard);
      absl::Status s = LoadJob();
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_EQ(s.message(), Field(index) + ": " + why);
    }
    ASSERT_EQ(unlink((dir_ + "/" + index).c_str()), 0);
  }
}

// A shard that is a symbolic link out of the folder: PERMISSION_DENIED
// naming the index key and the shard, never the link's target.
TEST_F(ConfinedTest, ShardLinkLeadingOutOfTheFolderIsPermissionDenied) {
  ASSERT_EQ(
      symlink((outer_ + "/secret.safetensors").c_str(), (dir_ + "/shard.safetensors").c_str()), 0);
  ASSERT_EQ(symlink("../secret.bin", (dir_ + "/shard.bin").c_str()), 0);
  for (const auto& [index, shard] : std::vector<std::pair<std::string, std::string>>{
           {"model.safetensors.index.json", "shard.safetensors"},
           {"pytorch_model.bin.index.json", "shard.bin"}}) {
    SCOPED_TRACE(index);
    WriteIndex(index, shard);
    absl::Status s = LoadJob();
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
    EXPECT_EQ(s.message(),
              Field(index) + ": " + shard +
                  ": resolves (through a symbolic link) outside the checkpoint folder");
    EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr(outer_)));
    ASSERT_EQ(unlink((dir_ + "/" + index).c_str()), 0);
  }
  // The same link as the single weights file.
  ASSERT_EQ(symlink("../secret.safetensors", weights().c_str()), 0);
  absl::Status s = LoadJob();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_EQ(s.message(),
            "model.safetensors: resolves (through a symbolic link) outside the checkpoint folder");
}

// Regression: an endless file as a shard was read until memory ran out. A
// FIFO is refused without being opened (an open would block: this test
// would hang), in both index formats and as the single file.
TEST_F(ConfinedTest, FifoAsShardOrWeightsOrConfigIsRefusedWithoutBlocking) {
  ASSERT_EQ(mkfifo((dir_ + "/fifo").c_str(), 0644), 0);
  for (const std::string index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    SCOPED_TRACE(index);
    WriteIndex(index, "fifo");
    absl::Status s = LoadJob();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(s.message(), Field(index) + ": fifo: a FIFO, not a regular file");
    ASSERT_EQ(unlink((dir_ + "/" + index).c_str()), 0);
  }
  ASSERT_EQ(mkfifo((dir_ + "/pytorch_model.bin").c_str(), 0644), 0);
  absl::Status s = LoadJob();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(), "pytorch_model.bin: a FIFO, not a regular file");
  ASSERT_EQ(unlink((dir_ + "/config.json").c_str()), 0);
  ASSERT_EQ(mkfifo((dir_ + "/config.json").c_str(), 0644), 0);
  auto config = ReadCheckpointConfig(Folder(), 1 << 20);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(), "config.json: a FIFO, not a regular file");
}

// A device file (here /dev/zero, endless) is no regular file either; the
// bound "/" lets the link resolve so the type check is what refuses it.
TEST_F(ConfinedTest, DeviceFileIsRefused) {
  ASSERT_EQ(symlink("/dev/zero", (dir_ + "/zero").c_str()), 0);
  auto folder = ConfinedDir::Open(dir_, "/");
  ASSERT_TRUE(folder.ok()) << folder.status();
  auto file = folder->OpenFile("zero", 1 << 20);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file.status().message(), "zero: a character device, not a regular file");
  // As a shard of either index: refused before a byte is read.
  for (const std::string index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    SCOPED_TRACE(index);
    WriteIndex(index, "zero");
    absl::Status s = LoadModelCheckpoint(*folder, c10::kFloat, kCpu, ModelFileLimits{}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(s.message(), Field(index) + ": zero: a character device, not a regular file");
    ASSERT_EQ(unlink((dir_ + "/" + index).c_str()), 0);
  }
  // Confined to ckpt/ itself, the link is refused first.
  auto confined = Folder().OpenFile("zero", 1 << 20);
  EXPECT_EQ(confined.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ConfinedTest, EveryFileReadHasASizeLimit) {
  const int64_t config_bytes = static_cast<int64_t>(ReadText(dir_ + "/config.json").size());
  ModelFileLimits small;
  small.max_metadata_bytes = 64;
  absl::Status s = LoadJob(small);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(), absl::StrCat("config.json: ", config_bytes,
                                      " bytes, more than this worker's limit of 64 bytes for "
                                      "this file"));
  ASSERT_EQ(std::rename((outer_ + "/secret.safetensors").c_str(), weights().c_str()), 0);
  struct stat st {};
  ASSERT_EQ(stat(weights().c_str(), &st), 0);
  ModelFileLimits weights_limit;
  weights_limit.max_weights_file_bytes = 1000;
  s = LoadJob(weights_limit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(), absl::StrCat("model.safetensors: ", st.st_size,
                                      " bytes, more than this worker's limit of 1000 bytes for "
                                      "this file"));
  EXPECT_TRUE(LoadJob().ok());
  // An index file is metadata: the same limit as config.json.
  ASSERT_EQ(std::rename(weights().c_str(), (dir_ + "/shard.safetensors").c_str()), 0);
  WriteIndex("model.safetensors.index.json", "shard.safetensors");
  const int64_t index_bytes =
      static_cast<int64_t>(ReadText(dir_ + "/model.safetensors.index.json").size());
  ModelFileLimits index_limit;
  index_limit.max_metadata_bytes = config_bytes;  // config.json fits, the index does not
  ASSERT_GT(index_bytes, config_bytes);
  s = LoadJob(index_limit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(), absl::StrCat("model.safetensors.index.json: ", index_bytes,
                                      " bytes, more than this worker's limit of ", config_bytes,
                                      " bytes for this file"));
  // A safetensors header claiming more than the format's 100 MB.
  std::string huge(16, '\0');
  const uint64_t claimed = kMaxSafetensorsHeaderBytes + 1;
  std::memcpy(huge.data(), &claimed, 8);
  WriteText(dir_ + "/shard.safetensors", huge);
  s = LoadJob();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(s.message(),
            "shard.safetensors: header length 100000001 is more than the format's limit of "
            "100000000 bytes: corrupt or not a safetensors file");
}

TEST_F(ConfinedTest, ErrorsNameFileAndKeyButNeverTheValue) {
  nlohmann::json config = ConfigJson(config_);
  config["model_type"] = "s3cr3t-model-type";
  WriteText(dir_ + "/config.json", config.dump());
  auto c = ReadCheckpointConfig(Folder(), 1 << 20);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "config.json: model_type is not supported (supported: \"gpt_neox\", \"gpt_neo\", "
            "\"mamba\", \"mamba2\"; the value is not repeated here)");
  config = ConfigJson(config_);
  config["hidden_size"] = "s3cr3t";
  config["rope_scaling"] = {{"type", "s3cr3t"}};
  WriteText(dir_ + "/config.json", config.dump());
  c = ReadCheckpointConfig(Folder(), 1 << 20);
  EXPECT_EQ(c.status().message(), "config.json: rope_scaling is not supported (only null)");
  config.erase("rope_scaling");
  WriteText(dir_ + "/config.json", config.dump());
  c = ReadCheckpointConfig(Folder(), 1 << 20);
  EXPECT_EQ(c.status().message(),
            "config.json: bad value for hidden_size (expected an integer, got a JSON string)");

  // tokenizer.json: the position of a syntax error, not the text there.
  WriteText(dir_ + "/tokenizer.json", R"({"model": s3cr3t})");
  auto tok = LoadCheckpointTokenizer(Folder(), 1 << 20);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok.status().message(), "tokenizer.json: malformed JSON near byte 11");
  auto tok_small = LoadCheckpointTokenizer(Folder(), 4);
  EXPECT_EQ(std::string(tok_small.status().message()),
            "tokenizer.json: 17 bytes, more than this worker's limit of 4 bytes for this file");

  // A safetensors header entry with an unknown dtype: the key, not the value.
  ASSERT_EQ(std::rename((outer_ + "/secret.safetensors").c_str(), weights().c_str()), 0);
  std::string bytes = ReadText(weights());
  const size_t at = bytes.find("\"F32\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "\"S3C\"");
  WriteText(weights(), bytes);
  auto file = SafetensorsFile::Open(*Folder().OpenFile("model.safetensors", 1 << 30));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("model.safetensors: tensor '"));
  EXPECT_THAT(std::string(file.status().message()),
              HasSubstr("': unknown dtype (the format's dtypes: BOOL, U8, "));
  EXPECT_THAT(std::string(file.status().message()), ::testing::Not(HasSubstr("S3C")));
}

// Model names resolve only under the roots: absolute, via '../' and via a
// symbolic link, refused with PERMISSION_DENIED naming the model as the
// job gave it and nothing of the worker's own folders.
TEST_F(ConfinedTest, ModelOutsideTheRootsIsPermissionDenied) {
  const std::string root = outer_ + "/root";
  const std::string outside = outer_ + "/outside";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ASSERT_EQ(std::rename(dir_.c_str(), outside.c_str()), 0);  // a real checkpoint
  ASSERT_EQ(std::rename((outer_ + "/secret.safetensors").c_str(),
                        (outside + "/model.safetensors").c_str()),
            0);
  ASSERT_EQ(system(("cp -r '" + outside + "' '" + root + "/ckpt'").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/link").c_str()), 0);
  ModelFilePolicy policy;
  policy.roots = {root};
  policy.hf_cache = false;
  auto outside_message = [](const std::string& name) {
    return "model '" + name +
           "': outside this worker's model folders (--model-root, the Hugging Face cache); "
           "nothing outside them is read";
  };
  for (const std::string& name :
       {outside, std::string("/etc"), root + "/../outside", root + "/ckpt/../../outside",
        std::string("../outside"), std::string("ckpt/../../outside"), std::string("./..")}) {
    SCOPED_TRACE(name);
    auto source = ResolveModelSource(name, policy);
    EXPECT_EQ(source.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(source.status().message(), outside_message(name));
  }
  for (const std::string& name : {root + "/link", std::string("./link"), std::string("link/")}) {
    SCOPED_TRACE(name);
    auto source = ResolveModelSource(name, policy);
    EXPECT_EQ(source.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(source.status().message(),
              "model '" + name +
                  "': a symbolic link leads outside this worker's model folders "
                  "(--model-root, the Hugging Face cache)");
  }
  auto missing = ResolveModelSource("./nope", policy);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "model './nope': no such checkpoint folder under this worker's model folders "
            "(--model-root) and not an ORG/NAME repo id");
  // Inside the roots: absolute and relative, and it loads.
  for (const std::string& name : {root + "/ckpt", std::string("./ckpt"), std::string("ckpt/")}) {
    SCOPED_TRACE(name);
    auto source = ResolveModelSource(name, policy);
    ASSERT_TRUE(source.ok()) << source.status();
    EXPECT_EQ(source->folder.path(), RealPathOf(root + "/ckpt"));
    EXPECT_TRUE(LoadModelCheckpoint(source->folder, c10::kFloat, kCpu, policy.limits).ok());
  }
  // No roots at all: presets only.
  ModelFilePolicy none;
  none.hf_cache = false;
  EXPECT_EQ(ResolveModelSource(root + "/ckpt", none).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(ResolveModelSource("pythia-tiny", none).ok());
}

TEST(ConfinedFile, NamesAndPathsAreCheckedLexically) {
  EXPECT_EQ(NormalizePathLexically("/a/./b/../c"), "/a/c");
  EXPECT_EQ(NormalizePathLexically("/x/../.."), "/");
  EXPECT_EQ(NormalizePathLexically("a//b/"), "a/b");
  EXPECT_EQ(NormalizePathLexically("../x"), "");
  EXPECT_EQ(NormalizePathLexically("a/../../x"), "");
  EXPECT_EQ(NormalizePathLexically("./"), ".");
  EXPECT_TRUE(PathWithin("/a/b", "/a"));
  EXPECT_TRUE(PathWithin("/a", "/a"));
  EXPECT_FALSE(PathWithin("/ab", "/a"));
  EXPECT_TRUE(PathWithin("/etc", "/"));
  EXPECT_TRUE(CheckPlainFileName("model-00001-of-00002.safetensors", "f").ok());
  EXPECT_EQ(CheckPlainFileName(std::string(256, 'a'), "f").message(),
            "f: a file name of 256 bytes (at most 255)");
  EXPECT_EQ(CheckPlainFileName(std::string("a\0b", 3), "f").message(),
            "f: a file name with a NUL byte");
}

}  // namespace
}  // namespace layerflow::worker

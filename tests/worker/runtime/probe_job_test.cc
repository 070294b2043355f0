// Jobs that go beyond the layer metrics: spectra requested as analyses, and
// the probing pipeline in process — EXTRACT chunks write their last-token
// features, a PROBE job trains on those files (the coordinator's artifact
// store and the worker loop carry them between machines; tested in
// tests/integration).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "catalog/analyses.h"
#include "tests/testing/status_matchers.h"
#include "worker/analysis/spectrum.h"
#include "worker/data/kvpr.h"
#include "worker/model/checkpoint.h"
#include "worker/model/language_model.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/probe/probe_stats.h"
#include "worker/probe/probe_trainer.h"
#include "worker/runtime/feature_file.h"
#include "worker/runtime/job_runner.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::Eq;
using Key = std::tuple<std::string, int32_t, int32_t, int32_t, int32_t>;
using StatMap = std::map<Key, MetricStat>;

void Merge(StatMap& into, const ChunkResult& chunk) {
  for (const MetricStat& s : chunk.stats) {
    MetricStat& m = into[{s.metric, s.layer, s.layer_b, s.head, s.position}];
    m.metric = s.metric;
    m.sum += s.sum;
    m.sum_sq += s.sum_sq;
    m.count += s.count;
  }
}

JobConfig Job(const std::string& model) {
  JobConfig c;
  c.model = model;
  c.init_scheme = "reference";
  c.seed = 3;
  c.dataset = "kvpr";
  c.num_classes = 3;
  c.context_length = 600;
  c.analyses = {"adjacent_cos"};
  c.num_prompts = 6;
  c.prompts_per_chunk = 4;
  c.dtype = "fp32";
  return c;
}

StatMap RunAll(const JobConfig& config, std::vector<std::string>* feature_files = nullptr,
               const ModelFilePolicy& files = ModelFilePolicy{}) {
  auto runner = CreateJobRunner(config, DeviceConfig{}, files);
  EXPECT_TRUE(runner.ok()) << runner.status();
  StatMap merged;
  for (int64_t k = 0; k < (*runner)->num_chunks(); ++k) {
    auto chunk = (*runner)->RunChunk(k);
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    Merge(merged, *chunk);
    if (feature_files != nullptr) {
      EXPECT_FALSE(chunk->features_path.empty()) << "chunk " << k;
      feature_files->push_back(chunk->features_path);
    } else {
      EXPECT_TRUE(chunk->features_path.empty());
    }
  }
  return merged;
}

// Every (layer, head) gets the 13 summaries; the bin fractions of each prompt
// sum to 1; SSMs have no dsf variant, attention does.
TEST(SpectraJob, EveryLayerAndHeadOfEveryArchitecture) {
  for (const char* model : {"pythia-tiny", "gpt-neo-tiny", "mamba-tiny", "mamba2-tiny"}) {
    JobConfig config = Job(model);
    config.analyses = {"adjacent_cos", "spectrum", "spectrum_dsf"};
    const StatMap rows = RunAll(config);
    const ModelConfig arch = FindModelPreset(model)->config;
    const int64_t groups = arch.architecture == "gpt_neox"  ? arch.gpt_neox.num_attention_heads
                           : arch.architecture == "gpt_neo" ? arch.gpt_neo.num_heads
                           : arch.architecture == "mamba2"  ? arch.mamba2.num_heads
                                                            : 1;
    bool dsf_differs = false;
    for (const std::string prefix : {"spectrum", "spectrum_dsf"}) {
      for (int32_t l = 1; l <= arch.num_layers(); ++l) {
        for (int32_t g = 0; g < groups; ++g) {
          double fractions = 0;
          for (const std::string& name : SpectrumAccumulator::MetricNames(prefix)) {
            auto it = rows.find({name, l, -1, g, -1});
            ASSERT_NE(it, rows.end()) << model << " " << name << " layer " << l << " head " << g;
            EXPECT_EQ(it->second.count, config.num_prompts) << model << " " << name;
            if (name.find("_frac_") != std::string::npos) fractions += it->second.sum;
          }
          EXPECT_NEAR(fractions, config.num_prompts, 1e-9) << model << " layer " << l;
          if (prefix == "spectrum") {
            const double a = rows.at({"spectrum_q50", l, -1, g, -1}).sum;
            const double b = rows.at({"spectrum_dsf_q50", l, -1, g, -1}).sum;
            dsf_differs |= a != b;
          }
        }
      }
    }
    const bool attention = arch.architecture == "gpt_neox" || arch.architecture == "gpt_neo";
    EXPECT_EQ(dsf_differs, attention) << model;
    EXPECT_EQ(rows.count({"spectrum_q50", 0, -1, 0, -1}), 0u) << "blocks start at 1";
  }
}

// EXTRACT → features files → PROBE, for a Transformer and an SSM.
TEST(ProbeJob, ExtractThenProbeInProcess) {
  for (const char* model : {"pythia-tiny", "mamba-tiny"}) {
    JobConfig extract = Job(model);
    extract.num_prompts = 30;
    extract.prompts_per_chunk = 8;
    extract.has_probe = true;
    extract.probe.task = "kvpr";
    extract.probe.classes = 3;
    extract.probe.epochs = 60;
    extract.probe.feature_dtype = "fp32";
    std::vector<std::string> files;
    RunAll(extract, &files);
    ASSERT_EQ(files.size(), 4u);

    // The first file holds h_T at every point for prompts 0..7.
    auto file = SafetensorsFile::Open(files[0]);
    ASSERT_TRUE(file.ok()) << file.status();
    const ModelConfig arch = FindModelPreset(model)->config;
    const SafetensorsTensor* f = (*file)->Find("features");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->shape, (std::vector<int64_t>{8, arch.num_layers() + 2, arch.hidden_size()}));
    const SafetensorsTensor* labels = (*file)->Find("labels");
    ASSERT_NE(labels, nullptr);
    const int32_t* l = reinterpret_cast<const int32_t*>(labels->data);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(l[i], i % 3) << "KVPR classes cycle";
    {
      // Against a direct forward of prompt 5.
      c10::InferenceMode guard;
      KvprOptions options;
      options.seed = extract.seed;
      options.num_classes = extract.num_classes;
      options.context_length = extract.context_length;
      auto dataset = KvprDataset::Create(options, std::make_shared<ByteTokenizer>());
      ASSERT_TRUE(dataset.ok());
      auto example = dataset->Generate(5);
      ASSERT_TRUE(example.ok());
      auto m = CreateRandomModel(arch, *ParseInitScheme("reference"), 3, c10::Device(c10::kCPU),
                                 c10::kFloat);
      ASSERT_TRUE(m.ok());
      std::vector<int64_t> ids(example->token_ids.begin(), example->token_ids.end());
      at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
      const float* data = reinterpret_cast<const float*>(f->data);
      const int64_t P = arch.num_layers() + 2, d = arch.hidden_size();
      (*m)->Forward(input, [&](int64_t point, const at::Tensor& h) {
        at::Tensor want = h[0][h.size(1) - 1];
        at::Tensor got =
            at::from_blob(const_cast<float*>(data + (5 * P + point) * d), {d}, at::kFloat);
        EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-6)) << model << " point " << point;
      });
    }

    JobConfig probe = extract;
    probe.kind = JobConfig::Kind::kProbe;
    std::reverse(files.begin(), files.end());  // any order
    auto result = RunProbeJob(probe, files, DeviceConfig{});
    ASSERT_TRUE(result.ok()) << result.status();
    StatMap rows;
    Merge(rows, *result);
    // Every probe row is the trainer's report on the stacked feature files
    // (prompt order), stored as sums: per-seed rows hold one value per seed,
    // the nulls one per permutation.
    ProbeReport want;
    {
      c10::InferenceMode guard;
      std::vector<std::pair<int64_t, at::Tensor>> by_prompt;
      std::map<int64_t, int32_t> label_of;
      for (const std::string& path : files) {
        auto chunk = SafetensorsFile::Open(path);
        ASSERT_TRUE(chunk.ok());
        const SafetensorsTensor* t = (*chunk)->Find("features");
        const auto* index = reinterpret_cast<const int64_t*>((*chunk)->Find("prompt_index")->data);
        const auto* label = reinterpret_cast<const int32_t*>((*chunk)->Find("labels")->data);
        const at::Tensor all =
            at::from_blob(const_cast<uint8_t*>(t->data), t->shape, at::kFloat).clone();
        for (int64_t i = 0; i < t->shape[0]; ++i) {
          by_prompt.push_back({index[i], all[i]});
          label_of[index[i]] = label[i];
        }
      }
      std::sort(by_prompt.begin(), by_prompt.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<at::Tensor> rows_of;
      std::vector<int32_t> labels;
      for (const auto& [index, t] : by_prompt) {
        rows_of.push_back(t);
        labels.push_back(label_of.at(index));
      }
      ProbeOptions options;
      options.num_classes = 3;
      options.epochs = 60;  // everything else: the job's defaults
      auto report = TrainProbes(at::stack(rows_of), labels, options, c10::Device(c10::kCPU));
      ASSERT_TRUE(report.ok()) << report.status();
      want = *std::move(report);
    }
    auto sum_of = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return s;
    };
    auto row = [&](const std::string& metric, int32_t layer) -> const MetricStat& {
      static const MetricStat kMissing;
      auto it = rows.find({metric, layer, -1, -1, -1});
      EXPECT_NE(it, rows.end()) << metric << " layer " << layer;
      return it == rows.end() ? kMissing : it->second;
    };
    const int32_t P = arch.num_layers() + 2;
    ASSERT_EQ(want.num_points, P);
    // 30 prompts, 10 per class: 6 / 2 / 2 per class (60/20/20).
    EXPECT_EQ(want.num_train, 18);
    EXPECT_EQ(want.num_val, 6);
    EXPECT_EQ(want.num_test, 6);
    EXPECT_EQ(row("probe_num_train", 0).sum, 18);
    EXPECT_EQ(row("probe_num_val", 0).sum, 6);
    EXPECT_EQ(row("probe_num_test", 0).sum, 6);
    double chosen = 0;
    for (int32_t p = 0; p < P; ++p) {
      const ProbePointReport& w = want.points[p];
      const MetricStat& acc = row("probe_test_acc", p);
      EXPECT_EQ(acc.count, 3) << "three seeds";
      EXPECT_NEAR(acc.sum, sum_of(w.test_accuracy_per_seed), 1e-12) << p;
      const MetricStat& val = row("probe_val_acc", p);
      EXPECT_EQ(val.count, 3);
      EXPECT_NEAR(val.sum, sum_of(w.val_accuracy_per_seed), 1e-12) << p;
      // The Wilson interval over the 6 test examples around the seed mean.
      const Interval wilson = WilsonInterval(acc.sum / 3, 6);
      EXPECT_NEAR(row("probe_test_acc_lo", p).sum, wilson.lo, 1e-12) << p;
      EXPECT_NEAR(row("probe_test_acc_hi", p).sum, wilson.hi, 1e-12) << p;
      EXPECT_LE(row("probe_test_acc_lo", p).sum, acc.sum / 3 + 1e-12);
      EXPECT_GE(row("probe_test_acc_hi", p).sum, acc.sum / 3 - 1e-12);
      const MetricStat& c = row("probe_chosen", p);
      EXPECT_EQ(c.count, 3);
      EXPECT_EQ(c.sum, w.times_chosen) << p;
      chosen += c.sum;
      EXPECT_EQ(rows.count({"probe_train_acc", p, -1, -1, -1}), 1u);
      EXPECT_EQ(rows.count({"probe_mae", p, -1, -1, -1}), 1u);
    }
    EXPECT_EQ(chosen, 3) << "each seed chooses one layer";
    EXPECT_NEAR(row("probe_chance", 0).sum, 1.0 / 3, 1e-12);
    EXPECT_EQ(row("probe_best_layer", 0).sum, want.best_point);
    EXPECT_EQ(row("probe_best_acc", 0).count, 3);
    EXPECT_NEAR(row("probe_best_acc", 0).sum, sum_of(want.best_test_accuracy_per_seed), 1e-12);
    EXPECT_EQ(row("probe_final_acc", 0).sum, row("probe_test_acc", P - 1).sum);
    EXPECT_EQ(row("probe_drop", 0).count, 3);
    EXPECT_NEAR(row("probe_drop", 0).sum,
                row("probe_best_acc", 0).sum - row("probe_final_acc", 0).sum, 1e-12);
    // The label-permutation null: 20 permutations by default.
    ASSERT_EQ(want.best_null.values.size(), 20u);
    for (const auto& [name, null] :
         {std::pair<std::string, const ProbeNull*>("best_acc", &want.best_null),
          std::pair<std::string, const ProbeNull*>("drop", &want.drop_null)}) {
      const MetricStat& values = row("probe_null_" + name, 0);
      EXPECT_EQ(values.count, 20) << name;
      EXPECT_NEAR(values.sum, sum_of(null->values), 1e-12) << name;
      EXPECT_NEAR(values.sum / 20, null->mean, 1e-12) << name;
      EXPECT_EQ(row("probe_null_" + name + "_p95", 0).sum, null->p95) << name;
      const double p_value = row("probe_" + name + "_pvalue", 0).sum;
      EXPECT_EQ(p_value, null->p_value) << name;
      EXPECT_GE(p_value, 1.0 / 21) << name;
      EXPECT_LE(p_value, 1.0) << name;
    }
    // Example-view CKA: every residual pair, at most 1, and (points 1, 2)
    // equal to the float64 CKA of the stored features in feature-space form.
    for (int32_t a = 0; a <= arch.num_layers(); ++a) {
      for (int32_t b = a + 1; b <= arch.num_layers(); ++b) {
        for (const char* metric : {"cka_example_biased", "cka_example_unbiased"}) {
          auto it = rows.find({metric, a, b, -1, -1});
          ASSERT_NE(it, rows.end()) << metric << " " << a << "," << b;
          EXPECT_EQ(it->second.count, 1);
          EXPECT_LE(it->second.sum, 1.0 + 1e-9) << metric;
        }
      }
    }
    EXPECT_EQ(rows.count({"cka_example_biased", 0, arch.num_layers() + 1, -1, -1}), 0u);
    {
      // Biased CKA of points 1 and 2 in its feature-space form (point 0, the
      // embedding of the template's last token, is the same for every
      // example: a constant representation, CKA 0 by convention),
      // ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), from the files.
      c10::InferenceMode guard;
      std::vector<at::Tensor> parts;
      for (const std::string& path : files) {
        auto chunk = SafetensorsFile::Open(path);
        ASSERT_TRUE(chunk.ok());
        const SafetensorsTensor* t = (*chunk)->Find("features");
        parts.push_back(at::from_blob(const_cast<uint8_t*>(t->data), t->shape, at::kFloat)
                            .to(at::kDouble)
                            .clone());
      }
      at::Tensor all = at::cat(parts, 0);  // prompt order does not change CKA
      at::Tensor x = all.select(1, 1), y = all.select(1, 2);
      x = x - x.mean(0, true);
      y = y - y.mean(0, true);
      const double cross = at::matmul(y.t(), x).square().sum().item<double>();
      const double want = cross / std::sqrt(at::matmul(x.t(), x).square().sum().item<double>() *
                                            at::matmul(y.t(), y).square().sum().item<double>());
      EXPECT_NEAR(rows.at({"cka_example_biased", 1, 2, -1, -1}).sum, want, 1e-9) << model;
      EXPECT_EQ(rows.at({"cka_example_biased", 0, 1, -1, -1}).sum, 0.0) << model;
      // Its baseline: the estimators on the Gaussian draws of shape [N, d]
      // (the accumulator's prompt 0), one value each.
      const at::Tensor draws =
          CkaBaselineStates(0, all.size(0), all.size(2), at::TensorOptions().dtype(at::kDouble));
      for (bool unbiased : {false, true}) {
        const Key key{unbiased ? "cka_example_baseline_unbiased" : "cka_example_baseline_biased", 0,
                      -1, -1, -1};
        ASSERT_EQ(rows.count(key), 1u) << model;
        EXPECT_EQ(rows.at(key).count, 1);
        EXPECT_NEAR(rows.at(key).sum,
                    LinearCka(draws[0], draws[1],
                              unbiased ? CkaEstimator::kUnbiased : CkaEstimator::kBiased),
                    1e-9)
            << model;
      }
    }
    {
      // skip_training (example_cka without a probe): no probe rows, and the
      // same example-view CKA rows as the probe job's.
      JobConfig cka_only = probe;
      cka_only.probe.train = false;
      auto only = RunProbeJob(cka_only, files, DeviceConfig{});
      ASSERT_TRUE(only.ok()) << only.status();
      StatMap cka_rows;
      Merge(cka_rows, *only);
      size_t example_rows = 0;
      for (const auto& [key, stat] : rows) {
        const std::string& metric = std::get<0>(key);
        if (metric.rfind("probe_", 0) == 0) {
          EXPECT_EQ(cka_rows.count(key), 0u) << metric;
          continue;
        }
        ASSERT_EQ(cka_rows.count(key), 1u) << metric;
        EXPECT_EQ(cka_rows.at(key).sum, stat.sum) << metric;
        ++example_rows;
      }
      EXPECT_EQ(cka_rows.size(), example_rows);
      EXPECT_GT(example_rows, 0u);
    }
    for (const std::string& path : files) std::remove(path.c_str());
  }
}

// MDQA (synthetic) and MQAR run as jobs like KVPR; MDQA's gold document
// is the probing label.
TEST(DataSetJobs, MdqaAndMqarRunAsJobs) {
  JobConfig mdqa = Job("mamba-tiny");
  mdqa.dataset = "mdqa";
  mdqa.context_length = 1500;
  mdqa.has_probe = true;
  mdqa.probe.task = "mdqa";
  mdqa.probe.feature_dtype = "fp32";
  std::vector<std::string> files;
  const StatMap rows = RunAll(mdqa, &files);
  ASSERT_EQ(rows.count({"adjacent_cos", 0, -1, -1, -1}), 1u);
  EXPECT_EQ(rows.at({"adjacent_cos", 0, -1, -1, -1}).count, mdqa.num_prompts);
  ASSERT_FALSE(files.empty());
  auto file = SafetensorsFile::Open(files[0]);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsTensor* labels = (*file)->Find("labels");
  ASSERT_NE(labels, nullptr);
  for (int64_t i = 0; i < labels->shape[0]; ++i) {
    EXPECT_EQ(reinterpret_cast<const int32_t*>(labels->data)[i], i % 3);
  }
  for (const std::string& path : files) std::remove(path.c_str());

  JobConfig mqar = Job("gpt-neo-tiny");
  mqar.dataset = "mqar";
  mqar.context_length = 128;
  const StatMap mqar_rows = RunAll(mqar);
  const MetricStat& cos = mqar_rows.at({"adjacent_cos", 1, -1, -1, -1});
  EXPECT_EQ(cos.count, mqar.num_prompts);
  EXPECT_TRUE(std::isfinite(cos.sum));

  JobConfig unknown = Job("pythia-tiny");
  unknown.dataset = "squad";
  auto runner = CreateJobRunner(unknown, DeviceConfig{});
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(runner.status().message().find("dataset: unknown 'squad'"), std::string::npos)
      << runner.status();

  JobConfig bad_features = Job("pythia-tiny");
  bad_features.probe.feature_dtype = "bf16";
  runner = CreateJobRunner(bad_features, DeviceConfig{});
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      runner.status().message().find("probe.feature_dtype: unknown 'bf16'; known: fp16, fp32"),
      std::string::npos)
      << runner.status();
}

// A job on a checkpoint folder: the preset's random weights saved as a
// Hugging Face checkpoint give bit-identical statistics.
TEST(CheckpointJob, EqualsThePresetWithTheSameWeights) {
  JobConfig preset = Job("pythia-tiny");
  preset.init_scheme = "xavier_normal";
  preset.seed = 17;
  const std::string dir = ::testing::TempDir() + "/tiny_checkpoint";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  {
    c10::InferenceMode guard;
    auto model =
        CreateRandomModel(FindModelPreset("pythia-tiny")->config, *ParseInitScheme("xavier_normal"),
                          17, c10::Device(c10::kCPU), c10::kFloat);
    ASSERT_TRUE(model.ok()) << model.status();
    std::vector<at::Tensor> keep;
    std::vector<SafetensorsWriteTensor> tensors;
    for (const auto& [name, t] : (*model)->parameters().items()) {
      keep.push_back(t.contiguous());
      SafetensorsWriteTensor w;
      w.name = name;
      w.dtype = SafetensorsDtype::kF32;
      w.shape.assign(t.sizes().begin(), t.sizes().end());
      w.data = keep.back().data_ptr();
      w.nbytes = keep.back().nbytes();
      tensors.push_back(w);
    }
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    std::FILE* config = std::fopen((dir + "/config.json").c_str(), "w");
    std::fputs(R"({"model_type": "gpt_neox", "vocab_size": 512, "hidden_size": 64,
                   "num_hidden_layers": 2, "num_attention_heads": 4,
                   "intermediate_size": 256, "rotary_pct": 0.25,
                   "rotary_emb_base": 10000, "use_parallel_residual": true,
                   "layer_norm_eps": 1e-5})",
               config);
    std::fclose(config);
  }
  JobConfig checkpoint = preset;
  checkpoint.model = dir;
  checkpoint.init_scheme = "reference";
  // Checkpoints load only under the worker's model roots (--model-root).
  ModelFilePolicy files;
  files.roots = {::testing::TempDir()};
  files.hf_cache = false;
  const StatMap want = RunAll(preset);
  const StatMap got = RunAll(checkpoint, nullptr, files);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [key, stat] : want) {
    EXPECT_EQ(got.at(key).sum, stat.sum) << std::get<0>(key) << " " << std::get<1>(key);
    EXPECT_EQ(got.at(key).sum_sq, stat.sum_sq) << std::get<0>(key);
  }

  checkpoint.init_scheme = "normal(0.1)";
  auto scheme = CreateJobRunner(checkpoint, DeviceConfig{}, files);
  EXPECT_EQ(scheme.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      scheme.status().message().rfind("init_scheme: 'normal(0.1)' applies to presets only", 0), 0u)
      << scheme.status();
  checkpoint.model = dir + "/missing";
  checkpoint.init_scheme = "reference";
  auto missing = CreateJobRunner(checkpoint, DeviceConfig{}, files);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(), "model: model '" + dir + "/missing': not found")
      << missing.status();

  // Regression (issue 14): the same folder on a worker whose roots do not
  // hold it (only the Hugging Face cache) is refused, absolute or through
  // '../', before anything in it is read.
  checkpoint.model = dir;
  auto outside = CreateJobRunner(checkpoint, DeviceConfig{});
  EXPECT_THAT(outside.status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       Eq("model: model '" + dir +
                          "': outside this worker's model folders (--model-root, "
                          "the Hugging Face cache); nothing outside them is read")));
  ModelFilePolicy inner = files;
  inner.roots = {dir + "/inner"};
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "/inner'").c_str()), 0);
  checkpoint.model = "../tiny_checkpoint/../tiny_checkpoint";
  auto climbing = CreateJobRunner(checkpoint, DeviceConfig{}, inner);
  EXPECT_THAT(climbing.status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       Eq("model: model '../tiny_checkpoint/../tiny_checkpoint': outside this "
                          "worker's model folders (--model-root, the Hugging Face cache); "
                          "nothing outside them is read")));
}

// Regression (bench/RESULTS.md, 2026-12-01): random-init Mamba-1.4B grows
// its float32 residual stream to ~1e6, and the probe's default fp16 feature
// file turned every state beyond 65504 into inf. A job whose states reach
// ~1e6 (pythia-tiny drawn from normal(50)) asks for fp16 features: its file
// must come back finite and equal to the float32 states within float32
// precision, stored in fp32 and saying so; a PROBE job reads it beside an
// fp16 file.
TEST(FeatureFile, StatesBeyondFp16RangeReadBackFinite) {
  JobConfig extract = Job("pythia-tiny");
  extract.init_scheme = "normal(50)";
  extract.num_prompts = 6;
  extract.prompts_per_chunk = 6;
  extract.has_probe = true;
  extract.probe.task = "kvpr";
  extract.probe.classes = 3;
  extract.probe.epochs = 5;
  extract.probe.seeds = {0};
  extract.probe.permutations = 0;
  ASSERT_EQ(extract.probe.feature_dtype, "fp16");  // the default, as in the failing run
  std::vector<std::string> files;
  RunAll(extract, &files);
  ASSERT_EQ(files.size(), 1u);

  absl::StatusOr<FeatureFile> file = ReadFeatureFile(files[0]);
  ASSERT_TRUE(file.ok()) << file.status();
  c10::InferenceMode guard;
  const ModelConfig arch = FindModelPreset("pythia-tiny")->config;
  const int64_t P = arch.num_layers() + 2, d = arch.hidden_size();
  ASSERT_EQ(file->features.sizes(), (at::IntArrayRef{6, P, d}));
  EXPECT_EQ(file->stored_dtype, "fp32");
  EXPECT_EQ(file->requested_dtype, "fp16");
  EXPECT_EQ(file->features.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(file->features).all().item<bool>()) << "inf in the feature file";
  const double max_abs = file->features.abs().max().item<double>();
  std::printf("largest |h| in the feature file: %g\n", max_abs);
  EXPECT_GT(max_abs, kFp16Max) << "the states must exceed fp16's range for this test to mean it";
  EXPECT_LT(max_abs, 1e9);
  {
    auto raw = SafetensorsFile::Open(files[0]);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_EQ((*raw)->metadata().at("feature_dtype"), "fp32");
    EXPECT_EQ((*raw)->metadata().at("requested_dtype"), "fp16");
    EXPECT_NEAR(std::stod((*raw)->metadata().at("max_abs")), max_abs, 1e-6 * max_abs);
  }
  // Against a direct float32 forward of each prompt.
  KvprOptions options;
  options.seed = extract.seed;
  options.num_classes = extract.num_classes;
  options.context_length = extract.context_length;
  auto dataset = KvprDataset::Create(options, std::make_shared<ByteTokenizer>());
  ASSERT_TRUE(dataset.ok());
  auto model = CreateRandomModel(arch, *ParseInitScheme(extract.init_scheme), extract.seed,
                                 c10::Device(c10::kCPU), c10::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  for (int64_t k = 0; k < 6; ++k) {
    EXPECT_EQ(file->prompt_index[k], k);
    auto example = dataset->Generate(k);
    ASSERT_TRUE(example.ok());
    std::vector<int64_t> ids(example->token_ids.begin(), example->token_ids.end());
    (*model)->Forward(at::tensor(ids, at::kLong).unsqueeze(0),
                      [&](int64_t point, const at::Tensor& h) {
                        const at::Tensor want = h[0][h.size(1) - 1];
                        const at::Tensor got = file->features[k][point];
                        const double scale = want.abs().max().item<double>();
                        EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-6 * scale))
                            << "prompt " << k << " point " << point << ": max |diff| "
                            << (got - want).abs().max().item<double>() << " of " << scale;
                      });
  }

  // The writer's choice directly: in range stays fp16 (and rounds as fp16),
  // beyond it is fp32 and exact; "fp32" is always fp32.
  const std::string dir = ::testing::TempDir();
  const at::Tensor small = at::randn({2, 3, 5}, at::kFloat) * 100;
  const at::Tensor large = small * 1e4;  // ~1e6
  for (const auto& [x, requested, want_dtype] :
       {std::tuple{small, "fp16", at::kHalf}, std::tuple{large, "fp16", at::kFloat},
        std::tuple{small, "fp32", at::kFloat}}) {
    const std::string path = dir + "/features_" + requested + ".safetensors";
    EXPECT_EQ(FeatureStorageDtype(x, requested), want_dtype);
    ASSERT_TRUE(WriteFeatureFile(path, x, {0, 1}, {7, 8}, requested).ok());
    absl::StatusOr<FeatureFile> back = ReadFeatureFile(path);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->features.scalar_type(), want_dtype);
    EXPECT_TRUE(at::equal(back->features, x.to(want_dtype)));
    EXPECT_EQ(back->prompt_index, (std::vector<int64_t>{7, 8}));
    EXPECT_EQ(back->labels, (std::vector<int32_t>{0, 1}));
    std::remove(path.c_str());
  }
  const at::Tensor with_inf = at::tensor({1.0f, INFINITY, 3.0f}).view({1, 1, 3});
  EXPECT_EQ(FeatureStorageDtype(with_inf, "fp16"), at::kHalf) << "inf the model made stays inf";
  EXPECT_EQ(WriteFeatureFile(dir + "/bad.safetensors", small, {0}, {0}, "fp16").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteFeatureFile(dir + "/bad.safetensors", small, {0, 1}, {0, 1}, "bf16").code(),
            absl::StatusCode::kInvalidArgument);

  // A PROBE job over this fp32 file and an fp16 file of the same shape
  // (prompts 6..11 of an in-range job): one dtype for both.
  JobConfig in_range = extract;
  in_range.init_scheme = "reference";
  in_range.num_prompts = 12;
  std::vector<std::string> more;
  {
    auto runner = CreateJobRunner(in_range, DeviceConfig{});
    ASSERT_TRUE(runner.ok()) << runner.status();
    auto chunk = (*runner)->RunChunk(1);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    more.push_back(chunk->features_path);
  }
  absl::StatusOr<FeatureFile> half_file = ReadFeatureFile(more[0]);
  ASSERT_TRUE(half_file.ok()) << half_file.status();
  EXPECT_EQ(half_file->stored_dtype, "fp16");
  JobConfig probe = in_range;
  probe.kind = JobConfig::Kind::kProbe;
  auto result = RunProbeJob(probe, {files[0], more[0]}, DeviceConfig{});
  EXPECT_TRUE(result.ok()) << result.status();
  for (const std::string& path : files) std::remove(path.c_str());
  for (const std::string& path : more) std::remove(path.c_str());
}

TEST(ProbeJob, MalformedFeatureFileNamesIt) {
  const std::string path = ::testing::TempDir() + "/not_features.safetensors";
  std::FILE* out = std::fopen(path.c_str(), "wb");
  std::fputs("garbage", out);
  std::fclose(out);
  JobConfig probe = Job("pythia-tiny");
  probe.kind = JobConfig::Kind::kProbe;
  auto result = RunProbeJob(probe, {path}, DeviceConfig{});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status();
  auto none = RunProbeJob(probe, {}, DeviceConfig{});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition) << none.status();
}

// --- layers: [...] (JobConfig::layers) ---

// Every layer metric and both spectra, so that each kind of row (one point,
// a pair, all pairs, per token, per head, path-wide) meets the selection.
JobConfig EveryAnalysisJob(const std::string& model) {
  JobConfig c = Job(model);
  c.analyses.clear();
  for (std::string_view name : catalog::kLayerMetricNames) c.analyses.emplace_back(name);
  for (std::string_view name : catalog::kSpectrumNames) c.analyses.emplace_back(name);
  return c;
}

// The rows a job with points `kept` keeps of the full job's (docs/metrics.md,
// "layers"): a row of one point when it is kept, a pair row (l, l + 1)
// when l is, an all-pair row (l, l') when both are, path_energy and the CKA
// baselines always.
bool Expected(const Key& key, const std::set<int32_t>& kept) {
  const auto& [metric, layer, layer_b, head, position] = key;
  if (metric == "path_energy" || metric.rfind("cka_baseline_", 0) == 0) return true;
  return kept.count(layer) > 0 && (layer_b < 0 || kept.count(layer_b) > 0);
}

// The 2-block tiny models have points 0..3: [0, 2, -1] keeps 0, 2 and the
// final point 3. Their rows must be the full job's, bit for bit: the same
// forward and accumulators run, and rows are only dropped.
TEST(LayersJob, KeepsExactlyTheFullJobsRowsAtTheListedPoints) {
  for (const char* model : {"pythia-tiny", "mamba-tiny"}) {
    const JobConfig full_config = EveryAnalysisJob(model);
    JobConfig listed_config = full_config;
    listed_config.layers = {0, 2, -1};
    const StatMap full = RunAll(full_config);
    const StatMap listed = RunAll(listed_config);
    const std::set<int32_t> kept = {0, 2, 3};
    size_t expected_rows = 0;
    for (const auto& [key, stat] : full) {
      if (!Expected(key, kept)) {
        EXPECT_EQ(listed.count(key), 0u)
            << model << ": " << std::get<0>(key) << " layer " << std::get<1>(key) << " kept";
        continue;
      }
      ++expected_rows;
      auto it = listed.find(key);
      ASSERT_NE(it, listed.end()) << model << ": " << std::get<0>(key) << " layer "
                                  << std::get<1>(key) << " layer_b " << std::get<2>(key)
                                  << " missing";
      EXPECT_EQ(it->second.sum, stat.sum) << model << " " << std::get<0>(key);
      EXPECT_EQ(it->second.sum_sq, stat.sum_sq) << model << " " << std::get<0>(key);
      EXPECT_EQ(it->second.count, stat.count) << model << " " << std::get<0>(key);
    }
    EXPECT_EQ(listed.size(), expected_rows) << model << ": rows beyond the full job's";
    // Hand-picked rows of the rule. adjacent_cos(0) pairs point 0 with its
    // true neighbour 1 (computed, not kept); 2 is the last block, whose
    // neighbour is the final norm, so no pair row starts there.
    auto has = [&](const std::string& metric, int32_t layer, int32_t layer_b = -1,
                   int32_t head = -1) {
      return listed.count({metric, layer, layer_b, head, -1}) > 0;
    };
    EXPECT_TRUE(has("adjacent_cos", 0)) << model;
    EXPECT_FALSE(has("adjacent_cos", 1)) << model;
    EXPECT_TRUE(has("step_energy", 0)) << model;
    EXPECT_FALSE(has("step_energy", 1)) << model;
    EXPECT_TRUE(has("cka_unbiased", 0)) << model;
    EXPECT_TRUE(has("intertoken_cos", 2)) << model;
    EXPECT_TRUE(has("intertoken_cos", 3)) << model;
    EXPECT_FALSE(has("intertoken_cos", 1)) << model;
    EXPECT_TRUE(has("cka_all_biased", 0, 2)) << model;
    EXPECT_FALSE(has("cka_all_biased", 0, 1)) << model;
    EXPECT_TRUE(has("path_energy", 0)) << model;
    EXPECT_TRUE(has("spectrum_q50", 2, -1, 0)) << model;
    EXPECT_FALSE(has("spectrum_q50", 1, -1, 0)) << model;
    EXPECT_TRUE(listed.count({"adjacent_cos_tokens", 0, -1, -1, 5}) > 0) << model;
    EXPECT_FALSE(listed.count({"adjacent_cos_tokens", 1, -1, -1, 5}) > 0) << model;
  }
}

// The feature files hold the listed points only, labelled with them; the
// PROBE job then reports at the true points, equal to the full job's probes
// there (each point's probe trains on its own column).
TEST(LayersJob, FeaturesAndProbesAtTheListedPoints) {
  JobConfig full_config = Job("pythia-tiny");
  full_config.num_prompts = 24;
  full_config.prompts_per_chunk = 8;
  full_config.has_probe = true;
  full_config.probe.task = "kvpr";
  full_config.probe.classes = 3;
  full_config.probe.epochs = 40;
  full_config.probe.permutations = 2;
  full_config.probe.feature_dtype = "fp32";
  JobConfig listed_config = full_config;
  listed_config.layers = {-1, 0, 2};  // any order
  std::vector<std::string> full_files, listed_files;
  RunAll(full_config, &full_files);
  RunAll(listed_config, &listed_files);
  ASSERT_EQ(listed_files.size(), full_files.size());
  const std::vector<int32_t> points = {0, 2, 3};
  for (size_t c = 0; c < full_files.size(); ++c) {
    absl::StatusOr<FeatureFile> full = ReadFeatureFile(full_files[c]);
    absl::StatusOr<FeatureFile> listed = ReadFeatureFile(listed_files[c]);
    ASSERT_TRUE(full.ok()) << full.status();
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_TRUE(full->points.empty());
    EXPECT_EQ(listed->points, points);
    EXPECT_EQ(listed->num_layers, 2);
    ASSERT_EQ(listed->features.size(1), 3);
    for (size_t k = 0; k < points.size(); ++k) {
      EXPECT_TRUE(at::equal(listed->features.select(1, static_cast<int64_t>(k)),
                            full->features.select(1, points[k])))
          << "chunk " << c << " point " << points[k];
    }
    EXPECT_EQ(listed->labels, full->labels);
  }
  JobConfig probe_full = full_config, probe_listed = listed_config;
  probe_full.kind = probe_listed.kind = JobConfig::Kind::kProbe;
  auto full_result = RunProbeJob(probe_full, full_files, DeviceConfig{});
  auto listed_result = RunProbeJob(probe_listed, listed_files, DeviceConfig{});
  ASSERT_TRUE(full_result.ok()) << full_result.status();
  ASSERT_TRUE(listed_result.ok()) << listed_result.status();
  StatMap full, listed;
  Merge(full, *full_result);
  Merge(listed, *listed_result);
  for (const char* metric : {"probe_test_acc", "probe_val_acc", "probe_train_acc"}) {
    for (int32_t layer = 0; layer <= 3; ++layer) {
      const Key key{metric, layer, -1, -1, -1};
      if (layer == 1) {
        EXPECT_EQ(listed.count(key), 0u) << metric << " at the unlisted point 1";
        continue;
      }
      ASSERT_EQ(listed.count(key), 1u) << metric << " " << layer;
      EXPECT_NEAR(listed[key].sum, full[key].sum, 1e-6) << metric << " " << layer;
    }
  }
  const double best = listed[{"probe_best_layer", 0, -1, -1, -1}].sum;
  EXPECT_TRUE(best == 0 || best == 2 || best == 3) << "a true, listed point: " << best;
  // The example-view CKA of the one residual pair kept, (0, 2).
  for (const char* metric : {"cka_example_biased", "cka_example_unbiased"}) {
    const Key pair{metric, 0, 2, -1, -1};
    ASSERT_EQ(listed.count(pair), 1u) << metric;
    EXPECT_NEAR(listed[pair].sum, full[pair].sum, 1e-9) << metric;
    EXPECT_EQ(listed.count({metric, 0, 1, -1, -1}), 0u) << metric;
    EXPECT_EQ(listed.count({metric, 1, 2, -1, -1}), 0u) << metric;
  }
  for (const auto& files : {full_files, listed_files}) {
    for (const std::string& f : files) std::remove(f.c_str());
  }
}

// A checkpoint's depth is known only on the worker: an entry beyond it
// fails the job there, naming the field, the entry and the model.
TEST(LayersJob, PointTheModelLacksFailsTheJobNamingTheField) {
  JobConfig config = Job("pythia-tiny");
  config.layers = {0, 4};
  auto runner = CreateJobRunner(config, DeviceConfig{});
  ASSERT_FALSE(runner.ok());
  EXPECT_THAT(runner.status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       Eq("layers[1]: 4 is out of range for model 'pythia-tiny' (2 blocks: "
                          "points 0..3, or -4..-1 counting from the end)")));
  config.layers = {3, -1};
  runner = CreateJobRunner(config, DeviceConfig{});
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(std::string(runner.status().message()),
            "layers[1]: -1 is point 3 of model 'pythia-tiny', the same as layers[0] (3)");
}

}  // namespace
}  // namespace layerflow::worker

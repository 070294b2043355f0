// JobRunner on LibTorch: config validation, model + data set construction,
// and the per-chunk executor (one model replica per device, the chunk's
// prompts split across devices, statistics summed by the communicator).
#include "worker/runtime/job_runner.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <thread>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/data/kvpr.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/runtime/nccl_communicator.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

// Upper bound on tokens per forward; equal-length prompts are batched up to
// it (at least one prompt per forward).
constexpr int64_t kMaxBatchTokens = 16384;

absl::Status Invalid(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// Turns the NOT_FOUND / INVALID_ARGUMENT of a parser into INVALID_ARGUMENT
// naming the JobConfig field.
absl::Status AsFieldError(const absl::Status& status, absl::string_view field) {
  return Invalid(field, status.message());
}

absl::Status ValidateJobConfig(const JobConfig& c) {
  if (c.dataset != "kvpr") {
    return Invalid("dataset", absl::StrCat("unknown '", c.dataset,
                                           "'; this worker runs: kvpr"));
  }
  if (c.num_classes < 1) {
    return Invalid("num_classes", absl::StrCat("must be >= 1, got ",
                                               c.num_classes));
  }
  if (c.context_length < 2) {
    return Invalid("context_length", absl::StrCat("must be >= 2, got ",
                                                  c.context_length));
  }
  if (c.num_prompts < 1) {
    return Invalid("num_prompts", absl::StrCat("must be >= 1, got ",
                                               c.num_prompts));
  }
  if (c.prompts_per_chunk < 1) {
    return Invalid("prompts_per_chunk", absl::StrCat("must be >= 1, got ",
                                                     c.prompts_per_chunk));
  }
  if (c.seed < 0) {
    return Invalid("seed", absl::StrCat("must be >= 0, got ", c.seed));
  }
  return absl::OkStatus();
}

class ModelJobRunner final : public JobRunner {
 public:
  ModelJobRunner(JobConfig config, KvprDataset dataset,
                   std::vector<LayerMetric> metrics,
                   std::vector<std::unique_ptr<LanguageModel>> replicas,
                   std::unique_ptr<Communicator> communicator)
      : config_(std::move(config)),
        dataset_(std::move(dataset)),
        metrics_(std::move(metrics)),
        replicas_(std::move(replicas)),
        communicator_(std::move(communicator)) {}

  int64_t num_chunks() const override {
    return (static_cast<int64_t>(config_.num_prompts) +
            config_.prompts_per_chunk - 1) /
           config_.prompts_per_chunk;
  }

  absl::StatusOr<ChunkResult> RunChunk(int64_t sequence) override {
    if (sequence < 0 || sequence >= num_chunks()) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence: chunk ", sequence, " outside [0, ",
                       num_chunks(), ")"));
    }
    const int64_t begin = sequence * config_.prompts_per_chunk;
    const int64_t end = std::min<int64_t>(config_.num_prompts,
                                          begin + config_.prompts_per_chunk);
    LF_ASSIGN_OR_RETURN(std::vector<KvprExample> examples,
                        dataset_.GenerateRange(begin, end));

    // Contiguous, balanced split of the chunk's prompts over the ranks.
    const int64_t ranks = static_cast<int64_t>(replicas_.size());
    const int64_t count = end - begin;
    std::vector<absl::Status> statuses(ranks);
    std::vector<at::Tensor> sums(ranks);
    auto run_rank = [&](int64_t r) {
      const int64_t lo = count * r / ranks;
      const int64_t hi = count * (r + 1) / ranks;
      statuses[r] = RunPrompts(*replicas_[r], examples, lo, hi, &sums[r]);
    };
    if (ranks == 1) {
      run_rank(0);
    } else {
      std::vector<std::thread> threads;
      for (int64_t r = 0; r < ranks; ++r) threads.emplace_back(run_rank, r);
      for (std::thread& t : threads) t.join();
    }
    for (const absl::Status& s : statuses) LF_RETURN_IF_ERROR(s);

    ChunkResult result;
    result.sequence = sequence;
    try {
      c10::InferenceMode guard;
      LF_RETURN_IF_ERROR(communicator_->AllReduceSum(sums))
          << "model " << config_.model;
      const at::Tensor host = sums[0].cpu();
      const auto acc = host.accessor<double, 2>();
      const std::vector<StatKey>& keys = keys_;
      for (size_t i = 0; i < keys.size(); ++i) {
        // A row no prompt of the chunk reached (adjacent_cos_tokens outside
        // the example prompts, a metric the prompts are too short for) is
        // left out: the coordinator rejects count 0, and a missing row
        // merges as zeros.
        if (acc[i][LayerMetricAccumulator::kCount] == 0) continue;
        MetricStat stat;
        stat.metric = keys[i].metric;
        stat.layer = keys[i].layer;
        stat.layer_b = keys[i].layer_b;
        stat.head = keys[i].head;
        stat.position = keys[i].position;
        stat.sum = acc[i][LayerMetricAccumulator::kSum];
        stat.sum_sq = acc[i][LayerMetricAccumulator::kSumSq];
        stat.count = static_cast<int64_t>(acc[i][LayerMetricAccumulator::kCount]);
        result.stats.push_back(std::move(stat));
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("model ", config_.model,
                                              ": reducing statistics: ",
                                              e.what_without_backtrace()));
    }
    for (const KvprExample& e : examples) {
      result.prompt_tokens.push_back(e.num_tokens);
    }
    return result;
  }

  void set_keys(std::vector<StatKey> keys) { keys_ = std::move(keys); }

 private:
  // Prompts [lo, hi) of `examples` on one replica, into *sums (float64 on the
  // replica's device). Never throws: this is the job's exception edge.
  absl::Status RunPrompts(const LanguageModel& model,
                          const std::vector<KvprExample>& examples, int64_t lo,
                          int64_t hi, at::Tensor* sums) {
    int64_t prompt = lo < hi ? examples[lo].index : -1;
    try {
      c10::InferenceMode guard;
      LayerMetricAccumulator acc(metrics_, model.num_layers(), model.device(),
                                 config_.context_length);
      int64_t i = lo;
      while (i < hi) {
        // A batch: consecutive prompts of equal length (no padding).
        const int64_t n = examples[i].num_tokens;
        const int64_t max_batch = std::max<int64_t>(1, kMaxBatchTokens / n);
        int64_t j = i;
        while (j < hi && j - i < max_batch && examples[j].num_tokens == n) ++j;
        prompt = examples[i].index;
        acc.SetNextPrompt(examples[i].index);  // job index (example prompts)
        at::Tensor ids = at::empty({j - i, n}, at::kLong);
        int64_t* out = ids.data_ptr<int64_t>();
        for (int64_t k = i; k < j; ++k) {
          out = std::copy(examples[k].token_ids.begin(),
                          examples[k].token_ids.end(), out);
        }
        model.Forward(ids, [&acc](int64_t point, const at::Tensor& hidden) {
          acc.Observe(point, hidden);
        });
        acc.EndBatch();
        i = j;
      }
      *sums = acc.sums().contiguous();
      return absl::OkStatus();
    } catch (const LayerError& e) {
      return absl::InternalError(absl::StrCat(
          "model ", config_.model, ", ", model.PointName(e.layer()),
          ", prompt ", prompt, ": ", e.what()));
    } catch (const c10::OutOfMemoryError& e) {
      return absl::ResourceExhaustedError(
          absl::StrCat("model ", config_.model, ", prompt ", prompt, ": ",
                       e.what_without_backtrace()));
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("model ", config_.model,
                                              ", prompt ", prompt, ": ",
                                              e.what_without_backtrace()));
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "model ", config_.model, ", prompt ", prompt, ": out of memory"));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("model ", config_.model,
                                              ", prompt ", prompt, ": ",
                                              e.what()));
    }
  }

  JobConfig config_;
  KvprDataset dataset_;
  std::vector<LayerMetric> metrics_;
  std::vector<StatKey> keys_;
  std::vector<std::unique_ptr<LanguageModel>> replicas_;
  std::unique_ptr<Communicator> communicator_;
};

absl::StatusOr<std::unique_ptr<JobRunner>> CreateJobRunnerOrThrow(
    const JobConfig& config, const DeviceConfig& device) {
  LF_RETURN_IF_ERROR(ValidateJobConfig(config));
  absl::StatusOr<ModelPreset> preset = FindModelPreset(config.model);
  if (!preset.ok()) return AsFieldError(preset.status(), "model");
  absl::StatusOr<InitScheme> scheme = ParseInitScheme(config.init_scheme);
  if (!scheme.ok()) return AsFieldError(scheme.status(), "init_scheme");
  LF_ASSIGN_OR_RETURN(std::vector<LayerMetric> metrics,
                      ParseLayerMetrics(config.analyses));
  LF_ASSIGN_OR_RETURN(c10::ScalarType dtype, ParseDtype(config.dtype));

  // Devices: one rank on the CPU or on each of the first gpu_count GPUs.
  std::vector<c10::Device> devices;
  if (device.device_type == "cpu") {
    devices.emplace_back(c10::kCPU);
  } else if (device.device_type == "cuda") {
    const int available = at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
    if (device.gpu_count < 1 || device.gpu_count > available) {
      return Invalid("gpu_count", absl::StrCat(device.gpu_count,
                                               " GPUs asked, ", available,
                                               " available"));
    }
    for (int i = 0; i < device.gpu_count; ++i) {
      devices.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
    }
  } else {
    return Invalid("device_type", absl::StrCat("unknown '", device.device_type,
                                               "'; known: cpu, cuda"));
  }

  auto tokenizer = std::make_shared<ByteTokenizer>();
  if (tokenizer->vocab_size() > preset->config.vocab_size()) {
    return Invalid("model", absl::StrCat("vocab_size ", preset->config.vocab_size(),
                                         " is smaller than the byte tokenizer's ",
                                         tokenizer->vocab_size()));
  }
  KvprOptions kvpr;
  kvpr.seed = config.seed;
  kvpr.num_classes = config.num_classes;
  kvpr.context_length = config.context_length;
  LF_ASSIGN_OR_RETURN(KvprDataset dataset,
                      KvprDataset::Create(kvpr, std::move(tokenizer)));

  // Replica 0 from the seeded init; the others are copies of it.
  std::vector<std::unique_ptr<LanguageModel>> replicas;
  {
    absl::StatusOr<std::unique_ptr<LanguageModel>> model =
        CreateRandomModel(preset->config, *scheme,
                                   static_cast<uint64_t>(config.seed),
                                   devices[0], dtype);
    if (!model.ok()) {
      return absl::Status(model.status().code(),
                          absl::StrCat("model ", config.model, ": ",
                                       model.status().message()));
    }
    replicas.push_back(*std::move(model));
  }
  for (size_t r = 1; r < devices.size(); ++r) {
    replicas.push_back(replicas[0]->Replicate(devices[r]));
  }

  std::unique_ptr<Communicator> communicator;
  if (devices.size() == 1) {
    communicator = CreateSingleRankCommunicator();
  } else {
    std::vector<int> indices;
    for (const c10::Device& d : devices) indices.push_back(d.index());
    LF_ASSIGN_OR_RETURN(communicator, CreateNcclCommunicator(indices));
  }

  LayerMetricAccumulator probe(metrics, preset->config.num_layers(),
                               c10::Device(c10::kCPU), config.context_length);
  auto runner = std::make_unique<ModelJobRunner>(
      config, std::move(dataset), std::move(metrics), std::move(replicas),
      std::move(communicator));
  runner->set_keys(probe.keys());
  return std::unique_ptr<JobRunner>(std::move(runner));
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobRunner>> CreateJobRunner(
    const JobConfig& config, const DeviceConfig& device) {
  // The job's exception edge for construction (RunChunk has its own).
  try {
    return CreateJobRunnerOrThrow(config, device);
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model ", config.model, ": ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model ", config.model, ": ",
                                            e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("model ", config.model, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("model ", config.model, ": ", e.what()));
  }
}

DeviceConfig DetectDevices() {
  DeviceConfig config;
  try {
    if (at::hasCUDA() && at::getNumGPUs() > 0) {
      config.device_type = "cuda";
      config.gpu_count = static_cast<int32_t>(at::getNumGPUs());
    }
  } catch (const std::exception&) {
    // A broken driver is a CPU worker, not a crashed one.
  }
#ifndef LF_WITH_CUDA
  // Without NCCL only one GPU can be driven.
  config.gpu_count = std::min<int32_t>(config.gpu_count, 1);
#endif
  return config;
}

std::vector<std::string> SupportedArchitectures() { return KnownArchitectures(); }

}  // namespace layerflow::worker

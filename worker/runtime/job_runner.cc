// JobRunner on LibTorch: config validation, model + data set construction,
// and the per-chunk executor (one model replica per device, the chunk's
// prompts split across devices, statistics summed by the communicator).
#include "worker/runtime/job_runner.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <system_error>
#include <thread>

#include <unistd.h>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#ifdef LF_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "catalog/analyses.h"
#include "catalog/chunks.h"
#include "catalog/datasets.h"
#include "catalog/dtypes.h"
#include "catalog/layers.h"
#include "common/confined_file.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/data/datasets.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/analysis/spectrum.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config_json.h"
#include "worker/model/model_checkpoint.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/model/torch_status.h"
#include "worker/runtime/feature_file.h"
#include "worker/runtime/model_cache.h"
#include "worker/runtime/model_loader.h"
#include "worker/runtime/nccl_communicator.h"
#include "worker/tokenizer/bpe_tokenizer.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

// Upper bound on tokens per forward; equal-length prompts are batched up to
// it (at least one prompt per forward).
constexpr int64_t kMaxBatchTokens = 16384;

absl::Status Invalid(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// The bytes of `path` (relative, as a sweep's DatasetSpec.path) under the
// first of the policy's roots that holds it. INVALID_ARGUMENT naming
// dataset_path for a missing or unreadable file; PERMISSION_DENIED when
// the name or a link leads outside the root. Never names a worker path.
absl::StatusOr<std::string> ReadDataFile(const std::string& path, const ModelFilePolicy& files) {
  const std::string field = "dataset_path";
  if (path.empty()) return Invalid(field, "the text data set needs a file");
  const std::string normal = NormalizePathLexically(path);
  if (path.front() == '/' || normal.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ": '", path, "' is outside the worker's model roots"));
  }
  const size_t slash = normal.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : normal.substr(0, slash);
  const std::string name = slash == std::string::npos ? normal : normal.substr(slash + 1);
  absl::Status last = absl::NotFoundError("no model roots on this worker");
  for (const ModelRoot& root : ResolveModelRoots(files)) {
    absl::StatusOr<ConfinedDir> folder = ConfinedDir::Open(
        dir.empty() ? root.resolved : root.resolved + "/" + dir, root.resolved, dir);
    if (!folder.ok()) {
      if (absl::IsPermissionDenied(folder.status())) {
        return absl::PermissionDeniedError(
            absl::StrCat(field, ": '", path, "' leads outside the worker's model roots"));
      }
      last = folder.status();
      continue;
    }
    if (!folder->Exists(name)) continue;
    absl::StatusOr<std::string> bytes = folder->ReadFile(name, files.limits.max_data_file_bytes);
    if (!bytes.ok()) {
      return absl::Status(absl::IsPermissionDenied(bytes.status())
                              ? absl::StatusCode::kPermissionDenied
                              : absl::StatusCode::kInvalidArgument,
                          absl::StrCat(field, ": ", bytes.status().message()));
    }
    return bytes;
  }
  return Invalid(field, absl::StrCat("'", path, "' is not a file under the worker's model roots"));
}

// The chunk's last-token features (ranks in order = prompts in order) into a
// fresh local feature file (ChunkResult::features_path; format and dtype
// choice: feature_file.h).
absl::StatusOr<std::string> WriteFeatures(const std::vector<at::Tensor>& per_rank,
                                          const std::vector<Prompt>& examples,
                                          const std::string& requested_dtype,
                                          const std::vector<int32_t>& points, int64_t num_layers) {
  std::vector<int32_t> labels;
  std::vector<int64_t> index;
  for (const Prompt& e : examples) {
    labels.push_back(e.gold_class);
    index.push_back(e.index);
  }
  LF_ASSIGN_OR_RETURN(const std::string path,
                      MakeTempPath("layerflow-features", /*directory=*/false));
  try {
    c10::InferenceMode guard;
    LF_RETURN_IF_ERROR(WriteFeatureFile(path, at::cat(per_rank, 0), labels, index, requested_dtype,
                                        points, num_layers));
  } catch (...) {
    return StatusOfCurrentException("gathering features");
  }
  return path;
}

// Whether the row `key` of a job that keeps the points `keep` (indexed by
// point, L + 2 entries) is kept (JobConfig::layers).
bool KeepsRow(const StatKey& key, const std::vector<bool>& keep) {
  // Not rows of a point: path_energy sums every step of the path, and the
  // CKA baselines are Gaussian draws of the prompt's shape.
  if (key.metric == LayerMetricName(LayerMetric::kPathEnergy) || key.metric == kCkaBaselineBiased ||
      key.metric == kCkaBaselineUnbiased) {
    return true;
  }
  auto kept = [&keep](int32_t point) {
    return point >= 0 && point < static_cast<int32_t>(keep.size()) && keep[point];
  };
  return kept(key.layer) && (key.layer_b < 0 || kept(key.layer_b));
}

absl::Status ValidateJobConfig(const JobConfig& c) {
  if (!catalog::IsJobDataset(c.dataset)) {
    return Invalid("dataset", absl::StrCat("unknown '", c.dataset,
                                           "'; this worker runs: ", catalog::JobDatasetList()));
  }
  if (!catalog::IsFeatureDtype(c.probe.feature_dtype)) {
    return Invalid("probe.feature_dtype", absl::StrCat("unknown '", c.probe.feature_dtype,
                                                       "'; known: ", catalog::FeatureDtypeList()));
  }
  if (c.num_classes < 1) {
    return Invalid("num_classes", absl::StrCat("must be >= 1, got ", c.num_classes));
  }
  if (c.context_length < 2) {
    return Invalid("context_length", absl::StrCat("must be >= 2, got ", c.context_length));
  }
  if (c.num_prompts < 1) {
    return Invalid("num_prompts", absl::StrCat("must be >= 1, got ", c.num_prompts));
  }
  if (c.prompts_per_chunk < 1) {
    return Invalid("prompts_per_chunk", absl::StrCat("must be >= 1, got ", c.prompts_per_chunk));
  }
  if (c.batch_prompts < 0) {
    return Invalid("batch_prompts", absl::StrCat("must be >= 0, got ", c.batch_prompts));
  }
  if (c.seed < 0) {
    return Invalid("seed", absl::StrCat("must be >= 0, got ", c.seed));
  }
  return absl::OkStatus();
}

class ModelJobRunner final : public JobRunner {
 public:
  ModelJobRunner(JobConfig config, PromptSource dataset, std::vector<LayerMetric> metrics,
                 std::vector<std::shared_ptr<const LanguageModel>> replicas,
                 std::unique_ptr<Communicator> communicator)
      : config_(std::move(config)),
        dataset_(std::move(dataset)),
        metrics_(std::move(metrics)),
        replicas_(std::move(replicas)),
        communicator_(std::move(communicator)) {}

  int64_t num_chunks() const override {
    return catalog::ChunkCount(config_.num_prompts, config_.prompts_per_chunk);
  }

  absl::StatusOr<ChunkResult> RunChunk(int64_t sequence) override {
    if (sequence < 0 || sequence >= num_chunks()) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence: chunk ", sequence, " outside [0, ", num_chunks(), ")"));
    }
    const auto data_start = std::chrono::steady_clock::now();
    if (prefetched_sequence_ != sequence) PrefetchData(sequence);
    prefetched_sequence_ = -1;
    absl::StatusOr<std::vector<Prompt>> made = prefetched_.get();
    const double data_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - data_start).count();
    LF_RETURN_IF_ERROR(made.status());
    std::vector<Prompt> examples = *std::move(made);
    // The next chunk's prompts are made while this one's forward runs.
    if (sequence + 1 < num_chunks()) PrefetchData(sequence + 1);
    const catalog::PromptRange range =
        catalog::ChunkPrompts(sequence, config_.num_prompts, config_.prompts_per_chunk);
    const int64_t begin = range.begin;
    const int64_t end = range.end;

    const int64_t ranks = static_cast<int64_t>(replicas_.size());
    const int64_t count = end - begin;
    std::vector<absl::Status> statuses(ranks);
    std::vector<at::Tensor> sums(ranks);
    std::vector<at::Tensor> features(ranks);
    const bool want_features = config_.has_probe;
    auto run_rank = [&](int64_t r) {
      const auto [lo, hi] = PlanRankPrompts(count, ranks, r, config_.batch_prompts);
      statuses[r] = RunPrompts(*replicas_[r], examples, lo, hi, &sums[r],
                               want_features ? &features[r] : nullptr);
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
    result.data_seconds = data_seconds;
    try {
      c10::InferenceMode guard;
      LF_RETURN_IF_ERROR(communicator_->AllReduceSum(sums)) << "model " << config_.model;
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
    } catch (...) {
      return StatusOfCurrentException(
          absl::StrCat("model ", config_.model, ": reducing statistics"));
    }
    for (const Prompt& e : examples) {
      result.prompt_tokens.push_back(e.num_tokens);
    }
    if (want_features) {
      absl::StatusOr<std::string> path = WriteFeatures(
          features, examples, config_.probe.feature_dtype, points_, replicas_[0]->num_layers());
      if (!path.ok()) {
        return absl::Status(path.status().code(),
                            absl::StrCat("model ", config_.model, ", chunk ", sequence,
                                         ": features: ", path.status().message()));
      }
      result.features_path = *path;
    }
    return result;
  }

  void PrefetchData(int64_t sequence) override {
    if (sequence < 0 || sequence >= num_chunks()) return;
    if (prefetched_.valid()) prefetched_.wait();  // one prefetch at a time
    const catalog::PromptRange range =
        catalog::ChunkPrompts(sequence, config_.num_prompts, config_.prompts_per_chunk);
    prefetched_sequence_ = sequence;
    auto make = [this, range]() -> absl::StatusOr<std::vector<Prompt>> {
      try {
        return dataset_(range.begin, range.end);
      } catch (const std::exception& e) {
        return absl::ResourceExhaustedError(
            absl::StrCat("prompts ", range.begin, "..", range.end, ": ", e.what()));
      }
    };
    try {
      prefetched_ = std::async(std::launch::async, make);
    } catch (const std::system_error&) {
      prefetched_ = std::async(std::launch::deferred, make);  // no thread: made by RunChunk
    }
  }

  void set_keys(std::vector<StatKey> keys) { keys_ = std::move(keys); }
  // JobConfig::layers resolved: the kept points (ascending; empty: all)
  // and the rows of the accumulators' sums that are kept (keys_ is already
  // those rows only).
  void set_points(std::vector<int32_t> points, int64_t num_layers, at::Tensor kept_rows) {
    points_ = std::move(points);
    keep_point_.assign(num_layers + 2, points_.empty());
    for (int32_t p : points_) keep_point_[p] = true;
    kept_rows_ = std::move(kept_rows);
  }
  // "spectrum" and / or "spectrum_dsf" (worker/analysis/spectrum.h).
  void set_spectra(std::vector<std::string> prefixes) { spectra_ = std::move(prefixes); }

 private:
  // Prompts [lo, hi) of `examples` on one replica, into *sums (float64 on the
  // replica's device). Never throws: this is the job's exception edge.
  // With `features`, also the last token's residual stream at every point,
  // [hi - lo, L + 2, d] on the CPU in float32 (exact for every run dtype;
  // the file's dtype is chosen when it is written, feature_file.h).
  absl::Status RunPrompts(const LanguageModel& model, const std::vector<Prompt>& examples,
                          int64_t lo, int64_t hi, at::Tensor* sums, at::Tensor* features) {
    int64_t prompt = lo < hi ? examples[lo].index : -1;
    try {
      c10::InferenceMode guard;
      LayerMetricAccumulator acc(metrics_, model.num_layers(), model.device(),
                                 config_.context_length);
      acc.SetModelDtype(model.dtype());
      std::vector<std::unique_ptr<SpectrumAccumulator>> spectra;
      // One forward for the metrics and both spectrum flavours.
      SpectrumSink sink;
      for (const std::string& prefix : spectra_) {
        spectra.push_back(std::make_unique<SpectrumAccumulator>(
            prefix, model.num_layers(), model.spectrum_groups(), model.device()));
        SpectrumSink::Callback& callback =
            prefix == "spectrum_dsf" ? sink.on_layer_dsf : sink.on_layer;
        callback = [this, accumulator = spectra.back().get()](int64_t layer,
                                                              const at::Tensor& log_lambda) {
          // A block not listed: its rows stay at count 0 and are dropped.
          if (keep_point_[layer]) accumulator->Observe(layer, log_lambda);
        };
      }
      std::vector<at::Tensor> feature_rows;
      // float32 until the file is written: an fp16 copy here would turn
      // states beyond 65504 into inf (feature_file.h).
      const at::ScalarType feature_dtype = at::kFloat;
      std::vector<int64_t> lengths;
      for (const Prompt& e : examples) lengths.push_back(e.num_tokens);
      for (const auto& [i, j] : PlanBatches(lengths, lo, hi, config_.batch_prompts)) {
        const int64_t n = examples[i].num_tokens;
        prompt = examples[i].index;
        acc.SetNextPrompt(examples[i].index);  // job index: example prompts, baseline seeds
        at::Tensor ids = at::empty({j - i, n}, at::kLong);
        int64_t* out = ids.data_ptr<int64_t>();
        for (int64_t k = i; k < j; ++k) {
          out = std::copy(examples[k].token_ids.begin(), examples[k].token_ids.end(), out);
        }
        std::vector<at::Tensor> last;
        auto observe = [&](int64_t point, const at::Tensor& hidden) {
          // Every point, listed or not: a listed point's pair metrics need
          // its neighbour, and the accumulator takes the points in order.
          if (!metrics_.empty()) acc.Observe(point, hidden);
          // A copy of the last token only (a view would keep every point's
          // whole [B, n, d] alive), on the device: one host copy per batch.
          if (features != nullptr && keep_point_[point]) {
            last.push_back(hidden.select(1, n - 1).to(feature_dtype, /*non_blocking=*/false,
                                                      /*copy=*/true));
          }
        };
        model.Forward(ids, observe, spectra.empty() ? nullptr : &sink);
        if (!metrics_.empty()) acc.EndBatch();
        if (features != nullptr) feature_rows.push_back(at::stack(last, 1).to(at::kCPU));
      }
      std::vector<at::Tensor> all_sums = {acc.sums()};
      for (const auto& s : spectra) all_sums.push_back(s->sums());
      *sums = at::cat(all_sums, 0);
      // The rows of points not listed end here, on the device: neither
      // reduced across ranks nor copied to the host.
      if (kept_rows_.defined()) *sums = sums->index_select(0, kept_rows_.to(sums->device()));
      *sums = sums->contiguous();
      if (features != nullptr) {
        const int64_t kept_points =
            points_.empty() ? model.num_layers() + 2 : static_cast<int64_t>(points_.size());
        *features = feature_rows.empty() ? at::empty({0, kept_points, model.hidden_size()},
                                                     at::TensorOptions().dtype(feature_dtype))
                                         : at::cat(feature_rows, 0);
      }
      return absl::OkStatus();
    } catch (...) {
      return StatusOfCurrentException(absl::StrCat("model ", config_.model, ", prompt ", prompt),
                                      [&model](int64_t point) { return model.PointName(point); });
    }
  }

  JobConfig config_;
  PromptSource dataset_;
  // The prompts of chunk prefetched_sequence_ (-1: none), made on their own
  // thread. Declared after dataset_ and destroyed before it: a pending
  // prefetch is waited for (std::async's future) while dataset_ still lives.
  int64_t prefetched_sequence_ = -1;
  std::future<absl::StatusOr<std::vector<Prompt>>> prefetched_;
  std::vector<LayerMetric> metrics_;
  std::vector<std::string> spectra_;
  std::vector<StatKey> keys_;
  std::vector<int32_t> points_;
  std::vector<bool> keep_point_;
  at::Tensor kept_rows_;  // undefined: every row
  std::vector<std::shared_ptr<const LanguageModel>> replicas_;
  std::unique_ptr<Communicator> communicator_;
};

absl::StatusOr<std::unique_ptr<JobRunner>> CreateJobRunnerOrThrow(const JobConfig& config,
                                                                  const DeviceConfig& device,
                                                                  const ModelFilePolicy& files,
                                                                  ModelCache* models) {
  LF_RETURN_IF_ERROR(ValidateJobConfig(config));
  // A preset (random init), or a checkpoint: a folder, or a repo id in this
  // worker's Hugging Face cache (model_loader.h); no weights read yet.
  LF_ASSIGN_OR_RETURN(
      const ModelPlan plan,
      PlanModel({config.model, config.init_scheme, static_cast<uint64_t>(config.seed)}, files));
  const bool from_checkpoint = plan.from_checkpoint();
  const ModelConfig& model_config = plan.config;
  std::shared_ptr<const Tokenizer> tokenizer = plan.tokenizer;
  // The same reading of `layers` as the coordinator's (which checked it
  // against presets only; a checkpoint's depth is known from here on),
  // before any weights are made.
  std::vector<int32_t> points;
  if (!config.layers.empty()) {
    LF_ASSIGN_OR_RETURN(points,
                        catalog::ResolveLayers(config.layers, model_config.num_layers(), "layers",
                                               absl::StrCat("model '", config.model, "'")));
  }
  // Spectra are their own accumulators; everything else is a layer metric.
  std::vector<std::string> layer_names, spectra;
  for (const std::string& name : config.analyses) {
    (catalog::IsSpectrum(name) ? spectra : layer_names).push_back(name);
  }
  std::vector<LayerMetric> metrics;
  if (!layer_names.empty() || spectra.empty()) {
    LF_ASSIGN_OR_RETURN(metrics, ParseLayerMetrics(layer_names));
  }
  LF_ASSIGN_OR_RETURN(c10::ScalarType dtype, ParseDtype(config.dtype));

  // Devices: one rank on the CPU or on each of the first gpu_count GPUs.
  std::vector<c10::Device> devices;
  if (device.device_type == "cpu") {
    devices.emplace_back(c10::kCPU);
  } else if (device.device_type == "cuda") {
    const int available = at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
    if (device.gpu_count < 1 || device.gpu_count > available) {
      return Invalid("gpu_count",
                     absl::StrCat(device.gpu_count, " GPUs asked, ", available, " available"));
    }
    for (int i = 0; i < device.gpu_count; ++i) {
      devices.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
    }
  } else {
    return Invalid("device_type",
                   absl::StrCat("unknown '", device.device_type, "'; known: cpu, cuda"));
  }

  // (mqar's ids go straight into the model's vocabulary: no tokenizer.)
  if (catalog::DatasetUsesTokenizer(config.dataset) &&
      tokenizer->vocab_size() > model_config.vocab_size()) {
    return Invalid("model",
                   absl::StrCat("vocab_size ", model_config.vocab_size(), " is smaller than the ",
                                tokenizer->name(), " tokenizer's ", tokenizer->vocab_size()));
  }
  // A text data set's file: under the worker's roots like a checkpoint,
  // read through the confined opener (regular files only, size-limited);
  // errors name the field and the path as the sweep gave it.
  std::string text_contents;
  if (catalog::DatasetReadsFile(config.dataset) ||
      (catalog::DatasetMayReadFile(config.dataset) && !config.dataset_path.empty())) {
    LF_ASSIGN_OR_RETURN(text_contents, ReadDataFile(config.dataset_path, files));
  }
  LF_ASSIGN_OR_RETURN(PromptSource dataset,
                      CreateJobDataset({.name = config.dataset,
                                        .seed = config.seed,
                                        .num_classes = config.num_classes,
                                        .context_length = config.context_length,
                                        .model_vocab_size = model_config.vocab_size(),
                                        .text_path = config.dataset_path,
                                        .text_contents = std::move(text_contents),
                                        .text_field = config.dataset_field,
                                        .num_prompts = config.num_prompts},
                                       std::move(tokenizer)));

  // Replica 0 from the seeded init; the others are copies of it. A preset's
  // replicas come from (and stay in) the worker's model cache when it has one.
  std::vector<std::shared_ptr<const LanguageModel>> replicas;
  for (size_t r = 0; r < devices.size(); ++r) {
    ModelCache::Build build = [&]() -> absl::StatusOr<std::unique_ptr<LanguageModel>> {
      if (r == 0) return BuildModel(plan, dtype, devices[0], files);
      return replicas[0]->Replicate(devices[r]);
    };
    absl::StatusOr<std::shared_ptr<const LanguageModel>> replica;
    if (models != nullptr && !from_checkpoint) {
      replica = models->GetOrBuild(
          {config.model, config.init_scheme, config.seed, config.dtype, devices[r].str()}, build);
    } else {
      absl::StatusOr<std::unique_ptr<LanguageModel>> built = build();
      if (built.ok()) {
        replica = std::shared_ptr<const LanguageModel>(*std::move(built));
      } else {
        replica = built.status();
      }
    }
    if (!replica.ok()) return replica.status();
    replicas.push_back(*std::move(replica));
  }

  std::unique_ptr<Communicator> communicator;
  if (devices.size() == 1) {
    communicator = CreateSingleRankCommunicator();
  } else {
    std::vector<int> indices;
    for (const c10::Device& d : devices) indices.push_back(d.index());
    LF_ASSIGN_OR_RETURN(communicator, CreateNcclCommunicator(indices));
  }

  // The rows of RunPrompts' accumulators, in their order: declared by the
  // metric families from the shapes alone.
  std::vector<StatKey> keys =
      LayerMetricAccumulator::Keys(metrics, model_config.num_layers(), config.context_length);
  for (const std::string& prefix : spectra) {
    const std::vector<StatKey> spectrum = SpectrumAccumulator::Keys(
        prefix, model_config.num_layers(), replicas[0]->spectrum_groups());
    keys.insert(keys.end(), spectrum.begin(), spectrum.end());
  }
  auto runner = std::make_unique<ModelJobRunner>(config, std::move(dataset), std::move(metrics),
                                                 std::move(replicas), std::move(communicator));
  runner->set_spectra(spectra);
  at::Tensor kept_rows;
  if (!config.layers.empty()) {
    std::vector<bool> keep(model_config.num_layers() + 2, false);
    for (int32_t p : points) keep[p] = true;
    std::vector<StatKey> kept;
    std::vector<int64_t> rows;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!KeepsRow(keys[i], keep)) continue;
      rows.push_back(static_cast<int64_t>(i));
      kept.push_back(std::move(keys[i]));
    }
    keys = std::move(kept);
    kept_rows = at::tensor(rows, at::kLong);
  }
  runner->set_points(std::move(points), model_config.num_layers(), std::move(kept_rows));
  runner->set_keys(std::move(keys));
  return std::unique_ptr<JobRunner>(std::move(runner));
}

}  // namespace

std::pair<int64_t, int64_t> PlanRankPrompts(int64_t count, int64_t ranks, int64_t rank,
                                            int32_t batch_prompts) {
  // Contiguous and balanced, in units of whole fixed batches when there are.
  const int64_t unit = batch_prompts > 0 ? batch_prompts : 1;
  const int64_t units = (count + unit - 1) / unit;
  return {std::min(count, units * rank / ranks * unit),
          std::min(count, units * (rank + 1) / ranks * unit)};
}

std::vector<std::pair<int64_t, int64_t>> PlanBatches(const std::vector<int64_t>& num_tokens,
                                                     int64_t lo, int64_t hi,
                                                     int32_t batch_prompts) {
  std::vector<std::pair<int64_t, int64_t>> batches;
  for (int64_t i = lo; i < hi;) {
    // Consecutive prompts of equal length (no padding), at most
    // kMaxBatchTokens tokens (one prompt at least).
    const int64_t n = num_tokens[i];
    const int64_t max_batch = std::max<int64_t>(1, kMaxBatchTokens / n);
    // Fixed batches: never past the next multiple of batch_prompts.
    const int64_t limit =
        batch_prompts > 0 ? std::min(hi, (i / batch_prompts + 1) * batch_prompts) : hi;
    int64_t j = i;
    while (j < limit && j - i < max_batch && num_tokens[j] == n) ++j;
    batches.emplace_back(i, j);
    i = j;
  }
  return batches;
}

absl::StatusOr<std::unique_ptr<JobRunner>> CreateJobRunner(const JobConfig& config,
                                                           const DeviceConfig& device,
                                                           const ModelFilePolicy& files,
                                                           ModelCache* models) {
  // The job's exception edge for construction (RunChunk has its own).
  return GuardTorch(absl::StrCat("model ", config.model),
                    [&] { return CreateJobRunnerOrThrow(config, device, files, models); });
}

std::shared_ptr<ModelCache> CreateModelCache(int64_t budget_bytes) {
  return std::make_shared<ModelCache>(budget_bytes);
}

ModelCacheStats StatsOf(const ModelCache& cache) {
  const ModelCache::Stats s = cache.stats();
  return {s.hits, s.builds, s.evictions, s.models, s.bytes};
}

std::vector<ResidentModelKey> ResidentModels(const ModelCache& cache, size_t max_count) {
  std::vector<ResidentModelKey> resident;
  for (const ModelKey& key : cache.Keys()) {
    if (resident.size() >= max_count) break;
    ResidentModelKey r{key.model, key.init_scheme, key.seed, key.dtype};
    if (std::find(resident.begin(), resident.end(), r) == resident.end()) {
      resident.push_back(std::move(r));
    }
  }
  return resident;
}

int64_t DefaultModelCacheBytes(const DeviceConfig& device) {
  int64_t smallest = 0;
#ifdef LF_WITH_CUDA
  if (device.device_type == "cuda") {
    for (int i = 0; i < device.gpu_count; ++i) {
      const int64_t total = static_cast<int64_t>(at::cuda::getDeviceProperties(i)->totalGlobalMem);
      smallest = smallest == 0 ? total : std::min(smallest, total);
    }
  }
#endif
  if (smallest == 0) {
    smallest = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  }
  return smallest / 4;
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

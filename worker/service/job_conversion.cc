#include "worker/service/job_conversion.h"

#include "common/train_spec.h"

namespace layerflow::worker {

TrainJobConfig ToTrainJobConfig(const v1::JobSpec& spec) {
  TrainJobConfig config;
  config.architecture = spec.model();
  config.init_scheme = spec.init_scheme();
  config.seed = spec.seed();
  config.settings = TrainSettingsOf(spec.train());
  return config;
}

JobConfig ToJobConfig(const v1::JobSpec& spec) {
  JobConfig config;
  config.model = spec.model();
  config.init_scheme = spec.init_scheme();
  config.seed = spec.seed();
  config.dataset = spec.dataset().name();
  config.num_classes = spec.dataset().num_classes();
  config.dataset_path = spec.dataset().path();
  config.dataset_field = spec.dataset().field();
  config.context_length = spec.context_length();
  config.analyses.assign(spec.analyses().begin(), spec.analyses().end());
  config.num_prompts = spec.num_prompts();
  config.prompts_per_chunk = spec.prompts_per_chunk();
  config.batch_prompts = spec.batch_prompts();
  config.dtype = spec.dtype();
  config.layers.assign(spec.layers().begin(), spec.layers().end());
  config.kind =
      spec.kind() == v1::JOB_KIND_PROBE ? JobConfig::Kind::kProbe : JobConfig::Kind::kExtract;
  config.has_probe = spec.has_probe();
  if (spec.has_probe()) {
    const v1::ProbeSpec& p = spec.probe();
    config.probe.task = p.task();
    config.probe.classes = p.classes();
    if (p.seeds_size() > 0) config.probe.seeds.assign(p.seeds().begin(), p.seeds().end());
    if (p.epochs() > 0) config.probe.epochs = p.epochs();
    if (p.lr() > 0) config.probe.lr = p.lr();
    if (p.weight_decay() > 0) config.probe.weight_decay = p.weight_decay();
    if (p.train_fraction() > 0) config.probe.train_fraction = p.train_fraction();
    if (p.val_fraction() > 0) config.probe.val_fraction = p.val_fraction();
    if (p.permutations() > 0) config.probe.permutations = p.permutations();
    if (!p.feature_dtype().empty()) config.probe.feature_dtype = p.feature_dtype();
    config.probe.train = !p.skip_training();
  }
  return config;
}

v1::ResultChunk ToResultChunk(const ChunkResult& chunk, const std::string& job_id,
                              const std::string& lease_id) {
  v1::ResultChunk out;
  out.set_job_id(job_id);
  out.set_lease_id(lease_id);
  out.set_sequence(chunk.sequence);
  for (const MetricStat& stat : chunk.stats) {
    v1::MetricStat* s = out.add_stats();
    s->set_metric(stat.metric);
    s->set_layer(stat.layer);
    if (stat.layer_b >= 0) s->set_layer_b(stat.layer_b);
    if (stat.head >= 0) s->set_head(stat.head);
    if (stat.position >= 0) s->set_position(stat.position);
    s->set_sum(stat.sum);
    s->set_sum_sq(stat.sum_sq);
    s->set_count(stat.count);
  }
  for (int32_t tokens : chunk.prompt_tokens) out.add_prompt_tokens(tokens);
  return out;
}

v1::WorkerCapabilities ToCapabilities(const DeviceConfig& device) {
  v1::WorkerCapabilities caps;
  caps.set_device_type(device.device_type);
  caps.set_gpu_count(device.gpu_count);
  for (const std::string& arch : SupportedArchitectures()) caps.add_architectures(arch);
  return caps;
}

}  // namespace layerflow::worker

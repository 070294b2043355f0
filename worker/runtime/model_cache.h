// Models a worker has built, kept for the jobs after it (issue 13: a sweep's
// jobs that differ only in data set, context length, analyses or prompts
// need the same weights, and building them again cost seconds a job).
//
// Keyed by what determines the weights exactly: the preset, the init
// scheme, the seed, the dtype and the device (random init is a function of
// these alone; docs/models.md). Least recently used first out, within a
// byte budget of the models' parameters. A model larger than the whole
// budget is built and handed out but not kept, and a lookup never fails
// for want of room: the cache only ever evicts. Models are shared and
// const: a job holding one keeps it alive after its eviction.
//
// Thread-safe; a build runs outside the lock, so two jobs asking for the
// same absent model at once may both build it (the second is kept).
#ifndef LAYERFLOW_WORKER_RUNTIME_MODEL_CACHE_H_
#define LAYERFLOW_WORKER_RUNTIME_MODEL_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/language_model.h"

namespace layerflow::worker {

struct ModelKey {
  std::string model;  // the preset's name
  std::string init_scheme;
  int64_t seed = 0;
  std::string dtype;
  std::string device;  // e.g. "cpu", "cuda:0"

  bool operator==(const ModelKey& other) const = default;
  std::string DebugString() const;
};

class ModelCache {
 public:
  using Build = std::function<absl::StatusOr<std::unique_ptr<LanguageModel>>()>;

  // budget_bytes <= 0 keeps nothing (every lookup builds).
  explicit ModelCache(int64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // The kept model for `key`, else build()'s, kept if it fits (evicting the
  // least recently used until it does). build()'s error is returned as it
  // is and nothing is kept.
  absl::StatusOr<std::shared_ptr<const LanguageModel>> GetOrBuild(const ModelKey& key,
                                                                  const Build& build);

  struct Stats {
    int64_t hits = 0, builds = 0, evictions = 0, models = 0, bytes = 0;
  };
  Stats stats() const;
  // The kept models' keys, most recently used first (what the worker tells
  // the scheduler it holds, issue 13).
  std::vector<ModelKey> Keys() const;

  // Bytes of a model's parameters (what the budget counts).
  static int64_t ParameterBytes(const LanguageModel& model);

 private:
  struct Entry {
    ModelKey key;
    std::shared_ptr<const LanguageModel> model;
    int64_t bytes = 0;
  };

  const int64_t budget_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  Stats stats_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_MODEL_CACHE_H_

#include "worker/runtime/model_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace layerflow::worker {

std::string ModelKey::DebugString() const {
  return absl::StrCat(model, " init ", init_scheme, " seed ", seed, " ", dtype, " on ", device);
}

int64_t ModelCache::ParameterBytes(const LanguageModel& model) {
  int64_t bytes = 0;
  for (const auto& [name, tensor] : model.parameters().items()) {
    bytes += static_cast<int64_t>(tensor.numel() * tensor.element_size());
  }
  return bytes;
}

absl::StatusOr<std::shared_ptr<const LanguageModel>> ModelCache::GetOrBuild(const ModelKey& key,
                                                                            const Build& build) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      if (it->key == key) {
        lru_.splice(lru_.begin(), lru_, it);  // now the most recently used
        ++stats_.hits;
        return lru_.front().model;
      }
    }
  }
  absl::StatusOr<std::unique_ptr<LanguageModel>> built = build();
  if (!built.ok()) return built.status();
  std::shared_ptr<const LanguageModel> model(*std::move(built));
  const int64_t bytes = ParameterBytes(*model);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.builds;
  if (bytes > budget_bytes_) return model;  // handed out, never kept
  // Another job may have built the same model meanwhile: keep one.
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if (it->key == key) {
      stats_.bytes -= it->bytes;
      --stats_.models;
      lru_.erase(it);
      break;
    }
  }
  while (!lru_.empty() && stats_.bytes + bytes > budget_bytes_) {
    stats_.bytes -= lru_.back().bytes;
    --stats_.models;
    ++stats_.evictions;
    lru_.pop_back();
  }
  lru_.push_front({key, model, bytes});
  stats_.bytes += bytes;
  ++stats_.models;
  return model;
}

ModelCache::Stats ModelCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<ModelKey> ModelCache::Keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelKey> keys;
  keys.reserve(lru_.size());
  for (const Entry& e : lru_) keys.push_back(e.key);
  return keys;
}

}  // namespace layerflow::worker

// How a job's prompts fall into result chunks (the unit of commit and
// resume): chunk k holds prompts [k * P, min(N, (k + 1) * P)) of a job of N
// prompts, P prompts per chunk. The coordinator counts the chunks it expects
// (server/spec ChunksTotal), the worker runs them (worker/runtime).
#ifndef LAYERFLOW_CATALOG_CHUNKS_H_
#define LAYERFLOW_CATALOG_CHUNKS_H_

#include <algorithm>
#include <cstdint>

namespace layerflow::catalog {

// ceil(num_prompts / prompts_per_chunk); 0 for prompts_per_chunk <= 0 or
// num_prompts <= 0.
constexpr int64_t ChunkCount(int64_t num_prompts, int64_t prompts_per_chunk) {
  if (prompts_per_chunk <= 0 || num_prompts <= 0) return 0;
  return (num_prompts + prompts_per_chunk - 1) / prompts_per_chunk;
}

// The prompts [begin, end) of chunk `sequence` (in [0, ChunkCount)).
struct PromptRange {
  int64_t begin = 0;
  int64_t end = 0;
};
constexpr PromptRange ChunkPrompts(int64_t sequence, int64_t num_prompts,
                                   int64_t prompts_per_chunk) {
  const int64_t begin = sequence * prompts_per_chunk;
  return {begin, std::min(num_prompts, begin + prompts_per_chunk)};
}

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_CHUNKS_H_

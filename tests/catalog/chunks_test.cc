// Chunk arithmetic: every prompt in exactly one chunk, chunks in order.
#include "catalog/chunks.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace layerflow::catalog {
namespace {

TEST(ChunksTest, CountIsTheCeiling) {
  EXPECT_EQ(ChunkCount(8, 2), 4);
  EXPECT_EQ(ChunkCount(7, 2), 4);
  EXPECT_EQ(ChunkCount(1, 4096), 1);
  EXPECT_EQ(ChunkCount(100000, 1), 100000);
  EXPECT_EQ(ChunkCount(0, 2), 0);
  EXPECT_EQ(ChunkCount(8, 0), 0);
  EXPECT_EQ(ChunkCount(8, -1), 0);
  static_assert(ChunkCount(5, 3) == 2);
}

TEST(ChunksTest, LastChunkIsShort) {
  const PromptRange last = ChunkPrompts(3, 7, 2);
  EXPECT_EQ(last.begin, 6);
  EXPECT_EQ(last.end, 7);
  const PromptRange first = ChunkPrompts(0, 7, 2);
  EXPECT_EQ(first.begin, 0);
  EXPECT_EQ(first.end, 2);
}

TEST(ChunksTest, ChunksCoverEveryPromptOnce) {
  for (int64_t n : {1, 2, 7, 8, 33}) {
    for (int64_t per : {1, 2, 3, 8, 40}) {
      int64_t next = 0;
      for (int64_t k = 0; k < ChunkCount(n, per); ++k) {
        const PromptRange r = ChunkPrompts(k, n, per);
        EXPECT_EQ(r.begin, next) << n << "/" << per << " #" << k;
        EXPECT_GT(r.end, r.begin);
        EXPECT_LE(r.end - r.begin, per);
        next = r.end;
      }
      EXPECT_EQ(next, n) << n << "/" << per;
    }
  }
}

}  // namespace
}  // namespace layerflow::catalog

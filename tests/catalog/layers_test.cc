#include "catalog/layers.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::catalog {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::Eq;

void ExpectInvalid(const absl::StatusOr<std::vector<int32_t>>& result, const std::string& message) {
  EXPECT_THAT(result.status(), StatusIs(absl::StatusCode::kInvalidArgument, Eq(message)));
}

// pythia-70m has 6 blocks: points 0..7, 7 the final norm.
TEST(ResolveLayersTest, NegativeEntriesCountFromTheFinalPoint) {
  auto points = ResolveLayers({0, 4, -1, -2}, 6, "spec.layers", "m");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_THAT(*points, ElementsAre(0, 4, 6, 7));
  points = ResolveLayers({-8}, 6, "spec.layers", "m");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_THAT(*points, ElementsAre(0));
}

TEST(ResolveLayersTest, EmptyIsEveryPoint) {
  auto points = ResolveLayers({}, 2, "layers", "m");
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_THAT(*points, ElementsAre(0, 1, 2, 3));
}

TEST(ResolveLayersTest, OutOfRangeNamesTheEntryAndTheModel) {
  ExpectInvalid(ResolveLayers({0, 8}, 6, "spec.layers", "spec.models[0] 'pythia-70m'"),
                "spec.layers[1]: 8 is out of range for spec.models[0] 'pythia-70m' (6 blocks: "
                "points 0..7, or -8..-1 counting from the end)");
  ExpectInvalid(ResolveLayers({-9}, 6, "layers", "model 'x'"),
                "layers[0]: -9 is out of range for model 'x' (6 blocks: points 0..7, or "
                "-8..-1 counting from the end)");
}

// 7 and -1 name the same point of a 6-block model: one row would be kept
// twice under one key.
TEST(ResolveLayersTest, TwoEntriesOnOnePointAreDuplicates) {
  ExpectInvalid(ResolveLayers({0, 7, -1}, 6, "spec.layers", "spec.models[1] 'pythia-70m'"),
                "spec.layers[2]: -1 is point 7 of spec.models[1] 'pythia-70m', the same as "
                "spec.layers[1] (7)");
  ExpectInvalid(ResolveLayers({3, 3}, 6, "layers", "m"),
                "layers[1]: 3 is point 3 of m, the same as layers[0] (3)");
}

}  // namespace
}  // namespace layerflow::catalog

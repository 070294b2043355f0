#include "catalog/dtypes.h"

#include "gtest/gtest.h"

namespace layerflow::catalog {
namespace {

TEST(DtypesTest, RunAndFeatureDtypes) {
  EXPECT_EQ(DtypeList(), "fp32, bf16, fp16");
  EXPECT_EQ(FeatureDtypeList(), "fp16, fp32");
  EXPECT_TRUE(IsDtype("bf16"));
  EXPECT_FALSE(IsDtype("fp64"));
  EXPECT_FALSE(IsFeatureDtype("bf16"));
  EXPECT_TRUE(IsFeatureDtype("fp32"));
  EXPECT_TRUE(IsDtype(kDefaultDtype));
  EXPECT_EQ(kDefaultDtype, "fp32");
  EXPECT_TRUE(IsFeatureDtype(kDefaultFeatureDtype));
  EXPECT_EQ(kDefaultFeatureDtype, "fp16");
}

}  // namespace
}  // namespace layerflow::catalog

// Data-set names and the submit-time fit check (the byte tokenizer's prompt
// lengths, worked by hand from the formats in docs/datasets.md; the check
// against the generators themselves is tests/worker/data/data_sets_test.cc).
#include "catalog/datasets.h"

#include "absl/status/status.h"
#include "catalog/defaults.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::catalog {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;

TEST(DatasetsTest, Names) {
  EXPECT_TRUE(IsKnownDataset("text"));
  EXPECT_FALSE(IsKnownDataset("squad"));
  EXPECT_TRUE(IsJobDataset("mqar"));
  EXPECT_TRUE(IsJobDataset("text"));  // the user's file (DatasetSpec.path)
  EXPECT_FALSE(IsJobDataset("squad"));
  EXPECT_EQ(JobDatasetList(), "kvpr, mdqa, mqar, text");
  EXPECT_TRUE(DatasetReadsFile("text"));
  EXPECT_FALSE(DatasetReadsFile("kvpr"));
  EXPECT_TRUE(DatasetHasClasses("kvpr"));
  EXPECT_TRUE(DatasetHasClasses("mdqa"));
  EXPECT_FALSE(DatasetHasClasses("mqar"));
  EXPECT_FALSE(DatasetHasClasses("text"));
  EXPECT_FALSE(DatasetUsesTokenizer("mqar"));
  EXPECT_TRUE(DatasetUsesTokenizer("text"));
  EXPECT_FALSE(DatasetUsesTokenizer("squad"));
}

TEST(DatasetsTest, MqarShape) {
  EXPECT_EQ(MqarVocabSize(50304), 8192);
  EXPECT_EQ(MqarVocabSize(512), 512);
  EXPECT_EQ(MqarKvPairs(16), 4);
  EXPECT_EQ(MqarKvPairs(64), 16);
  EXPECT_EQ(MqarKvPairs(2048), 16);
  EXPECT_EQ(MqarKvPairs(3), 1);
}

TEST(DatasetsTest, KvprMinimumByHand) {
  // 80 bytes of instruction, `Key: "<36>"`, `\n\nJSON data:\n{`, C pairs
  // `"<36>": "<36>"` (78 bytes) joined by ", ", `}\n\nKey: "<36>"` and
  // `\nCorresponding value:`: 204 + 78 C + 2 (C - 1).
  EXPECT_EQ(MinContextLength("kvpr", 1), 282);
  EXPECT_EQ(MinContextLength("kvpr", 11), 1082);
  EXPECT_EQ(MinContextLength("kvpr", 2), 362);
}

TEST(DatasetsTest, MdqaBoundByHand) {
  // 175 fixed bytes and 143 per document plus the digits of its number.
  EXPECT_EQ(MinContextLength("mdqa", 2), 175 + 2 * 143 + 2);
  EXPECT_EQ(MinContextLength("mdqa", 11), 175 + 11 * 143 + 9 + 2 * 2);
  EXPECT_EQ(MinContextLength("mqar", 11), 4);
  EXPECT_EQ(MinContextLength("text", 11), 2);  // the worker checks the file
  EXPECT_EQ(MinContextLength("squad", 11), -1);
}

TEST(DatasetsTest, FitCheckInTheWorkersWords) {
  EXPECT_TRUE(CheckContextFits("kvpr", 11, 1082).ok());
  EXPECT_EQ(CheckContextFits("kvpr", 11, 1081).message(),
            "context_length: 1081 tokens cannot hold 11 key-value pairs (one per gold "
            "position, num_classes=11); the KVPR prompt needs at least 1082 tokens with the "
            "byte tokenizer");
  const absl::Status mdqa = CheckContextFits("mdqa", 11, 1000);
  EXPECT_THAT(mdqa,
              StatusIs(absl::StatusCode::kInvalidArgument, "1000 tokens cannot hold 11 documents"));
  EXPECT_THAT(mdqa.message(), HasSubstr("needs at least 1761 tokens"));
  EXPECT_TRUE(CheckContextFits("mqar", 0, 16).ok());
  EXPECT_THAT(CheckContextFits("mqar", 0, 3).message(), HasSubstr("at least 4"));
  // text: any context of at least 2 tokens; the worker checks the file.
  EXPECT_TRUE(CheckContextFits("text", 11, 2).ok());
  EXPECT_THAT(CheckContextFits("text", 11, 1).message(), HasSubstr("context_length: 1"));
  EXPECT_EQ(CheckContextFits("squad", 11, 2048).message(),
            "dataset: unknown 'squad'; a job runs kvpr, mdqa, mqar, text");
}

TEST(DatasetsTest, DefaultSweepFits) {
  EXPECT_EQ(kDefaultContextLength, 2048);
  EXPECT_EQ(kDefaultDataset, "kvpr");
  EXPECT_EQ(kDefaultNumClasses, 11);
  EXPECT_TRUE(CheckContextFits(kDefaultDataset, kDefaultNumClasses, kDefaultContextLength).ok());
}

}  // namespace
}  // namespace layerflow::catalog

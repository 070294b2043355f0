#include "client/sweep_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/default_sweep.h"
#include "google/protobuf/util/message_differencer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::client {
namespace {

using ::layerflow::testing::StatusIs;
using ::testing::Eq;
using ::testing::HasSubstr;

// Expects `code` and exactly `message` (the message is the UI here).
void ExpectError(const absl::StatusOr<v1::SweepSpec>& result, absl::StatusCode code,
                 const std::string& message) {
  ASSERT_FALSE(result.ok()) << "parsed unexpectedly: " << result->DebugString();
  EXPECT_THAT(result.status(), StatusIs(code, Eq(message)));
}

absl::StatusOr<v1::SweepSpec> Parse(const std::string& yaml) {
  return ParseSweepYaml(yaml, "sweep.yaml");
}

// Regression (tests/fuzz/regressions/sweep/map-key-use-after-scope.yaml,
// found by fuzz_sweep under AddressSanitizer): ParseMap bound references to
// the members of yaml-cpp's iterator proxy, which died at the end of the
// statement, so every key and value was read from a dead stack slot. Each
// field of every map, nested ones included, must arrive with its own value.
TEST(SweepFileRegressionTest, EveryMapEntryKeepsItsKeyAndValue) {
  auto spec = Parse(
      "# A mid-size model at full context on one GPU.\n"
      "name: gpu-pythia-1.4b\n"
      "models: [pythia-1.4b]\n"
      "seeds: [0]\n"
      "datasets: [{name: kvpr, num_classes: 11}]\n"
      "context_lengths: [2048]\n"
      "num_prompts: 8\n"
      "prompts_per_chunk: 8\n"
      "dtype: bf16\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "gpu-pythia-1.4b");
  ASSERT_EQ(spec->models_size(), 1);
  EXPECT_EQ(spec->models(0), "pythia-1.4b");
  ASSERT_EQ(spec->seeds_size(), 1);
  EXPECT_EQ(spec->seeds(0), 0);
  ASSERT_EQ(spec->datasets_size(), 1);
  EXPECT_EQ(spec->datasets(0).name(), "kvpr");
  EXPECT_EQ(spec->datasets(0).num_classes(), 11);
  ASSERT_EQ(spec->context_lengths_size(), 1);
  EXPECT_EQ(spec->context_lengths(0), 2048);
  EXPECT_EQ(spec->num_prompts(), 8);
  EXPECT_EQ(spec->prompts_per_chunk(), 8);
  EXPECT_EQ(spec->dtype(), "bf16");
}

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    path_ = (std::filesystem::temp_directory_path() /
             ("layerflow-sweep-test-" + std::to_string(getpid()) + "-" +
              std::to_string(counter_++) + ".yaml"))
                .string();
    std::ofstream(path_) << content;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

constexpr char kFullExample[] = R"(name: pythia-random-init
models: [pythia-70m, pythia-160m]
init_schemes: [reference, normal(0.02)]
seeds: [0, 1]
datasets: [{name: kvpr, num_classes: 11}]
context_lengths: [256]
analyses: [adjacent_cos, intertoken_cos]
num_prompts: 8
prompts_per_chunk: 2
batch_prompts: 2
dtype: fp32
priority: 0
)";

TEST(SweepFileTest, FullExampleGivesExactSpec) {
  TempFile file(kFullExample);
  absl::StatusOr<v1::SweepSpec> spec = ParseSweepFile(file.path());
  ASSERT_TRUE(spec.ok()) << spec.status();

  v1::SweepSpec expected;
  expected.set_name("pythia-random-init");
  expected.add_models("pythia-70m");
  expected.add_models("pythia-160m");
  expected.add_init_schemes("reference");
  expected.add_init_schemes("normal(0.02)");
  expected.add_seeds(0);
  expected.add_seeds(1);
  v1::DatasetSpec* kvpr = expected.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(11);
  expected.add_context_lengths(256);
  expected.add_analyses("adjacent_cos");
  expected.add_analyses("intertoken_cos");
  expected.set_num_prompts(8);
  expected.set_prompts_per_chunk(2);
  expected.set_batch_prompts(2);
  expected.set_dtype("fp32");
  expected.set_priority(0);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*spec, expected))
      << spec->DebugString();
}

TEST(SweepFileTest, ScalarsStandForOneElementLists) {
  absl::StatusOr<v1::SweepSpec> spec = Parse(
      "name: s\nmodels: pythia-70m\ninit_schemes: xavier_uniform\nseeds: 7\n"
      "datasets: kvpr\ncontext_lengths: 64\nanalyses: adjacent_cos\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->models(), ::testing::ElementsAre("pythia-70m"));
  EXPECT_THAT(spec->init_schemes(), ::testing::ElementsAre("xavier_uniform"));
  EXPECT_THAT(spec->seeds(), ::testing::ElementsAre(7));
  ASSERT_EQ(spec->datasets_size(), 1);
  EXPECT_EQ(spec->datasets(0).name(), "kvpr");
  EXPECT_EQ(spec->datasets(0).num_classes(), 0);  // coordinator default
  EXPECT_THAT(spec->context_lengths(), ::testing::ElementsAre(64));
  EXPECT_THAT(spec->analyses(), ::testing::ElementsAre("adjacent_cos"));
}

TEST(SweepFileTest, TextDatasetNamesTheUsersFileAndItsKey) {
  absl::StatusOr<v1::SweepSpec> spec =
      Parse("name: s\ndatasets: [{name: text, path: corpora/notes.jsonl, field: body}]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->datasets_size(), 1);
  EXPECT_EQ(spec->datasets(0).name(), "text");
  EXPECT_EQ(spec->datasets(0).path(), "corpora/notes.jsonl");
  EXPECT_EQ(spec->datasets(0).field(), "body");
}

TEST(SweepFileTest, DatasetsMayMixNamesAndMapsAndBeOneMap) {
  absl::StatusOr<v1::SweepSpec> spec =
      Parse("name: s\ndatasets: [kvpr, {name: kvpr, num_classes: 5}]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->datasets_size(), 2);
  EXPECT_EQ(spec->datasets(0).name(), "kvpr");
  EXPECT_EQ(spec->datasets(1).num_classes(), 5);

  spec = Parse("name: s\ndatasets: {name: kvpr, num_classes: 3}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->datasets_size(), 1);
  EXPECT_EQ(spec->datasets(0).num_classes(), 3);
}

TEST(SweepFileTest, BlockListsCommentsAndNegativePriority) {
  absl::StatusOr<v1::SweepSpec> spec = Parse(
      "# a comment\nname: s\nmodels:\n  - pythia-70m  # small\n  - pythia-160m\n"
      "seeds:\n  - 3\n  - +4\npriority: -5\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->models(), ::testing::ElementsAre("pythia-70m", "pythia-160m"));
  EXPECT_THAT(spec->seeds(), ::testing::ElementsAre(3, 4));
  EXPECT_EQ(spec->priority(), -5);
}

TEST(SweepFileTest, EmptyListsLeaveDefaultsToTheCoordinator) {
  absl::StatusOr<v1::SweepSpec> spec = Parse("name: s\nseeds: []\nmodels: []\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->seeds_size(), 0);
  EXPECT_EQ(spec->models_size(), 0);
}

// tests/worker/runtime/demo_recompute_test.cc recomputes the first job of this sweep
// in float64; a change here must be made there too.
TEST(SweepFileTest, EmbeddedDefaultParses) {
  absl::StatusOr<v1::SweepSpec> spec = ParseSweepYaml(kDefaultSweepYaml, kDefaultSweepSource);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "quickstart");
  // Random-init Transformers against the state-space models.
  EXPECT_THAT(spec->models(),
              ::testing::ElementsAre("pythia-160m", "gpt-neo-125m", "mamba-130m", "mamba2-130m"));
  EXPECT_THAT(spec->init_schemes(), ::testing::ElementsAre("reference"));
  EXPECT_THAT(spec->seeds(), ::testing::ElementsAre(0));
  ASSERT_EQ(spec->datasets_size(), 1);
  EXPECT_EQ(spec->datasets(0).name(), "mqar");
  EXPECT_THAT(spec->context_lengths(), ::testing::ElementsAre(128));
  EXPECT_THAT(spec->analyses(), ::testing::ElementsAre("adjacent_cos", "intertoken_cos",
                                                       "path_energy", "adjacent_cos_tokens"));
  EXPECT_EQ(spec->num_prompts(), 2);
  EXPECT_EQ(spec->prompts_per_chunk(), 2);
  EXPECT_EQ(spec->dtype(), "fp32");
  // 4 models x 1 init x 1 seed x 1 data set x 1 context length.
  EXPECT_EQ(spec->models_size() * spec->init_schemes_size() * spec->seeds_size() *
                spec->datasets_size() * spec->context_lengths_size(),
            4);
}

// --- Malformed files: code AND exact message (file:line:col, field). ---

TEST(SweepFileTest, BadIntegerInList) {
  ExpectError(Parse("name: s\nseeds: [0, abc]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:12: field 'seeds[1]': expected a non-negative integer, "
              "got 'abc'");
}

TEST(SweepFileTest, BadIntegerInBlockListReportsFileLine) {
  TempFile file("name: s\nseeds:\n  - 0\n  - 1.5\n");
  ExpectError(ParseSweepFile(file.path()), absl::StatusCode::kInvalidArgument,
              file.path() + ":4:5: field 'seeds[1]': expected a non-negative integer, got '1.5'");
}

TEST(SweepFileTest, NegativeWhereNonNegative) {
  ExpectError(Parse("name: s\nnum_prompts: -3\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:14: field 'num_prompts': expected a non-negative integer "
              "in [0, 2147483647], got '-3'");
  ExpectError(Parse("name: s\ncontext_lengths: [256, -1]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:24: field 'context_lengths[1]': expected a non-negative "
              "integer in [0, 2147483647], got '-1'");
}

TEST(SweepFileTest, MaxJobSecondsIsTheSweepsDeadline) {
  absl::StatusOr<v1::SweepSpec> spec = Parse("name: s\nmax_job_seconds: 5000000000\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->max_job_seconds(), 5000000000);  // 64-bit; the coordinator judges the range
  ExpectError(Parse("name: s\nmax_job_seconds: -1\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:18: field 'max_job_seconds': expected a non-negative integer "
              "in [0, 9223372036854775807], got '-1'");
}

TEST(SweepFileTest, Int32Overflow) {
  ExpectError(Parse("name: s\npriority: 3000000000\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:11: field 'priority': expected an integer in "
              "[-2147483648, 2147483647], got '3000000000'");
}

TEST(SweepFileTest, UnknownKeyWithSuggestion) {
  ExpectError(Parse("name: s\nseed: [0, 1]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:1: unknown field 'seed' (did you mean 'seeds'?)");
  ExpectError(Parse("name: s\ncontext-length: 64\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:1: unknown field 'context-length' (did you mean "
              "'context_lengths'?)");
}

TEST(SweepFileTest, UnknownKeyWithoutCloseMatchListsKnownFields) {
  ExpectError(
      Parse("name: s\nvolume: 4\n"), absl::StatusCode::kInvalidArgument,
      "sweep.yaml:2:1: unknown field 'volume' (known fields: name, models, "
      "init_schemes, seeds, datasets, context_lengths, analyses, num_prompts, "
      "prompts_per_chunk, batch_prompts, dtype, priority, max_job_seconds, example_cka, probe, "
      "kind, train, layers)");
}

// true / false in any case; anything else names the field.
TEST(SweepFileTest, ExampleCkaIsABoolean) {
  for (const auto& [text, value] : std::vector<std::pair<std::string, bool>>{
           {"true", true}, {"True", true}, {"false", false}, {"FALSE", false}}) {
    absl::StatusOr<v1::SweepSpec> spec = Parse("name: s\nexample_cka: " + text + "\n");
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(spec->example_cka(), value) << text;
  }
  ExpectError(Parse("name: s\nexample_cka: 2\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:14: field 'example_cka': expected true or false, got '2'");
}

// layers: integers, negative ones counting from the end, kept as written
// (the coordinator and the worker resolve them against the model).
TEST(SweepFileTest, LayersAreSignedIntegersKeptAsWritten) {
  absl::StatusOr<v1::SweepSpec> spec = Parse("name: s\nlayers: [0, 4, 8, -1]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->layers(), ::testing::ElementsAre(0, 4, 8, -1));
  spec = Parse("name: s\nlayers: -2\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->layers(), ::testing::ElementsAre(-2));
}

// Every other list's `[]` means "the default"; for layers that would be all
// points, the opposite of what a user who wrote the key was after.
TEST(SweepFileTest, LayersEmptyListIsAnError) {
  ExpectError(Parse("name: s\nlayers: []\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:9: field 'layers': empty list; list the points to keep (0 the "
              "embedding, -1 the final point) or leave the field out for all");
}

TEST(SweepFileTest, LayersMustBeIntegers) {
  ExpectError(Parse("name: s\nlayers: [0, 2.0]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:13: field 'layers[1]': expected an integer, got '2.0'");
  ExpectError(Parse("name: s\nlayers: [final]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:10: field 'layers[0]': expected an integer, got 'final'");
  ExpectError(Parse("name: s\nlayers: [[1, 2]]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:10: field 'layers[0]': expected an integer, got a list");
  // (yaml-cpp marks a missing value where the next line starts.)
  ExpectError(Parse("name: s\nlayers:\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:3:1: field 'layers': expected an integer or a list of them, got "
              "nothing (null)");
}

// 'batch' was the example of a key without a close match until batch_prompts
// came; now it is one.
TEST(SweepFileTest, BatchSuggestsBatchPrompts) {
  ExpectError(Parse("name: s\nbatch: 4\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:1: unknown field 'batch' (did you mean 'batch_prompts'?)");
}

TEST(SweepFileTest, UnknownKeyInsideDataset) {
  ExpectError(Parse("name: s\ndatasets:\n  - name: kvpr\n    classes: 5\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:4:5: unknown field 'datasets[0].classes' (did you mean "
              "'num_classes'?)");
}

TEST(SweepFileTest, RepeatedKey) {
  ExpectError(Parse("name: s\nseeds: [0]\nseeds: [1]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:3:1: field 'seeds' repeated (first set on line 2)");
}

TEST(SweepFileTest, YamlSyntaxError) {
  absl::StatusOr<v1::SweepSpec> result = Parse("name: s\nseeds: [0, 1\nmodels: x\n");
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::StartsWith("sweep.yaml:")));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("YAML syntax error: "));
}

TEST(SweepFileTest, YamlSyntaxErrorExactLocation) {
  ExpectError(Parse("name: s\nmodels: [a, b]]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:15: YAML syntax error: illegal flow end");
}

TEST(SweepFileTest, MissingFileIsNotFound) {
  ExpectError(ParseSweepFile("/nonexistent/layerflow/sweep.yaml"), absl::StatusCode::kNotFound,
              "sweep file not found: /nonexistent/layerflow/sweep.yaml");
}

TEST(SweepFileTest, DirectoryIsInvalidArgument) {
  ExpectError(ParseSweepFile("/"), absl::StatusCode::kInvalidArgument,
              "sweep file is a directory, not a file: /");
}

TEST(SweepFileTest, MapWhereListExpected) {
  ExpectError(Parse("name: s\nmodels: {a: b}\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:9: field 'models': expected a string or a list of them, "
              "got a map");
}

TEST(SweepFileTest, ListWhereScalarExpected) {
  ExpectError(Parse("name: [a, b]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:1:7: field 'name': expected a string, got a list");
  ExpectError(Parse("name: s\nnum_prompts: [8]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:14: field 'num_prompts': expected a non-negative integer, "
              "got a list");
}

TEST(SweepFileTest, NestedListInList) {
  ExpectError(Parse("name: s\nmodels: [a, [b]]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:13: field 'models[1]': expected a string, got a list");
}

TEST(SweepFileTest, NullValue) {
  ExpectError(Parse("name: s\nmodels: [a, ~]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:13: field 'models[1]': expected a string, got nothing (null)");
}

TEST(SweepFileTest, DatasetOfWrongShape) {
  ExpectError(Parse("name: s\ndatasets: [[kvpr]]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:12: field 'datasets[0]': expected a data set name or a map "
              "{name, num_classes, path, field}, got a list");
  ExpectError(Parse("name: s\ndatasets: [{name: kvpr, num_classes: many}]\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:38: field 'datasets[0].num_classes': expected a "
              "non-negative integer, got 'many'");
}

TEST(SweepFileTest, TopLevelMustBeAMap) {
  ExpectError(Parse("- a\n- b\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:1:1: expected a map of sweep fields (name: ..., models: "
              "[...]), got a list");
  ExpectError(Parse("just a string\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:1:1: expected a map of sweep fields (name: ..., models: "
              "[...]), got 'just a string'");
}

TEST(SweepFileTest, EmptyFile) {
  ExpectError(Parse(""), absl::StatusCode::kInvalidArgument,
              "sweep.yaml: empty sweep file; expected a map of sweep fields (name, "
              "models, ...; see docs/sweep-file.md)");
  ExpectError(Parse("# only a comment\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml: empty sweep file; expected a map of sweep fields (name, "
              "models, ...; see docs/sweep-file.md)");
}

// Regression (tests/fuzz/regressions/sweep/stray-comma-hang.yaml, found by
// fuzz_sweep): with yaml-cpp 0.7, YAML::LoadAll never returned on a file
// holding a ',' outside any flow collection (it added empty documents for
// ever, gigabytes within seconds), so `layerflow submit` hung. It is a
// syntax error at the comma.
TEST(SweepFileRegressionTest, StrayCommaIsASyntaxErrorNotAHang) {
  ExpectError(Parse(","), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:1:1: YAML syntax error: unexpected ',' outside a [...] or {...} "
              "collection");
  ExpectError(Parse("# a comment\n\n  , x\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:3:3: YAML syntax error: unexpected ',' outside a [...] or {...} "
              "collection");
}

TEST(SweepFileTest, SecondDocumentRejected) {
  ExpectError(Parse("name: a\n---\nname: b\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:3:1: a sweep file holds one YAML document; found a second one");
}

TEST(SweepFileTest, LongScalarsAreTruncatedInMessages) {
  ExpectError(Parse("name: s\nseeds: " + std::string(60, 'x') + "\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:8: field 'seeds': expected a non-negative integer, got '" +
                  std::string(37, 'x') + "...'");
}

TEST(SweepFileTest, ProbeWithEveryField) {
  auto spec = Parse(
      "name: s\nprobe: {task: kvpr, classes: 11, seeds: [0, 1, 2], epochs: 150, "
      "lr: 0.005, weight_decay: 1e-3, train_fraction: 0.6, val_fraction: 0.2, "
      "permutations: 20, feature_dtype: fp16}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_probe());
  const v1::ProbeSpec& p = spec->probe();
  EXPECT_EQ(p.task(), "kvpr");
  EXPECT_EQ(p.classes(), 11);
  EXPECT_THAT(p.seeds(), ::testing::ElementsAre(0, 1, 2));
  EXPECT_EQ(p.epochs(), 150);
  EXPECT_DOUBLE_EQ(p.lr(), 0.005);
  EXPECT_DOUBLE_EQ(p.weight_decay(), 0.001);
  EXPECT_DOUBLE_EQ(p.train_fraction(), 0.6);
  EXPECT_DOUBLE_EQ(p.val_fraction(), 0.2);
  EXPECT_EQ(p.permutations(), 20);
  EXPECT_EQ(p.feature_dtype(), "fp16");
}

TEST(SweepFileTest, ProbeNeedsOnlyItsTask) {
  auto spec = Parse("name: s\nprobe:\n  task: kvpr\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->has_probe());
  EXPECT_EQ(spec->probe().task(), "kvpr");
  EXPECT_EQ(spec->probe().classes(), 0);  // the coordinator fills defaults
  EXPECT_TRUE(spec->probe().seeds().empty());
  spec = Parse("name: s\nprobe: kvpr\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->probe().task(), "kvpr");
  spec = Parse("name: s\n");
  ASSERT_TRUE(spec.ok());
  EXPECT_FALSE(spec->has_probe());
}

TEST(SweepFileTest, ProbeErrorsHaveFileLineColumn) {
  ExpectError(Parse("name: s\nprobe: {classes: 11}\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:8: field 'probe': missing 'task' (the data set to "
              "probe, e.g. task: kvpr)");
  ExpectError(Parse("name: s\nprobe:\n  task: kvpr\n  lr: fast\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:4:7: field 'probe.lr': expected a number, got 'fast'");
  ExpectError(Parse("name: s\nprobe: {task: kvpr, epochs: 1.5}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:29: field 'probe.epochs': expected a non-negative "
              "integer, got '1.5'");
  ExpectError(Parse("name: s\nprobe: {task: kvpr, seeds: [0, -1]}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:32: field 'probe.seeds[1]': expected a non-negative "
              "integer in [0, 9223372036854775807], got '-1'");
  ExpectError(Parse("name: s\nprobe: {task: kvpr, permutations: 2.5}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:35: field 'probe.permutations': expected a non-negative "
              "integer, got '2.5'");
  ExpectError(Parse("name: s\nprobe: {task: kvpr, val_fraction: most}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:35: field 'probe.val_fraction': expected a number, got 'most'");
  ExpectError(Parse("name: s\nprobe: {task: kvpr, epoch: 3}\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:21: unknown field 'probe.epoch' (did you mean 'epochs'?)");
  ExpectError(Parse("name: s\nprobe: [kvpr]\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:8: field 'probe': expected a data set name or a map "
              "{task, classes, ...}, got a list");
}

TEST(SweepFileTest, KindTrainWithATrainBlock) {
  absl::StatusOr<v1::SweepSpec> spec = Parse(
      "name: mqar\nkind: train\nmodels: [gpt_neox, mamba2]\nseeds: [0, 1]\n"
      "train: {steps: 4000, lr: 3e-3, pairs: 32, target_accuracy: 0.99, eval_every: 250,\n"
      "        save_every: 500, width: 64, warmup: 100, alpha: 0.1, curriculum: zoology}\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->has_train());
  EXPECT_EQ(spec->train().steps(), 4000);
  EXPECT_DOUBLE_EQ(spec->train().lr(), 3e-3);
  EXPECT_EQ(spec->train().pairs(), 32);
  EXPECT_EQ(spec->train().eval_every(), 250);
  EXPECT_EQ(spec->train().save_every(), 500);
  EXPECT_EQ(spec->train().width(), 64);
  EXPECT_DOUBLE_EQ(spec->train().alpha(), 0.1);
  EXPECT_EQ(spec->train().curriculum(), "zoology");
  EXPECT_EQ(spec->train().vocab(), 0);  // the coordinator's default
  EXPECT_EQ(spec->train().penalty(), "");
  absl::StatusOr<v1::SweepSpec> penalised = Parse(
      "name: p\nkind: train\nmodels: mamba2\n"
      "train: {penalty: intertoken_cos, penalty_weight: 0.5, penalty_layers: [-2, 1],\n"
      "        penalty_series: adjacent_cos}\n");
  ASSERT_TRUE(penalised.ok()) << penalised.status();
  EXPECT_EQ(penalised->train().penalty(), "intertoken_cos");
  EXPECT_DOUBLE_EQ(penalised->train().penalty_weight(), 0.5);
  ASSERT_EQ(penalised->train().penalty_layers_size(), 2);
  EXPECT_EQ(penalised->train().penalty_layers(0), -2);
  EXPECT_EQ(penalised->train().penalty_layers(1), 1);
  EXPECT_EQ(penalised->train().penalty_series(), "adjacent_cos");
  ExpectError(Parse("name: p\nkind: train\nmodels: mamba2\ntrain: {penalty_layers: [a]}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:4:26: field 'train.penalty_layers[0]': expected an integer, got 'a'");
  // `kind: train` alone: every train field defaulted.
  absl::StatusOr<v1::SweepSpec> bare = Parse("name: m\nkind: train\nmodels: gpt_neo\n");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_TRUE(bare->has_train());
  absl::StatusOr<v1::SweepSpec> extract = Parse("name: m\nkind: extract\nmodels: pythia-tiny\n");
  ASSERT_TRUE(extract.ok()) << extract.status();
  EXPECT_FALSE(extract->has_train());
}

TEST(SweepFileTest, BadTrainFieldsNameTheField) {
  ExpectError(Parse("name: m\nkind: fit\nmodels: gpt_neox\n"), absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:7: field 'kind': unknown kind 'fit'; known kinds: extract, train");
  ExpectError(Parse("name: m\nkind: train\nmodels: gpt_neox\ntrain: {steps: -4}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:4:16: field 'train.steps': expected a non-negative integer in [0, "
              "9223372036854775807], got '-4'");
  ExpectError(Parse("name: m\nkind: train\nmodels: gpt_neox\ntrain: {lr: fast}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:4:13: field 'train.lr': expected a number, got 'fast'");
  absl::StatusOr<v1::SweepSpec> typo =
      Parse("name: m\nkind: train\nmodels: gpt_neox\ntrain: {step: 10}\n");
  ASSERT_FALSE(typo.ok());
  EXPECT_THAT(std::string(typo.status().message()),
              HasSubstr("unknown field 'train.step' (did you mean 'steps'?)"));
  ExpectError(Parse("name: m\nkind: extract\nmodels: gpt_neox\ntrain: {steps: 10}\n"),
              absl::StatusCode::kInvalidArgument,
              "sweep.yaml:2:7: field 'kind': 'extract' with a train: block; a training sweep "
              "says kind: train");
}

}  // namespace
}  // namespace layerflow::client

#include "server/spec/sweep_spec.h"

#include <functional>
#include <string>
#include <vector>

#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::testing::StatusIs;
using ::layerflow::v1::SweepSpec;
using ::testing::AllOf;
using ::testing::Eq;
using ::testing::HasSubstr;

SweepSpec Minimal() {
  SweepSpec spec;
  spec.set_name("demo");
  spec.add_models("pythia-tiny");
  return spec;
}

TEST(ValidateSweepSpec, AcceptsMinimalAndFullSpecs) {
  EXPECT_TRUE(ValidateSweepSpec(Minimal()).ok());
  SweepSpec full = Minimal();
  full.set_name("Full_sweep-1.0");
  full.add_models("pythia-70m");
  full.add_init_schemes("reference");
  full.add_init_schemes("normal(0.02)");
  full.add_seeds(0);
  full.add_seeds(7);
  full.add_datasets()->set_name("kvpr");
  auto* d = full.add_datasets();
  d->set_name("kvpr");
  d->set_num_classes(5);
  full.add_context_lengths(1082);  // the shortest that holds 11 KVPR pairs
  full.add_context_lengths(65536);
  full.add_analyses("adjacent_cos");
  full.set_num_prompts(100000);
  full.set_prompts_per_chunk(4096);
  full.set_batch_prompts(4096);
  full.set_dtype("bf16");
  const absl::Status status = ValidateSweepSpec(full);
  EXPECT_TRUE(status.ok()) << status;
}

// Checkpoints are resolved by each worker (its folders, its HF cache): the
// coordinator accepts any name with a '/' and still rejects unknown presets.
TEST(ValidateSweepSpec, AcceptsCheckpointNames) {
  SweepSpec spec = Minimal();
  spec.add_models("EleutherAI/pythia-160m");
  spec.add_models("/data/checkpoints/mamba-trained");
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  spec.add_models("pythia-7b");
  EXPECT_THAT(ValidateSweepSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("spec.models[3]: unknown model preset 'pythia-7b'"),
                             HasSubstr("or a checkpoint"))));
}

// Every model runs every init scheme, and a checkpoint brings its own
// weights: a random-init scheme beside a checkpoint is refused at submit,
// naming the scheme and the checkpoint (it used to fail each such job on a
// worker).
TEST(ValidateSweepSpec, CheckpointsTakeOnlyTheReferenceScheme) {
  SweepSpec spec = Minimal();
  spec.add_models("EleutherAI/pythia-160m");
  spec.add_init_schemes("reference");
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  spec.add_init_schemes("normal(0.02)");
  EXPECT_THAT(ValidateSweepSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "spec.init_schemes[1]: 'normal(0.02)' applies to presets only; "
                       "spec.models[1] ('EleutherAI/pythia-160m') is a checkpoint"));
}

// MDQA (synthetic, K documents fitted to the context) and MQAR run as jobs;
// MDQA's gold document gives probing classes, MQAR has none.
TEST(ValidateSweepSpec, AcceptsMdqaAndMqar) {
  SweepSpec spec = Minimal();
  v1::DatasetSpec* mdqa = spec.add_datasets();
  mdqa->set_name("mdqa");
  mdqa->set_num_classes(5);
  spec.add_datasets()->set_name("mqar");
  spec.add_context_lengths(3000);
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  spec.mutable_probe()->set_task("mqar");
  EXPECT_THAT(ValidateSweepSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, "spec.probe.task"));
  spec.mutable_probe()->set_task("mdqa");
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
}

TEST(ValidateSweepSpec, AcceptsEveryAnalysis) {
  SweepSpec spec = Minimal();
  for (const char* name :
       {"adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
        "step_energy", "path_energy", "cka_unbiased", "cka_biased", "cka_all_unbiased",
        "cka_all_biased", "adjacent_cos_tokens", "spectrum", "spectrum_dsf"}) {
    spec.add_analyses(name);
  }
  const absl::Status status = ValidateSweepSpec(spec);
  EXPECT_TRUE(status.ok()) << status;
  // The default stays the two cosine metrics.
  EXPECT_EQ(WithDefaults(Minimal()).analyses_size(), 2);
}

struct BadCase {
  std::string test_name;
  std::function<void(SweepSpec&)> mutate;
  std::string message;  // must appear in the INVALID_ARGUMENT message
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.test_name; }

class ValidateSweepSpecError : public ::testing::TestWithParam<BadCase> {};

TEST_P(ValidateSweepSpecError, NamesTheField) {
  SweepSpec spec = Minimal();
  GetParam().mutate(spec);
  EXPECT_THAT(ValidateSweepSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ValidateSweepSpecError,
    ::testing::Values(
        BadCase{"NameRequired", [](SweepSpec& s) { s.clear_name(); }, "spec.name: required"},
        BadCase{"NameTooLong", [](SweepSpec& s) { s.set_name(std::string(65, 'a')); },
                "spec.name: longer than 64"},
        BadCase{"NameCharset", [](SweepSpec& s) { s.set_name("a b"); },
                "spec.name: may contain only"},
        BadCase{"ModelsRequired", [](SweepSpec& s) { s.clear_models(); },
                "spec.models: at least one"},
        BadCase{"UnknownModel", [](SweepSpec& s) { s.add_models("foo"); },
                "spec.models[1]: unknown model preset 'foo'; known presets: "},
        BadCase{"BadInitScheme", [](SweepSpec& s) { s.add_init_schemes("normal(x)"); },
                "spec.init_schemes[0]: "},
        BadCase{"NegativeSeed",
                [](SweepSpec& s) {
                  s.add_seeds(1);
                  s.add_seeds(-3);
                },
                "spec.seeds[1]: -3 is negative"},
        BadCase{"UnknownDataset", [](SweepSpec& s) { s.add_datasets()->set_name("squad"); },
                "spec.datasets[0].name: unknown data set 'squad'; known data sets: kvpr, "
                "mdqa, mqar, text"},
        // The user's corpus: a file on the workers, relative to their roots.
        BadCase{"TextWithoutPath", [](SweepSpec& s) { s.add_datasets()->set_name("text"); },
                "spec.datasets[0].path: the text data set needs a file (relative to the "
                "workers' model roots)"},
        BadCase{"TextAbsolutePath",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("text");
                  d->set_path("/etc/passwd");
                },
                "spec.datasets[0].path: '/etc/passwd' is absolute; name the file relative to "
                "the workers' model roots"},
        BadCase{"TextClimbsOut",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("text");
                  d->set_path("corpora/../../secret.txt");
                },
                "spec.datasets[0].path: 'corpora/../../secret.txt' climbs out with '..'"},
        BadCase{"PathOnAGeneratedDataset",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("kvpr");
                  d->set_path("corpus.jsonl");
                },
                "spec.datasets[0].path: only the text and mdqa data sets read a file; "
                "'kvpr' is generated"},
        BadCase{"FieldOnMdqa",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("mdqa");
                  d->set_path("nq-open.jsonl");
                  d->set_field("question");
                },
                "spec.datasets[0].field: only the text data set has a field; 'mdqa' records "
                "have their own keys (docs/datasets.md)"},
        BadCase{"NumClassesLow",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("kvpr");
                  d->set_num_classes(1);
                },
                "spec.datasets[0].num_classes: 1 is outside [2, 1000] (0 means 11)"},
        BadCase{"NumClassesHigh",
                [](SweepSpec& s) {
                  auto* d = s.add_datasets();
                  d->set_name("kvpr");
                  d->set_num_classes(1001);
                },
                "spec.datasets[0].num_classes: 1001"},
        BadCase{"ContextLow", [](SweepSpec& s) { s.add_context_lengths(15); },
                "spec.context_lengths[0]: 15 is outside [16, 65536]"},
        BadCase{"ContextHigh",
                [](SweepSpec& s) {
                  s.add_context_lengths(32);
                  s.add_context_lengths(65537);
                },
                "spec.context_lengths[1]: 65537"},
        // Regression: a context too short for the data set used to be
        // accepted and then failed every job on the workers.
        BadCase{"ContextTooShortForKvprClasses",
                [](SweepSpec& s) {
                  s.add_context_lengths(4096);
                  s.add_context_lengths(1081);
                },
                "spec.context_lengths[1]: too short for spec.datasets[0] (kvpr, "
                "11 classes): context_length: 1081 tokens cannot hold 11 key-value "
                "pairs (one per gold position, num_classes=11); the KVPR prompt "
                "needs at least 1082 tokens"},
        // MDQA: at least num_classes documents (catalog::CheckContextFits;
        // the shortest 11 synthetic documents take 1761 bytes).
        BadCase{"ContextTooShortForMdqaClasses",
                [](SweepSpec& s) {
                  v1::DatasetSpec* mdqa = s.add_datasets();
                  mdqa->set_name("mdqa");
                  s.add_context_lengths(1500);
                },
                "spec.context_lengths[0]: too short for spec.datasets[0] (mdqa, "
                "11 classes): context_length: 1500 tokens cannot hold 11 documents (one "
                "per gold position, num_classes=11); an MDQA prompt needs at least 1761 "
                "tokens"},
        BadCase{"UnknownAnalysis", [](SweepSpec& s) { s.add_analyses("cka"); },
                "spec.analyses[0]: unknown analysis 'cka'; known analyses: "
                "adjacent_cos, intertoken_cos, intertoken_cos_nofirst, "
                "token_dispersion, step_energy, path_energy, cka_unbiased, "
                "cka_biased, cka_all_unbiased, cka_all_biased, "
                "adjacent_cos_tokens, spectrum, spectrum_dsf"},
        BadCase{"NumPromptsNegative", [](SweepSpec& s) { s.set_num_prompts(-1); },
                "spec.num_prompts: -1 is outside [1, 100000] (0 means 8)"},
        BadCase{"NumPromptsHigh", [](SweepSpec& s) { s.set_num_prompts(100001); },
                "spec.num_prompts: 100001 is outside [1, 100000] (0 means 8)"},
        BadCase{"PromptsPerChunkNegative", [](SweepSpec& s) { s.set_prompts_per_chunk(-2); },
                "spec.prompts_per_chunk: -2 is outside [1, 4096] (0 means 2)"},
        BadCase{"PromptsPerChunkHigh", [](SweepSpec& s) { s.set_prompts_per_chunk(4097); },
                "spec.prompts_per_chunk: 4097 is outside [1, 4096] (0 means 2)"},
        BadCase{"BatchPromptsNegative", [](SweepSpec& s) { s.set_batch_prompts(-1); },
                "spec.batch_prompts: -1 is outside [0, 4096]"},
        BadCase{"BatchPromptsHigh", [](SweepSpec& s) { s.set_batch_prompts(4097); },
                "spec.batch_prompts: 4097 is outside [0, 4096]"},
        BadCase{"UnknownDtype", [](SweepSpec& s) { s.set_dtype("int8"); },
                "spec.dtype: unknown dtype 'int8'"},
        BadCase{"DuplicateModel", [](SweepSpec& s) { s.add_models("pythia-tiny"); },
                "spec.models[1]: duplicate"},
        BadCase{"DuplicateInit",
                [](SweepSpec& s) {
                  s.add_init_schemes("xavier_normal");
                  s.add_init_schemes("xavier_normal");
                },
                "spec.init_schemes[1]: duplicate"},
        BadCase{"DuplicateSeed",
                [](SweepSpec& s) {
                  s.add_seeds(4);
                  s.add_seeds(4);
                },
                "spec.seeds[1]: duplicate"},
        BadCase{"DuplicateDatasetAfterDefaulting",
                [](SweepSpec& s) {
                  s.add_datasets()->set_name("kvpr");
                  auto* d = s.add_datasets();
                  d->set_name("kvpr");
                  d->set_num_classes(11);
                },
                "spec.datasets[1]: duplicate"},
        BadCase{"DuplicateContext",
                [](SweepSpec& s) {
                  s.add_context_lengths(64);
                  s.add_context_lengths(64);
                },
                "spec.context_lengths[1]: duplicate"},
        BadCase{"DuplicateAnalysis",
                [](SweepSpec& s) {
                  s.add_analyses("adjacent_cos");
                  s.add_analyses("adjacent_cos");
                },
                "spec.analyses[1]: duplicate"},
        BadCase{"TooManyJobs",
                [](SweepSpec& s) {
                  for (int i = 0; i < 101; ++i) s.add_seeds(i);
                  for (int i = 0; i < 100; ++i) s.add_context_lengths(1100 + i);
                },
                "sweep expands to 10100 jobs, more than the limit 10000"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.test_name; });

// spec.layers: each error is INVALID_ARGUMENT with exactly this message,
// naming the field, the entry and, for a point the model lacks, the model.
void ExpectLayersError(const std::vector<int32_t>& layers, const std::vector<std::string>& models,
                       const std::string& message) {
  SweepSpec spec = Minimal();
  spec.clear_models();
  for (const std::string& m : models) spec.add_models(m);
  for (int32_t l : layers) spec.add_layers(l);
  EXPECT_THAT(ValidateSweepSpec(spec), StatusIs(absl::StatusCode::kInvalidArgument, Eq(message)));
}

TEST(ValidateSweepSpec, LayersWithinEveryPresetAreAccepted) {
  SweepSpec spec = Minimal();
  spec.add_models("pythia-70m");  // 6 blocks; pythia-tiny has 2: points 0..3
  for (int32_t l : {1, 2, -1, -4}) spec.add_layers(l);
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
}

TEST(ValidateSweepSpec, LayersErrorsNameTheFieldAndTheEntry) {
  ExpectLayersError({0, 4, 0}, {"pythia-tiny"}, "spec.layers[2]: duplicate value 0");
  // pythia-70m (6 blocks) has points 0..7; pythia-tiny (2) only 0..3.
  ExpectLayersError({0, 5}, {"pythia-70m", "pythia-tiny"},
                    "spec.layers[1]: 5 is out of range for spec.models[1] 'pythia-tiny' (2 "
                    "blocks: points 0..3, or -4..-1 counting from the end)");
  ExpectLayersError({-5}, {"pythia-tiny"},
                    "spec.layers[0]: -5 is out of range for spec.models[0] 'pythia-tiny' (2 "
                    "blocks: points 0..3, or -4..-1 counting from the end)");
  // 3 and -1 are both the final point of pythia-tiny.
  ExpectLayersError({3, 1, -1}, {"pythia-tiny"},
                    "spec.layers[2]: -1 is point 3 of spec.models[0] 'pythia-tiny', the same "
                    "as spec.layers[0] (3)");
}

// A checkpoint's depth is the workers' to know: any entry passes here.
TEST(ValidateSweepSpec, LayersOfACheckpointAreLeftToTheWorker) {
  SweepSpec spec = Minimal();
  spec.clear_models();
  spec.add_models("./ckpt");
  spec.add_layers(4000);
  spec.add_layers(-4000);
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
}

TEST(ExpandSweep, EveryJobCarriesTheLayersAsWritten) {
  SweepSpec spec = Minimal();
  spec.add_models("pythia-70m");
  for (int32_t l : {0, 4, -1}) spec.add_layers(l);
  const std::vector<layerflow::v1::JobSpec> jobs = ExpandSweep(WithDefaults(spec));
  ASSERT_EQ(jobs.size(), 2u);
  for (const auto& job : jobs) {
    ASSERT_EQ(job.layers_size(), 3) << job.model();
    EXPECT_EQ(job.layers(0), 0);
    EXPECT_EQ(job.layers(1), 4);
    EXPECT_EQ(job.layers(2), -1);
  }
}

TEST(ValidateSweepSpec, ExactlyTheJobLimitIsAccepted) {
  SweepSpec spec = Minimal();
  for (int i = 0; i < 100; ++i) spec.add_seeds(i);
  for (int i = 0; i < 100; ++i) spec.add_context_lengths(1100 + i);
  EXPECT_EQ(CountSweepJobs(spec), 10000);
  EXPECT_TRUE(ValidateSweepSpec(spec).ok());
}

TEST(WithDefaults, FillsEveryDocumentedDefault) {
  const SweepSpec spec = WithDefaults(Minimal());
  EXPECT_THAT(spec.init_schemes(), ::testing::ElementsAre("reference"));
  EXPECT_THAT(spec.seeds(), ::testing::ElementsAre(0));
  ASSERT_EQ(spec.datasets_size(), 1);
  EXPECT_EQ(spec.datasets(0).name(), "kvpr");
  EXPECT_EQ(spec.datasets(0).num_classes(), 11);
  EXPECT_THAT(spec.context_lengths(), ::testing::ElementsAre(2048));
  EXPECT_THAT(spec.analyses(), ::testing::ElementsAre("adjacent_cos", "intertoken_cos"));
  EXPECT_EQ(spec.num_prompts(), 8);
  EXPECT_EQ(spec.prompts_per_chunk(), 2);
  EXPECT_EQ(spec.dtype(), "fp32");
  // Idempotent, and given values are kept.
  EXPECT_EQ(WithDefaults(spec).SerializeAsString(), spec.SerializeAsString());
  SweepSpec given = Minimal();
  given.set_num_prompts(5);
  given.set_dtype("fp16");
  given.add_seeds(9);
  const SweepSpec kept = WithDefaults(given);
  EXPECT_EQ(kept.num_prompts(), 5);
  EXPECT_EQ(kept.dtype(), "fp16");
  EXPECT_THAT(kept.seeds(), ::testing::ElementsAre(9));
}

TEST(ExpandSweep, CartesianProductInDocumentedOrder) {
  SweepSpec spec = Minimal();
  spec.add_models("pythia-14m");
  spec.add_init_schemes("reference");
  spec.add_init_schemes("xavier_normal");
  spec.add_seeds(3);
  spec.add_seeds(1);
  spec.add_context_lengths(64);
  spec.add_context_lengths(32);
  spec.set_num_prompts(5);
  spec.set_prompts_per_chunk(2);
  spec.set_batch_prompts(1);
  const auto jobs = ExpandSweep(WithDefaults(spec));
  ASSERT_EQ(jobs.size(), 2u * 2 * 2 * 1 * 2);
  EXPECT_EQ(static_cast<int64_t>(jobs.size()), CountSweepJobs(spec));
  // Context length innermost, then dataset, seed, init, model outermost.
  std::vector<std::string> got;
  for (const auto& job : jobs) {
    got.push_back(job.model() + "/" + job.init_scheme() + "/" + std::to_string(job.seed()) + "/" +
                  std::to_string(job.context_length()));
  }
  EXPECT_THAT(got, ::testing::ElementsAre(
                       "pythia-tiny/reference/3/64", "pythia-tiny/reference/3/32",
                       "pythia-tiny/reference/1/64", "pythia-tiny/reference/1/32",
                       "pythia-tiny/xavier_normal/3/64", "pythia-tiny/xavier_normal/3/32",
                       "pythia-tiny/xavier_normal/1/64", "pythia-tiny/xavier_normal/1/32",
                       "pythia-14m/reference/3/64", "pythia-14m/reference/3/32",
                       "pythia-14m/reference/1/64", "pythia-14m/reference/1/32",
                       "pythia-14m/xavier_normal/3/64", "pythia-14m/xavier_normal/3/32",
                       "pythia-14m/xavier_normal/1/64", "pythia-14m/xavier_normal/1/32"));
  for (const auto& job : jobs) {
    EXPECT_EQ(job.dataset().name(), "kvpr");
    EXPECT_EQ(job.dataset().num_classes(), 11);
    EXPECT_EQ(job.num_prompts(), 5);
    EXPECT_EQ(job.prompts_per_chunk(), 2);
    EXPECT_EQ(job.batch_prompts(), 1);
    EXPECT_EQ(job.dtype(), "fp32");
    EXPECT_EQ(job.analyses_size(), 2);
    EXPECT_EQ(ChunksTotal(job), 3);  // ceil(5 / 2)
  }
}

TEST(ExpandSweep, DatasetAxisSitsBetweenSeedAndContext) {
  SweepSpec spec = Minimal();
  spec.add_seeds(0);
  spec.add_seeds(1);
  auto* a = spec.add_datasets();
  a->set_name("kvpr");
  a->set_num_classes(3);
  auto* b = spec.add_datasets();
  b->set_name("kvpr");
  b->set_num_classes(4);
  const auto jobs = ExpandSweep(WithDefaults(spec));
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(jobs[0].seed(), 0);
  EXPECT_EQ(jobs[0].dataset().num_classes(), 3);
  EXPECT_EQ(jobs[1].seed(), 0);
  EXPECT_EQ(jobs[1].dataset().num_classes(), 4);
  EXPECT_EQ(jobs[2].seed(), 1);
  EXPECT_EQ(jobs[2].dataset().num_classes(), 3);
}

TEST(ChunksTotal, IsCeilOfPromptsOverChunkSize) {
  layerflow::v1::JobSpec job;
  for (auto [prompts, per_chunk, want] :
       {std::tuple{8, 2, 4}, {7, 2, 4}, {1, 4096, 1}, {100000, 3, 33334}}) {
    job.set_num_prompts(prompts);
    job.set_prompts_per_chunk(per_chunk);
    EXPECT_EQ(ChunksTotal(job), want) << prompts << "/" << per_chunk;
  }
}

// --- Probing (spec.probe) ---------------------------------------------------

SweepSpec WithProbe() {
  SweepSpec spec = Minimal();
  spec.mutable_probe()->set_task("kvpr");
  return spec;
}

TEST(ValidateSweepSpec, AcceptsAProbeWithDefaultsOrEveryField) {
  EXPECT_TRUE(ValidateSweepSpec(WithProbe()).ok()) << ValidateSweepSpec(WithProbe());
  SweepSpec full = WithProbe();
  auto* p = full.mutable_probe();
  p->set_classes(11);
  p->add_seeds(0);
  p->add_seeds(5);
  p->set_epochs(10);
  p->set_lr(0.01);
  p->set_weight_decay(1e-4);
  p->set_train_fraction(0.5);
  p->set_val_fraction(0.3);
  p->set_permutations(50);
  p->set_feature_dtype("fp32");
  const absl::Status status = ValidateSweepSpec(full);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ValidateSweepSpec, RejectsBadProbeFieldsNamingThem) {
  struct Case {
    std::function<void(layerflow::v1::ProbeSpec*)> mutate;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](auto* p) { p->clear_task(); }, "spec.probe.task: required"},
      // The coordinator's own flag for example_cka jobs: never the user's.
      {[](auto* p) { p->set_skip_training(true); },
       "spec.probe.skip_training: set by the coordinator only (for example_cka without a "
       "probe)"},
      {[](auto* p) { p->set_task("text"); },
       "spec.probe.task: data set 'text' has no classes to probe; data sets with "
       "classes: kvpr, mdqa"},
      {[](auto* p) { p->set_task("mqar"); },
       "spec.probe.task: data set 'mqar' has no classes to probe"},
      {[](auto* p) { p->set_classes(7); },
       "spec.probe.classes: 7 does not match spec.datasets[0].num_classes 11"},
      {[](auto* p) { p->add_seeds(-1); }, "spec.probe.seeds[0]: -1 is negative"},
      {[](auto* p) {
         p->add_seeds(3);
         p->add_seeds(3);
       },
       "spec.probe.seeds[1]: duplicate value 3"},
      {[](auto* p) { p->set_epochs(-5); },
       "spec.probe.epochs: -5 is outside [1, 1000000] (0 means 150)"},
      {[](auto* p) { p->set_lr(-1); }, "spec.probe.lr: -1 is not a positive number"},
      {[](auto* p) { p->set_weight_decay(std::nan("")); }, "spec.probe.weight_decay:"},
      {[](auto* p) { p->set_train_fraction(1.0); },
       "spec.probe.train_fraction: 1 is outside (0, 1)"},
      {[](auto* p) { p->set_train_fraction(-0.2); },
       "spec.probe.train_fraction: -0.2 is outside (0, 1)"},
      {[](auto* p) { p->set_val_fraction(1.0); },
       "spec.probe.val_fraction: 1 is outside (0, 1) (0 means 0.2)"},
      {[](auto* p) { p->set_val_fraction(-0.1); },
       "spec.probe.val_fraction: -0.1 is outside (0, 1)"},
      {[](auto* p) { p->set_val_fraction(std::nan("")); },
       "spec.probe.val_fraction: nan is outside (0, 1)"},
      // The old two-way default with the new validation share: nothing
      // left to test on. The field named is the one that was set.
      {[](auto* p) { p->set_train_fraction(0.8); },
       "spec.probe.train_fraction: train_fraction 0.8 + val_fraction 0.2 (default) = 1 "
       "leaves no test set; the sum must be below 1"},
      {[](auto* p) { p->set_val_fraction(0.5); },
       "spec.probe.val_fraction: train_fraction 0.6 (default) + val_fraction 0.5 = 1.1 "
       "leaves no test set"},
      {[](auto* p) {
         p->set_train_fraction(0.7);
         p->set_val_fraction(0.3);
       },
       "spec.probe.val_fraction: train_fraction 0.7 + val_fraction 0.3 = 1 leaves no test "
       "set"},
      {[](auto* p) { p->set_permutations(-1); },
       "spec.probe.permutations: -1 is outside [1, 1000] (0 means 20)"},
      {[](auto* p) { p->set_permutations(1001); },
       "spec.probe.permutations: 1001 is outside [1, 1000] (0 means 20)"},
      {[](auto* p) { p->set_feature_dtype("bf16"); },
       "spec.probe.feature_dtype: unknown feature dtype 'bf16'; known: fp16, fp32"},
  };
  for (const Case& c : cases) {
    SweepSpec spec = WithProbe();
    c.mutate(spec.mutable_probe());
    EXPECT_THAT(ValidateSweepSpec(spec), StatusIs(absl::StatusCode::kInvalidArgument, c.want));
  }
}

TEST(ValidateSweepSpec, ProbeTaskMustBeOneOfTheSweepsDataSets) {
  SweepSpec spec = WithProbe();
  spec.add_datasets()->set_name("kvpr");  // explicit: fine
  EXPECT_TRUE(ValidateSweepSpec(spec).ok());
  // classes must match every data set of the task.
  spec.mutable_datasets(0)->set_num_classes(5);
  spec.add_context_lengths(1082);
  spec.mutable_probe()->set_classes(5);
  EXPECT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  spec.add_datasets()->set_name("kvpr");  // 11 classes
  EXPECT_THAT(ValidateSweepSpec(spec), StatusIs(absl::StatusCode::kInvalidArgument,
                                                "spec.probe.classes: 5 does not match "
                                                "spec.datasets[1].num_classes 11"));
}

TEST(WithDefaults, FillsProbeDefaultsAndResolvesClasses) {
  const SweepSpec spec = WithDefaults(WithProbe());
  ASSERT_TRUE(spec.has_probe());
  const auto& p = spec.probe();
  EXPECT_EQ(p.task(), "kvpr");
  EXPECT_EQ(p.classes(), 11);
  EXPECT_THAT(p.seeds(), ::testing::ElementsAre(0, 1, 2));
  EXPECT_EQ(p.epochs(), 150);
  EXPECT_DOUBLE_EQ(p.lr(), 5e-3);
  EXPECT_DOUBLE_EQ(p.weight_decay(), 1e-3);
  EXPECT_DOUBLE_EQ(p.train_fraction(), 0.6);
  EXPECT_DOUBLE_EQ(p.val_fraction(), 0.2);
  EXPECT_EQ(p.permutations(), 20);
  EXPECT_EQ(p.feature_dtype(), "fp16");
  EXPECT_EQ(WithDefaults(spec).SerializeAsString(), spec.SerializeAsString());
  EXPECT_FALSE(WithDefaults(Minimal()).has_probe());
}

TEST(ExpandSweep, ProbeAddsOneProbeJobPerExtractJobAfterThem) {
  SweepSpec spec = WithProbe();
  spec.add_models("pythia-70m");
  spec.add_seeds(0);
  spec.add_seeds(1);
  spec.set_num_prompts(5);
  spec.set_prompts_per_chunk(2);
  const SweepSpec defaulted = WithDefaults(spec);
  const std::vector<ExpandedJob> jobs = ExpandSweepJobs(defaulted);
  ASSERT_EQ(jobs.size(), 8u);
  EXPECT_EQ(CountSweepJobs(spec), 8);
  EXPECT_EQ(ExpandSweep(defaulted).size(), 8u);
  for (int i = 0; i < 4; ++i) {
    const ExpandedJob& extract = jobs[i];
    EXPECT_EQ(extract.spec.kind(), layerflow::v1::JOB_KIND_EXTRACT);
    EXPECT_EQ(extract.depends_on, -1);
    ASSERT_TRUE(extract.spec.has_probe()) << i;  // uploads features
    EXPECT_EQ(extract.spec.probe().classes(), 11);
    EXPECT_EQ(ChunksTotal(extract.spec), 3);
    const ExpandedJob& probe = jobs[4 + i];
    EXPECT_EQ(probe.spec.kind(), layerflow::v1::JOB_KIND_PROBE);
    EXPECT_EQ(probe.depends_on, i);
    EXPECT_EQ(probe.spec.model(), extract.spec.model());
    EXPECT_EQ(probe.spec.init_scheme(), extract.spec.init_scheme());
    EXPECT_EQ(probe.spec.seed(), extract.spec.seed());
    EXPECT_EQ(probe.spec.dataset().SerializeAsString(), extract.spec.dataset().SerializeAsString());
    EXPECT_EQ(probe.spec.context_length(), extract.spec.context_length());
    EXPECT_EQ(probe.spec.probe().SerializeAsString(), extract.spec.probe().SerializeAsString());
    EXPECT_EQ(ChunksTotal(probe.spec), 1);
  }
  // EXTRACT jobs keep the order (and indices) they have without probe.
  const auto plain = ExpandSweep(WithDefaults(Minimal()));
  EXPECT_EQ(jobs[0].spec.model(), "pythia-tiny");
  EXPECT_EQ(jobs[1].spec.seed(), 1);
  EXPECT_EQ(jobs[2].spec.model(), "pythia-70m");
  EXPECT_FALSE(plain[0].has_probe());
  EXPECT_EQ(plain[0].kind(), layerflow::v1::JOB_KIND_EXTRACT);
}

TEST(ExpandSweep, ProbeClassesFollowEachJobsDataSet) {
  SweepSpec spec = WithProbe();
  spec.add_context_lengths(1082);
  spec.add_datasets()->set_name("kvpr");
  auto* small = spec.add_datasets();
  small->set_name("kvpr");
  small->set_num_classes(4);
  ASSERT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  const SweepSpec defaulted = WithDefaults(spec);
  EXPECT_EQ(defaulted.probe().classes(), 0);  // the data sets disagree
  const auto jobs = ExpandSweepJobs(defaulted);
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(jobs[0].spec.probe().classes(), 11);
  EXPECT_EQ(jobs[1].spec.probe().classes(), 4);
  EXPECT_EQ(jobs[3].spec.probe().classes(), 4);
  EXPECT_EQ(jobs[3].depends_on, 1);
}

// example_cka: every EXTRACT job stores features and gets a follow-up job;
// on the probed data set that is the probe, elsewhere a PROBE-kind job with
// skip_training (the example-view CKA alone).
TEST(ExpandSweep, ExampleCkaAddsAFollowUpJobForEveryExtractJob) {
  SweepSpec spec = WithProbe();  // probes kvpr
  spec.add_datasets()->set_name("kvpr");
  spec.add_datasets()->set_name("mqar");
  spec.add_context_lengths(1082);
  spec.set_example_cka(true);
  ASSERT_TRUE(ValidateSweepSpec(spec).ok()) << ValidateSweepSpec(spec);
  const auto jobs = ExpandSweepJobs(WithDefaults(spec));
  ASSERT_EQ(jobs.size(), 4u);
  EXPECT_EQ(CountSweepJobs(spec), 4);
  ASSERT_EQ(jobs[1].spec.dataset().name(), "mqar");
  EXPECT_TRUE(jobs[1].spec.has_probe());  // stores features
  EXPECT_TRUE(jobs[1].spec.probe().skip_training());
  EXPECT_EQ(jobs[1].spec.probe().task(), "mqar");
  EXPECT_FALSE(jobs[0].spec.probe().skip_training());  // kvpr: the probe
  EXPECT_EQ(jobs[3].spec.kind(), layerflow::v1::JOB_KIND_PROBE);
  EXPECT_EQ(jobs[3].depends_on, 1);
  EXPECT_TRUE(jobs[3].spec.probe().skip_training());
  // Without a probe line: every job gets the CKA-only follow-up.
  SweepSpec plain = Minimal();
  plain.set_example_cka(true);
  const auto plain_jobs = ExpandSweepJobs(WithDefaults(plain));
  ASSERT_EQ(plain_jobs.size(), 2u);
  EXPECT_EQ(CountSweepJobs(plain), 2);
  EXPECT_TRUE(plain_jobs[1].spec.probe().skip_training());
  EXPECT_EQ(plain_jobs[1].depends_on, 0);
}

TEST(ValidateSweepSpec, JobLimitCountsProbeJobs) {
  SweepSpec spec = WithProbe();
  for (int s = 0; s < 5001; ++s) spec.add_seeds(s);
  EXPECT_THAT(ValidateSweepSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, "sweep expands to 10002 jobs"));
}

}  // namespace
}  // namespace layerflow::server

// Sweep specs: validation, documented defaults and expansion into jobs.
//
// The coordinator runs these in order on every submission:
//   ValidateSweepSpec(spec) -> WithDefaults(spec) -> ExpandSweep(spec)
// Validation runs on the spec as submitted (empty axes mean "default"), so
// its error messages name the fields the user actually wrote.
#ifndef LAYERFLOW_SERVER_SPEC_SWEEP_SPEC_H_
#define LAYERFLOW_SERVER_SPEC_SWEEP_SPEC_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "catalog/train.h"
#include "common/train_spec.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::server {

// A sweep may expand to at most this many jobs.
inline constexpr int64_t kMaxJobsPerSweep = 10000;
// The documented defaults are the catalog's (catalog/defaults.h).

// OK, or INVALID_ARGUMENT whose message starts with the offending field path,
// e.g. "spec.models[1]: unknown model preset 'foo'; known presets: ...".
absl::Status ValidateSweepSpec(const layerflow::v1::SweepSpec& spec);

// Fills every empty axis and zero scalar with its documented default
// (catalog/defaults.h): init_schemes ["reference"], seeds [0], datasets
// [{kvpr, 11}] (and num_classes 0 -> 11 on every data set), context_lengths
// [2048], analyses
// [adjacent_cos, intertoken_cos], num_prompts 8, prompts_per_chunk 2,
// dtype "fp32"; with probe set: seeds [0, 1, 2], epochs 150, lr 5e-3,
// weight_decay 1e-3, train_fraction 0.6, val_fraction 0.2, permutations 20,
// feature_dtype "fp16" and classes 0
// -> the task data set's num_classes (left 0 only when several data sets of
// that name have different num_classes: each job then takes its own).
// Idempotent.
layerflow::v1::SweepSpec WithDefaults(layerflow::v1::SweepSpec spec);

// The number of jobs ExpandSweep(WithDefaults(spec)) returns, without
// building them (empty axes count as one point; with probe set, one PROBE
// job more per EXTRACT job on the probe's data set).
int64_t CountSweepJobs(const layerflow::v1::SweepSpec& spec);

// The cartesian product of a defaulted spec, in a stable order: models
// outermost, then init_schemes, seeds, datasets, context_lengths innermost,
// each axis in the order given. Job i of a sweep is always the same point.
// A TRAIN sweep (spec.train set): one TRAIN job per model, init scheme and
// seed (in that order), each with the sweep's TrainSpec.
//
// With spec.probe set, every EXTRACT job on the probe's data set (task) gets
// JobSpec.probe (classes resolved to its data set's num_classes), so that
// the worker uploads its features; then, after all EXTRACT jobs and in the
// same order, one PROBE job per such EXTRACT job: the same spec with kind
// PROBE, depending on that EXTRACT job (ExpandedJob::depends_on). EXTRACT
// jobs keep the indices they have without probe.
//
// A TRAIN sweep with analyses: after its TRAIN jobs, for each TRAIN job in
// order, EXTRACT jobs on its init model then on its trained model (data
// sets outer, context lengths inner), each depending on that TRAIN job and
// seeded with its seed. Their model is catalog::TrainedModelName of a
// placeholder id ("<job I>", I the TRAIN job's index), which the
// coordinator replaces with the TRAIN job's id.
struct ExpandedJob {
  layerflow::v1::JobSpec spec;
  // Index (into the expansion) of the job this one depends on; -1: none.
  int depends_on = -1;
};
std::vector<ExpandedJob> ExpandSweepJobs(const layerflow::v1::SweepSpec& spec);
// The specs of ExpandSweepJobs, without the dependencies.
std::vector<layerflow::v1::JobSpec> ExpandSweep(const layerflow::v1::SweepSpec& spec);

// A TRAIN sweep's analyses as the EXTRACT sweep they are checked as: no
// train fields, one checkpoint model, the reference init, and the data set
// and context length defaulting to the trained task and its length.
layerflow::v1::SweepSpec TrainedAnalysisView(const layerflow::v1::SweepSpec& spec);

// ceil(num_prompts / prompts_per_chunk): the chunks a job commits. A PROBE
// job commits exactly one chunk (its result rows, sequence 0); a TRAIN job
// one per evaluation, ceil(steps / eval_every) (catalog/train.h).
int64_t ChunksTotal(const layerflow::v1::JobSpec& job);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SPEC_SWEEP_SPEC_H_

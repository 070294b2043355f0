// The sweep `layerflow run` executes when no file is given: a newcomer's
// first command, and the contrast layerflow exists for. At random init the
// Transformers (pythia-160m, gpt-neo-125m) homogenise their tokens with
// depth (inter-token cosine climbs to ~0.45) while the state-space models
// (mamba-130m, mamba2-130m) do not (~0.005 and ~0.06): the published sizes
// with each architecture's own init. Four jobs of 2 MQAR prompts of 128
// tokens (token ids drawn from the seed, no tokenizer): under a minute on a
// 2-core CPU after the build (docs/cli.md has the measured output). Not
// KVPR: its prompt needs at least 362 tokens with the byte tokenizer, and
// on the CPU Mamba's mixer (the ATen path, a sequential scan) costs ~40 ms
// per token, so KVPR would take twice as long. The analyses feed the
// summary above the tables (intertoken_cos, path_energy) and the figures
// written next to them (metrics over depth, per-token adjacent cosine).
#ifndef LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_
#define LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_

namespace layerflow::client {

// Name used in error messages and `--help` for the embedded sweep.
inline constexpr char kDefaultSweepSource[] = "<default sweep>";

inline constexpr char kDefaultSweepYaml[] = R"yaml(# layerflow's built-in first sweep.
name: quickstart
models: [pythia-160m, gpt-neo-125m, mamba-130m, mamba2-130m]
init_schemes: [reference]
seeds: [0]
datasets: [mqar]
context_lengths: [128]
analyses: [adjacent_cos, intertoken_cos, path_energy, adjacent_cos_tokens]
num_prompts: 2
prompts_per_chunk: 2
dtype: fp32
priority: 0
)yaml";

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_

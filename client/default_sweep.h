// The sweep `layerflow run` executes when no file is given: a newcomer's
// first command. 2 models x 2 seeds = 4 jobs of 8 prompts. The context is
// 1536 tokens because a KVPR prompt with 11 gold positions needs about 1100
// tokens with the byte tokenizer (the worker rejects shorter ones). Retune
// (docs/sweep-file.md) once timings of the real worker are known.
#ifndef LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_
#define LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_

namespace layerflow::client {

// Name used in error messages and `--help` for the embedded sweep.
inline constexpr char kDefaultSweepSource[] = "<default sweep>";

inline constexpr char kDefaultSweepYaml[] = R"yaml(# layerflow's built-in first sweep.
name: quickstart
models: [pythia-14m, pythia-70m]
init_schemes: [reference]
seeds: [0, 1]
datasets: [{name: kvpr, num_classes: 11}]
context_lengths: [1536]
analyses: [adjacent_cos, intertoken_cos]
num_prompts: 8
prompts_per_chunk: 2
dtype: fp32
priority: 0
)yaml";

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_DEFAULT_SWEEP_H_

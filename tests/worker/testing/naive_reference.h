// An independent float64 reference for the worker's tests: GPT-NeoX forward
// and the layer metrics written as plain loops over std::vector<double>, no
// LibTorch ops, straight from the formulas (HF modeling_gpt_neox.py and
// METHODS.md), so it shares no code path with what it checks.
#ifndef LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_REFERENCE_H_
#define LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_REFERENCE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "worker/model/model_config.h"

namespace layerflow::worker::testing {

struct NaiveGptNeoX {
  GptNeoXConfig config;
  // HF parameter name -> row-major values.
  std::map<std::string, std::vector<double>> weights;
};

// A [n, d] row-major matrix of one representation point.
using NaiveStates = std::vector<double>;

// Points 0..L+1 (embedding, blocks, final norm) for one prompt.
std::vector<NaiveStates> NaiveForward(const NaiveGptNeoX& model, const std::vector<int32_t>& ids);

// mean_t cos(a_t, b_t).
double NaiveAdjacentCos(const NaiveStates& a, const NaiveStates& b, int64_t n, int64_t d);
// Mean cos over all unordered pairs i < j, by explicit pairs (not through
// the ||sum||^2 identity the worker uses).
double NaiveIntertokenCos(const NaiveStates& h, int64_t n, int64_t d);

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_REFERENCE_H_

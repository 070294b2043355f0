// Precompiled header of the worker's LibTorch targets: the ATen API only (no
// torch/csrc/api), which is all the model, analysis and runtime code uses.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

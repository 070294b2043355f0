// Run precisions (SweepSpec.dtype) and probe feature dtypes
// (ProbeSpec.feature_dtype), by name.
#ifndef LAYERFLOW_CATALOG_DTYPES_H_
#define LAYERFLOW_CATALOG_DTYPES_H_

#include <array>
#include <string>
#include <string_view>

namespace layerflow::catalog {

// float32, bfloat16, float16 (worker::ParseDtype maps them to LibTorch's).
inline constexpr std::array<std::string_view, 3> kDtypes = {"fp32", "bf16", "fp16"};
inline constexpr std::string_view kDefaultDtype = "fp32";
// The last-token feature files of probed jobs.
inline constexpr std::array<std::string_view, 2> kFeatureDtypes = {"fp16", "fp32"};
inline constexpr std::string_view kDefaultFeatureDtype = "fp16";

bool IsDtype(std::string_view name);
bool IsFeatureDtype(std::string_view name);
// ", "-joined, for error messages.
std::string DtypeList();
std::string FeatureDtypeList();

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_DTYPES_H_

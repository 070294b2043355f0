#include "catalog/dtypes.h"

#include "catalog/names.h"

namespace layerflow::catalog {

bool IsDtype(std::string_view name) { return Contains(kDtypes, name); }

bool IsFeatureDtype(std::string_view name) { return Contains(kFeatureDtypes, name); }

std::string DtypeList() { return JoinNames(kDtypes); }

std::string FeatureDtypeList() { return JoinNames(kFeatureDtypes); }

}  // namespace layerflow::catalog

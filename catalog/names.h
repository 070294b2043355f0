// Helpers over the catalog's name lists (std::array<std::string_view, N>).
#ifndef LAYERFLOW_CATALOG_NAMES_H_
#define LAYERFLOW_CATALOG_NAMES_H_

#include <span>
#include <string>
#include <string_view>

namespace layerflow::catalog {

// Whether `name` is one of `names`.
bool Contains(std::span<const std::string_view> names, std::string_view name);
// `names`, ", "-joined (for error messages).
std::string JoinNames(std::span<const std::string_view> names);

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_NAMES_H_

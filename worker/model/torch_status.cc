#include "worker/model/torch_status.h"

#include <exception>
#include <new>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "worker/model/language_model.h"

namespace layerflow::worker {

absl::Status StatusOfCurrentException(absl::string_view context, const PointNamer& point_name) {
  const std::string prefix = context.empty() ? std::string() : absl::StrCat(context, ": ");
  try {
    throw;
  } catch (const LayerError& e) {
    const std::string point =
        point_name ? point_name(e.layer()) : absl::StrCat("point ", e.layer());
    const std::string message = absl::StrCat(prefix, point, ": ", e.what());
    return e.out_of_memory() ? absl::ResourceExhaustedError(message) : absl::InternalError(message);
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(prefix, e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(prefix, e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(prefix, "out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(prefix, e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(prefix, "unknown exception"));
  }
}

}  // namespace layerflow::worker

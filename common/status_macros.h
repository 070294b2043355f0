// Status propagation macros shared by every module.
//
//   LF_RETURN_IF_ERROR(expr);                       // returns the status as is
//   LF_RETURN_IF_ERROR(expr) << "while loading " << path;  // annotates it
//   LF_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
//
// The annotation keeps the original code (the most specific one wins at the
// boundary) and prefixes the message with context, outermost first.
#ifndef LAYERFLOW_COMMON_STATUS_MACROS_H_
#define LAYERFLOW_COMMON_STATUS_MACROS_H_

#include <sstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerflow {

// Collects an annotation and converts to the annotated status.
class StatusBuilder {
 public:
  explicit StatusBuilder(absl::Status status) : status_(std::move(status)) {}

  template <typename T>
  StatusBuilder& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

  operator absl::Status() const {  // NOLINT(google-explicit-constructor)
    std::string context = stream_.str();
    if (context.empty()) return status_;
    return absl::Status(status_.code(), context + ": " + std::string(status_.message()));
  }
  template <typename T>
  operator absl::StatusOr<T>() const {  // NOLINT(google-explicit-constructor)
    return absl::StatusOr<T>(static_cast<absl::Status>(*this));
  }

 private:
  absl::Status status_;
  std::ostringstream stream_;
};

}  // namespace layerflow

#define LF_STATUS_CONCAT_INNER_(a, b) a##b
#define LF_STATUS_CONCAT_(a, b) LF_STATUS_CONCAT_INNER_(a, b)

// The `switch (0) case 0: default:` form lets `<< annotation` follow the macro
// while still being a single statement that is safe in an unbraced if/else.
#define LF_RETURN_IF_ERROR(expr)                               \
  switch (0)                                                   \
  case 0:                                                      \
  default:                                                     \
    if (::absl::Status lf_status_ = (expr); lf_status_.ok()) { \
    } else /* NOLINT */                                        \
      return ::layerflow::StatusBuilder(std::move(lf_status_))

#define LF_ASSIGN_OR_RETURN(lhs, expr) \
  LF_ASSIGN_OR_RETURN_IMPL_(LF_STATUS_CONCAT_(lf_statusor_, __LINE__), lhs, expr)

#define LF_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return statusor.status();        \
  lhs = std::move(statusor).value()

#endif  // LAYERFLOW_COMMON_STATUS_MACROS_H_

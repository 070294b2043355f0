// StatusIs: the one gmock matcher of a status for every test.
//
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument, "spec.models[1]"));
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, Eq("exact message")));
//   EXPECT_THAT(grpc_status, StatusIs(grpc::StatusCode::PERMISSION_DENIED, "GetSweep: "));
//
// The argument is an absl::Status, an absl::StatusOr<T> (its status) or a
// grpc::Status (anything with error_code() and error_message()); the code
// must be of that status's own code type. The second argument is a message
// substring, or any matcher of the message as a std::string; without it
// only the code is matched. Header-only, and no gRPC header: a grpc::Status
// is recognised by its members.
#ifndef LAYERFLOW_TESTS_TESTING_STATUS_MATCHERS_H_
#define LAYERFLOW_TESTS_TESTING_STATUS_MATCHERS_H_

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace layerflow::testing {
namespace status_internal {

template <typename T, typename = void>
struct IsGrpcStatus : std::false_type {};
template <typename T>
struct IsGrpcStatus<T, std::void_t<decltype(std::declval<const T&>().error_code()),
                                   decltype(std::declval<const T&>().error_message())>>
    : std::true_type {};

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

// grpc::StatusCode has absl::StatusCode's numbers (and names).
template <typename Code>
std::string CodeName(Code code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

template <typename Code>
class StatusIsMatcher {
 public:
  StatusIsMatcher(Code code, std::optional<::testing::Matcher<const std::string&>> message)
      : code_(code), message_(std::move(message)) {}

  template <typename T>
  bool MatchAndExplain(const T& arg, ::testing::MatchResultListener* listener) const {
    if constexpr (IsGrpcStatus<T>::value) {
      return Match(arg.error_code(), std::string(arg.error_message()), listener);
    } else {
      const absl::Status& status = StatusOf(arg);
      return Match(status.code(), std::string(status.message()), listener);
    }
  }

  void DescribeTo(std::ostream* os) const {
    *os << "has code " << CodeName(code_);
    if (message_) {
      *os << " and a message that ";
      message_->DescribeTo(os);
    }
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "has a code other than " << CodeName(code_);
    if (message_) {
      *os << " or a message that ";
      message_->DescribeNegationTo(os);
    }
  }

 private:
  template <typename ArgCode>
  bool Match(ArgCode code, const std::string& message,
             ::testing::MatchResultListener* listener) const {
    static_assert(std::is_same_v<ArgCode, Code>,
                  "StatusIs: the code is not of the status's code type");
    if (code != code_) {
      *listener << "code is " << CodeName(code) << ": " << message;
      return false;
    }
    ::testing::StringMatchResultListener inner;
    if (message_ && !message_->MatchAndExplain(message, &inner)) {
      *listener << "message is: " << message;
      if (!inner.str().empty()) *listener << ", " << inner.str();
      return false;
    }
    return true;
  }

  Code code_;
  std::optional<::testing::Matcher<const std::string&>> message_;  // none: any message
};

}  // namespace status_internal

// The code alone.
template <typename Code, typename = std::enable_if_t<std::is_enum_v<Code>>>
::testing::PolymorphicMatcher<status_internal::StatusIsMatcher<Code>> StatusIs(Code code) {
  return ::testing::MakePolymorphicMatcher(
      status_internal::StatusIsMatcher<Code>(code, std::nullopt));
}

// The code and a substring of the message.
template <typename Code, typename = std::enable_if_t<std::is_enum_v<Code>>>
::testing::PolymorphicMatcher<status_internal::StatusIsMatcher<Code>> StatusIs(
    Code code, std::string_view substring) {
  return ::testing::MakePolymorphicMatcher(
      status_internal::StatusIsMatcher<Code>(code, ::testing::HasSubstr(std::string(substring))));
}

// The code and a matcher of the message (Eq, StartsWith, AllOf, ...).
template <typename Code, typename MessageMatcher,
          typename = std::enable_if_t<std::is_enum_v<Code> &&
                                      !std::is_convertible_v<MessageMatcher, std::string_view>>>
::testing::PolymorphicMatcher<status_internal::StatusIsMatcher<Code>> StatusIs(
    Code code, MessageMatcher message) {
  return ::testing::MakePolymorphicMatcher(status_internal::StatusIsMatcher<Code>(
      code, ::testing::SafeMatcherCast<const std::string&>(std::move(message))));
}

}  // namespace layerflow::testing

#endif  // LAYERFLOW_TESTS_TESTING_STATUS_MATCHERS_H_

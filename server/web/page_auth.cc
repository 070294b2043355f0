#include "server/web/page_auth.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace layerflow::server::web {
namespace {

HttpResponse Refusal(const absl::Status& status) {
  HttpResponse r;
  const bool unauthenticated = status.code() == absl::StatusCode::kUnauthenticated;
  r.status = unauthenticated                                        ? 401
             : status.code() == absl::StatusCode::kPermissionDenied ? 403
                                                                    : 500;
  r.content_type = "text/plain; charset=utf-8";
  r.body = absl::StrCat(status.message(), "\n");
  if (unauthenticated) {
    r.headers.push_back({"WWW-Authenticate", "Basic realm=\"layerflow\", charset=\"UTF-8\""});
  }
  r.headers.push_back({"Cache-Control", "no-store"});
  return r;
}

// "Basic base64(name:token)" as "Bearer token"; anything else as it is (the
// Authorizer says what is wrong with it).
std::optional<std::string> AsBearer(const std::optional<std::string>& header) {
  if (!header.has_value()) return std::nullopt;
  absl::string_view value = *header;
  if (!absl::ConsumePrefix(&value, "Basic ")) return header;
  std::string decoded;
  if (!absl::Base64Unescape(absl::StripAsciiWhitespace(value), &decoded)) {
    return std::string("Basic (not base64)");
  }
  const size_t colon = decoded.find(':');
  return absl::StrCat("Bearer ", colon == std::string::npos ? decoded : decoded.substr(colon + 1));
}

}  // namespace

std::string SweepOfPath(const std::string& path) {
  const std::vector<std::string> parts = absl::StrSplit(path, '/');
  if (parts.size() >= 3 && parts[0].empty() && parts[1] == "sweeps") return parts[2];
  if (parts.size() >= 4 && parts[0].empty() && parts[1] == "api" && parts[2] == "sweeps") {
    return parts[3];
  }
  return "";
}

std::optional<HttpResponse> GatePage(const auth::Authorizer& authorizer, HttpRequest* request) {
  if (!authorizer.enabled()) return std::nullopt;
  const std::optional<std::string> bearer = AsBearer(request->authorization);
  absl::StatusOr<auth::Identity> who =
      authorizer.Authenticate(bearer, /*peer_certificate_verified=*/false, auth::Rpc::kGetSweep);
  if (!who.ok()) {
    // The gRPC wording names the metadata; here it is a header.
    return Refusal(absl::Status(
        who.status().code(),
        absl::StrCat("results page: ", who.status().message(),
                     bearer.has_value() ? ""
                                        : " (send 'Authorization: Bearer <token>', or the token "
                                          "as the password of HTTP Basic)")));
  }
  const std::string sweep = SweepOfPath(request->path);
  if (!sweep.empty()) {
    absl::Status access =
        authorizer.CheckAccess(*who, auth::Rpc::kGetSweep, auth::Resource{.sweep_id = sweep});
    if (!access.ok()) {
      return Refusal(absl::Status(access.code(), absl::StrCat("results page: ", access.message())));
    }
  }
  if (who->role != auth::Role::kAdmin) {
    request->may_see_sweep = [&authorizer, identity = *who](const std::string& id) {
      return authorizer.CheckAccess(identity, auth::Rpc::kGetSweep, auth::Resource{.sweep_id = id})
          .ok();
    };
  }
  return std::nullopt;
}

}  // namespace layerflow::server::web

// The results page behind the coordinator's API tokens (--auth-db), so that
// the HTTP port shows nobody what the gRPC port would refuse them.
//
// A script sends "Authorization: Bearer <token>"; a browser sends the token
// as HTTP Basic's password (any user name: the browser asks once, after the
// 401's challenge). The token is checked as for GetSweep (roles user and
// admin; a worker token is refused): 401 with a Basic challenge without a
// valid token, 403 for a page of a sweep that is not the caller's (the same
// answer whether or not it exists, as the gRPC port gives), and a user's
// lists show only their own sweeps (an admin's every sweep).
// Authentication off: every request passes, as everywhere else.
#ifndef LAYERFLOW_SERVER_WEB_PAGE_AUTH_H_
#define LAYERFLOW_SERVER_WEB_PAGE_AUTH_H_

#include <optional>
#include <string>

#include "server/auth/authorizer.h"
#include "server/web/results_site.h"

namespace layerflow::server::web {

// nullopt: serve `request` (its may_see_sweep set for a non-admin);
// otherwise the 401 / 403 answer, its body saying why.
std::optional<HttpResponse> GatePage(const auth::Authorizer& authorizer, HttpRequest* request);

// The sweep a page path belongs to (/sweeps/ID..., /api/sweeps/ID), or "".
std::string SweepOfPath(const std::string& path);

}  // namespace layerflow::server::web

#endif  // LAYERFLOW_SERVER_WEB_PAGE_AUTH_H_

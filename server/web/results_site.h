// The results web page (`layerflow-coordinator --http`): what a researcher
// looks at after a sweep. Plain HTML pages, one small script, the sweep's
// figures drawn by the code of `layerflow plot` (report/figures) and its
// results as CSV / JSON with the bytes of `layerflow results --format csv`
// (report/output). docs/operations.md, "Results page", lists the routes.
//
// The handlers are a pure function of the request and the coordinator's
// state (ResultsSite::Handle), so tests call them without a socket;
// http_server.h puts them behind civetweb. Read-only: no route changes
// anything. Thread-safe.
#ifndef LAYERFLOW_SERVER_WEB_RESULTS_SITE_H_
#define LAYERFLOW_SERVER_WEB_RESULTS_SITE_H_

#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/core/coordinator_core.h"

namespace layerflow::server::web {

struct HttpRequest {
  std::string method = "GET";
  // The path, percent-decoded ("/sweeps/sw-1"), without the query.
  std::string path;
  // The raw query string after '?', not decoded ("format=csv&model=a%2Bb").
  std::string query;
  // The Authorization header, when the request has one (HttpServer).
  std::optional<std::string> authorization;
  // Set by GatePage (page_auth.h) for a caller who may see some sweeps
  // only: the lists then show those. Unset: every sweep.
  std::function<bool(const std::string& sweep_id)> may_see_sweep;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
  // Further headers (Content-Disposition, Allow, Cache-Control).
  std::vector<std::pair<std::string, std::string>> headers;
};

// The decoded parameters of a query string ('+' is a space, %XX a byte).
// INVALID_ARGUMENT for a malformed escape, a parameter without a name, or
// one given twice.
absl::StatusOr<std::map<std::string, std::string>> ParseQuery(absl::string_view query);

// The HTTP status for an error of the coordinator's: NOT_FOUND 404,
// INVALID_ARGUMENT / OUT_OF_RANGE 400, FAILED_PRECONDITION 409,
// UNAVAILABLE 503, anything else 500.
int HttpStatusFor(const absl::Status& status);

// "&<>\"'" escaped for HTML text and attribute values.
std::string HtmlEscape(absl::string_view text);

class ResultsSite {
 public:
  // `core` must outlive the site.
  explicit ResultsSite(CoordinatorCore* core);
  ~ResultsSite();

  // GET (or HEAD: the same headers, no body) of one route; 405 for another
  // method, 404 for an unknown path or sweep (the message names it), 400
  // for a bad query.
  HttpResponse Handle(const HttpRequest& request);

 private:
  struct SweepData;  // a sweep's rows and figures at one state of it

  HttpResponse Route(const HttpRequest& request);
  HttpResponse SweepsPage(const HttpRequest& request,
                          const std::map<std::string, std::string>& query);
  HttpResponse SweepPage(const std::string& sweep_id,
                         const std::map<std::string, std::string>& query);
  HttpResponse Results(const std::string& sweep_id,
                       const std::map<std::string, std::string>& query);
  HttpResponse Figure(const std::string& sweep_id, const std::string& file,
                      const std::map<std::string, std::string>& query);
  HttpResponse SweepsJson(const HttpRequest& request,
                          const std::map<std::string, std::string>& query);
  HttpResponse SweepJson(const std::string& sweep_id,
                         const std::map<std::string, std::string>& query);

  // Every sweep `request` may see (HttpRequest::may_see_sweep), newest first.
  absl::StatusOr<std::vector<layerflow::v1::Sweep>> ListSweeps(const HttpRequest& request);
  absl::StatusOr<std::vector<layerflow::v1::Job>> ListJobs(const std::string& sweep_id);
  // The rows `layerflow results` reads (every page of QueryResults).
  absl::StatusOr<std::vector<layerflow::v1::ResultRow>> QueryRows(
      const layerflow::v1::QueryResultsRequest& request);
  // The sweep's rows and figures, from the cache while the sweep has not
  // changed (its counts of chunks and of jobs by state).
  absl::StatusOr<std::shared_ptr<SweepData>> Data(const layerflow::v1::Sweep& sweep);

  CoordinatorCore* const core_;
  absl::Mutex mu_;
  // Most recently used first; a few sweeps' worth.
  std::list<std::shared_ptr<SweepData>> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace layerflow::server::web

#endif  // LAYERFLOW_SERVER_WEB_RESULTS_SITE_H_

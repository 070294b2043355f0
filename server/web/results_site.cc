#include "server/web/results_site.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "report/output.h"
#include "server/web/assets.h"
#ifdef LAYERFLOW_HAVE_PLOT
#include "report/figures/figures.h"
#include "report/plot/plot.h"
#endif

namespace layerflow::server::web {

namespace v1 = ::layerflow::v1;
using Query = std::map<std::string, std::string>;

// What the page keeps of a sweep: its rows and figures at one state of it.
struct ResultsSite::SweepData {
  std::string sweep_id;
  std::string fingerprint;
  std::vector<v1::ResultRow> rows;
#ifdef LAYERFLOW_HAVE_PLOT
  absl::StatusOr<std::vector<report::NamedFigure>> figures = std::vector<report::NamedFigure>{};
  absl::Mutex mu;
  std::map<std::string, std::string> images ABSL_GUARDED_BY(mu);  // file name -> bytes
#endif
};

namespace {

// Sweeps whose rows and figures stay cached (each page of a sweep draws on
// them, and every figure of the page is a request of its own).
constexpr size_t kCachedSweeps = 8;

constexpr char kHtml[] = "text/html; charset=utf-8";
constexpr char kText[] = "text/plain; charset=utf-8";
constexpr char kJson[] = "application/json";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> Decode(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%') {
      const bool complete = i + 2 < s.size();
      const int hi = complete ? HexDigit(s[i + 1]) : -1;
      const int lo = complete ? HexDigit(s[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("query: malformed escape '", s.substr(i, 3), "' in '", s, "'"));
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

HttpResponse Error(int status, absl::string_view message) {
  HttpResponse r;
  r.status = status;
  r.content_type = kText;
  r.body = absl::StrCat(message, "\n");
  return r;
}

HttpResponse Error(const absl::Status& status) {
  return Error(HttpStatusFor(status), status.message());
}

// 400 naming the first parameter a route does not take.
std::optional<HttpResponse> UnknownParameter(const Query& query,
                                             const std::set<std::string>& allowed) {
  for (const auto& [name, value] : query) {
    if (allowed.count(name)) continue;
    return Error(400, absl::StrCat("query parameter '", name, "': unknown here (expected ",
                                   allowed.empty() ? "none" : absl::StrJoin(allowed, ", "), ")"));
  }
  return std::nullopt;
}

std::string Get(const Query& query, const std::string& name) {
  auto it = query.find(name);
  return it == query.end() ? "" : it->second;
}

std::string Lower(absl::string_view enum_name, absl::string_view prefix) {
  return absl::AsciiStrToLower(absl::StripPrefix(enum_name, prefix));
}

std::string JobKindName(v1::JobKind kind) { return Lower(v1::JobKind_Name(kind), "JOB_KIND_"); }

bool IsFinal(const v1::Sweep& sweep) {
  return sweep.state() != v1::SWEEP_STATE_ACTIVE && sweep.state() != v1::SWEEP_STATE_UNSPECIFIED;
}

// "2/4 jobs done · 6/16 chunks", as the script writes it while it refreshes.
std::string ProgressText(const v1::Sweep& s) {
  const int64_t done = s.jobs_succeeded() + s.jobs_failed() + s.jobs_cancelled();
  std::string out = absl::StrCat(done, "/", s.jobs_total(), " jobs done");
  if (s.jobs_running() > 0) absl::StrAppend(&out, ", ", s.jobs_running(), " running");
  if (s.jobs_failed() > 0) absl::StrAppend(&out, ", ", s.jobs_failed(), " failed");
  absl::StrAppend(&out, " · ", s.chunks_committed(), "/", s.chunks_total(), " chunks");
  return out;
}

std::string Progress(int64_t value, int64_t max) {
  return absl::StrCat("<progress value=\"", value, "\" max=\"", std::max<int64_t>(max, 1),
                      "\"></progress>");
}

std::string StateCell(const std::string& state, absl::string_view attributes = "") {
  return absl::StrCat("<span class=\"state state-", state, "\" data-field=\"state\"", attributes,
                      ">", state, "</span>");
}

std::string UtcTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// The page around `body`.
HttpResponse Page(absl::string_view title, absl::string_view body) {
  HttpResponse r;
  r.content_type = kHtml;
  r.headers.push_back({"Cache-Control", "no-store"});
  r.body = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
      HtmlEscape(title), "</title>\n<style>", kStyleSheet, "</style>\n",
      "<script src=\"/layerflow.js\" defer></script>\n</head>\n<body>\n"
      "<header><a href=\"/\">layerflow</a> · results</header>\n<main>\n",
      body, "</main>\n</body>\n</html>\n");
  return r;
}

// A summary value as the CLI's table prints it: 4 decimals, tiny or huge
// numbers in scientific notation.
std::string SummaryCell(const nlohmann::ordered_json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();
  if (v.is_number()) {
    const double d = v.get<double>();
    const double a = std::fabs(d);
    return (a != 0 && (a < 1e-3 || a >= 1e6)) ? absl::StrFormat("%.3e", d)
                                              : absl::StrFormat("%.4f", d);
  }
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(SummaryCell(e));
    return absl::StrJoin(parts, ", ");
  }
  return v.dump();
}

// FormatResultsSummary's JSON (the `layerflow results --summary` figures)
// as an HTML table: the same numbers, columns in its order, less the job
// ids (the jobs table has them).
std::string SummaryTable(absl::Span<const v1::ResultRow> rows) {
  const nlohmann::ordered_json lines = nlohmann::ordered_json::parse(
      report::FormatResultsSummary(rows, report::OutputFormat::kJson));
  if (!lines.is_array() || lines.empty()) return "<p class=\"none\">No results yet.</p>\n";
  std::string out = "<div class=\"wide\"><table class=\"summary\" id=\"summary\">\n<thead><tr>";
  for (const auto& [key, value] : lines.front().items()) {
    if (key == "jobs") continue;
    absl::StrAppend(&out, "<th>", HtmlEscape(key), "</th>");
  }
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& line : lines) {
    out += "<tr>";
    for (const auto& [key, value] : line.items()) {
      if (key == "jobs") continue;
      absl::StrAppend(&out, "<td>", HtmlEscape(SummaryCell(value)), "</td>");
    }
    out += "</tr>\n";
  }
  out += "</tbody>\n</table></div>\n";
  return out;
}

std::string Fingerprint(const v1::Sweep& s) {
  return absl::StrCat(s.state(), ":", s.jobs_queued(), ":", s.jobs_running(), ":",
                      s.jobs_succeeded(), ":", s.jobs_failed(), ":", s.jobs_cancelled(), ":",
                      s.chunks_committed(), ":", s.chunks_total());
}

nlohmann::ordered_json SweepToJson(const v1::Sweep& s) {
  return {{"sweep_id", s.sweep_id()},
          {"name", s.spec().name()},
          {"state", Lower(v1::SweepState_Name(s.state()), "SWEEP_STATE_")},
          {"created_unix_ms", s.created_unix_ms()},
          {"jobs_total", s.jobs_total()},
          {"jobs_queued", s.jobs_queued()},
          {"jobs_running", s.jobs_running()},
          {"jobs_succeeded", s.jobs_succeeded()},
          {"jobs_failed", s.jobs_failed()},
          {"jobs_cancelled", s.jobs_cancelled()},
          {"chunks_committed", s.chunks_committed()},
          {"chunks_total", s.chunks_total()},
          {"progress", ProgressText(s)}};
}

nlohmann::ordered_json JobToJson(const v1::Job& j) {
  return {{"job_id", j.job_id()},
          {"kind", JobKindName(j.spec().kind())},
          {"state", report::JobStateName(j.state())},
          {"model", j.spec().model()},
          {"init_scheme", j.spec().init_scheme()},
          {"seed", j.spec().seed()},
          {"dataset", j.spec().dataset().name()},
          {"context_length", j.spec().context_length()},
          {"chunks_committed", j.chunks_committed()},
          {"chunks_total", j.chunks_total()},
          {"attempts", j.attempts()},
          {"error", j.error()}};
}

HttpResponse JsonResponse(const nlohmann::ordered_json& value) {
  HttpResponse r;
  r.content_type = kJson;
  r.headers.push_back({"Cache-Control", "no-store"});
  r.body = value.dump(2) + "\n";
  return r;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseQuery(absl::string_view query) {
  Query out;
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t eq = part.find('=');
    LF_ASSIGN_OR_RETURN(std::string name, Decode(part.substr(0, eq)));
    std::string value;
    if (eq != absl::string_view::npos) {
      LF_ASSIGN_OR_RETURN(value, Decode(part.substr(eq + 1)));
    }
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("query: a parameter without a name in '", query, "'"));
    }
    if (!out.emplace(name, std::move(value)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter '", name, "': given more than once"));
    }
  }
  return out;
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::string HtmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

ResultsSite::ResultsSite(CoordinatorCore* core) : core_(core) {}
ResultsSite::~ResultsSite() = default;

HttpResponse ResultsSite::Handle(const HttpRequest& request) {
  if (request.method != "GET" && request.method != "HEAD") {
    HttpResponse r = Error(405, absl::StrCat("method ", request.method,
                                             ": not allowed (the results page is read-only)"));
    r.headers.push_back({"Allow", "GET, HEAD"});
    return r;
  }
  HttpResponse response = Route(request);
  if (request.method == "HEAD") response.body.clear();
  return response;
}

HttpResponse ResultsSite::Route(const HttpRequest& request) {
  absl::StatusOr<Query> query = ParseQuery(request.query);
  if (!query.ok()) return Error(query.status());
  const std::string& path = request.path;
  if (path == "/" || path == "/sweeps") return SweepsPage(request, *query);
  if (path == "/layerflow.js") {
    if (auto bad = UnknownParameter(*query, {})) return *bad;
    HttpResponse r;
    r.content_type = "text/javascript; charset=utf-8";
    r.body = kScript;
    return r;
  }
  if (path == "/api/sweeps") return SweepsJson(request, *query);
  // /sweeps/ID[/results | /figures/FILE], /api/sweeps/ID
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  // A leading "/" gives an empty first part.
  if (parts.size() >= 3 && parts[0].empty() && parts[1] == "sweeps" && !parts[2].empty()) {
    const std::string& id = parts[2];
    if (parts.size() == 3) return SweepPage(id, *query);
    if (parts.size() == 4 && parts[3] == "results") return Results(id, *query);
    if (parts.size() == 5 && parts[3] == "figures" && !parts[4].empty()) {
      return Figure(id, parts[4], *query);
    }
  }
  if (parts.size() == 4 && parts[0].empty() && parts[1] == "api" && parts[2] == "sweeps" &&
      !parts[3].empty()) {
    return SweepJson(parts[3], *query);
  }
  return Error(404, absl::StrCat("no page at '", path,
                                 "' (pages: /, /sweeps/SWEEP_ID, /sweeps/SWEEP_ID/results, "
                                 "/sweeps/SWEEP_ID/figures/NAME.png, /api/sweeps)"));
}

absl::StatusOr<std::vector<v1::Job>> ResultsSite::ListJobs(const std::string& sweep_id) {
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep_id);
  std::vector<v1::Job> jobs;
  do {
    LF_ASSIGN_OR_RETURN(v1::ListJobsResponse page, core_->ListJobs(request));
    for (v1::Job& job : *page.mutable_jobs()) jobs.push_back(std::move(job));
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return jobs;
}

absl::StatusOr<std::vector<v1::Sweep>> ResultsSite::ListSweeps(const HttpRequest& request) {
  // The API lists jobs, not sweeps: the sweeps are those of every job, in
  // creation order (as the Python client's sweeps() finds them).
  LF_ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, ListJobs(""));
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const v1::Job& job : jobs) {
    if (!seen.insert(job.sweep_id()).second) continue;
    if (request.may_see_sweep && !request.may_see_sweep(job.sweep_id())) continue;
    ids.push_back(job.sweep_id());
  }
  std::vector<v1::Sweep> sweeps;
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    LF_ASSIGN_OR_RETURN(v1::Sweep sweep, core_->GetSweep(*it));
    sweeps.push_back(std::move(sweep));
  }
  return sweeps;
}

absl::StatusOr<std::vector<v1::ResultRow>> ResultsSite::QueryRows(
    const v1::QueryResultsRequest& first) {
  v1::QueryResultsRequest request = first;
  std::vector<v1::ResultRow> rows;
  do {
    LF_ASSIGN_OR_RETURN(v1::QueryResultsResponse page, core_->QueryResults(request));
    for (v1::ResultRow& row : *page.mutable_rows()) rows.push_back(std::move(row));
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return rows;
}

absl::StatusOr<std::shared_ptr<ResultsSite::SweepData>> ResultsSite::Data(const v1::Sweep& sweep) {
  const std::string fingerprint = Fingerprint(sweep);
  {
    absl::MutexLock lock(&mu_);
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if ((*it)->sweep_id != sweep.sweep_id()) continue;
      if ((*it)->fingerprint != fingerprint) {
        cache_.erase(it);
        break;
      }
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front();
    }
  }
  // Built outside the lock: two requests may both build it; the last wins.
  auto data = std::make_shared<SweepData>();
  data->sweep_id = sweep.sweep_id();
  data->fingerprint = fingerprint;
  v1::QueryResultsRequest request;
  request.set_sweep_id(sweep.sweep_id());
  LF_ASSIGN_OR_RETURN(data->rows, QueryRows(request));
#ifdef LAYERFLOW_HAVE_PLOT
  data->figures = report::BuildFigures(data->rows, {.sweep_id = sweep.sweep_id()});
#endif
  absl::MutexLock lock(&mu_);
  cache_.remove_if(
      [&](const std::shared_ptr<SweepData>& d) { return d->sweep_id == sweep.sweep_id(); });
  cache_.push_front(data);
  if (cache_.size() > kCachedSweeps) cache_.pop_back();
  return data;
}

HttpResponse ResultsSite::SweepsPage(const HttpRequest& request, const Query& query) {
  if (auto bad = UnknownParameter(query, {})) return *bad;
  absl::StatusOr<std::vector<v1::Sweep>> sweeps = ListSweeps(request);
  if (!sweeps.ok()) return Error(sweeps.status());
  std::string body = "<h1>Sweeps</h1>\n";
  if (sweeps->empty()) {
    body +=
        "<p class=\"none\" id=\"no-sweeps\">No sweeps yet: submit one with "
        "<code>layerflow submit sweep.yaml</code>.</p>\n";
    return Page("layerflow · sweeps", body);
  }
  body +=
      "<table id=\"sweeps\">\n<thead><tr><th>sweep</th><th>name</th><th>state</th>"
      "<th>progress</th><th>created</th></tr></thead>\n<tbody>\n";
  for (const v1::Sweep& s : *sweeps) {
    const std::string id = HtmlEscape(s.sweep_id());
    absl::StrAppend(&body, "<tr class=\"sweep\" data-sweep-id=\"", id, "\" data-live=\"",
                    IsFinal(s) ? 0 : 1, "\"><td class=\"id\"><a href=\"/sweeps/", id, "\">", id,
                    "</a></td><td>", HtmlEscape(s.spec().name()), "</td><td>",
                    StateCell(report::SweepStateName(s.state())), "</td><td>",
                    Progress(s.chunks_committed(), s.chunks_total()),
                    " <span data-field=\"progress\">", HtmlEscape(ProgressText(s)),
                    "</span></td><td>", UtcTime(s.created_unix_ms()), "</td></tr>\n");
  }
  body += "</tbody>\n</table>\n";
  return Page("layerflow · sweeps", body);
}

HttpResponse ResultsSite::SweepPage(const std::string& sweep_id, const Query& query) {
  if (auto bad = UnknownParameter(query, {})) return *bad;
  absl::StatusOr<v1::Sweep> sweep = core_->GetSweep(sweep_id);
  if (!sweep.ok()) return Error(sweep.status());
  absl::StatusOr<std::vector<v1::Job>> jobs = ListJobs(sweep_id);
  if (!jobs.ok()) return Error(jobs.status());
  absl::StatusOr<std::shared_ptr<SweepData>> data = Data(*sweep);
  if (!data.ok()) return Error(data.status());
  const std::string id = HtmlEscape(sweep_id);
  const std::string base = absl::StrCat("/sweeps/", id);

  std::string body = absl::StrCat(
      "<h1>", HtmlEscape(sweep->spec().name()), " <span class=\"id\">", id, "</span></h1>\n",
      "<p class=\"sweep\" id=\"sweep\" data-sweep-id=\"", id, "\" data-live=\"",
      IsFinal(*sweep) ? 0 : 1, "\">", StateCell(report::SweepStateName(sweep->state())), " ",
      Progress(sweep->chunks_committed(), sweep->chunks_total()), " <span data-field=\"progress\">",
      HtmlEscape(ProgressText(*sweep)), "</span></p>\n",
      "<p class=\"downloads\">Results: <a id=\"download-csv\" href=\"", base,
      "/results?format=csv\" download=\"", id,
      ".csv\">CSV</a> · <a id=\"download-json\" "
      "href=\"",
      base, "/results?format=json\" download=\"", id,
      ".json\">JSON</a> (the rows of <code>layerflow results ", id, " --format csv</code>)</p>\n");

  // Jobs.
  body +=
      "<h2>Jobs</h2>\n<table id=\"jobs\">\n<thead><tr><th>job</th><th>kind</th>"
      "<th>model</th><th>init</th><th>seed</th><th>dataset</th><th>context</th>"
      "<th>state</th><th>chunks</th><th>attempts</th><th>error</th></tr></thead>\n<tbody>\n";
  for (const v1::Job& j : *jobs) {
    absl::StrAppend(
        &body, "<tr class=\"job\" data-job-id=\"", HtmlEscape(j.job_id()), "\"><td class=\"id\">",
        HtmlEscape(j.job_id()), "</td><td>", JobKindName(j.spec().kind()), "</td><td>",
        HtmlEscape(j.spec().model()), "</td><td>", HtmlEscape(j.spec().init_scheme()),
        "</td><td class=\"num\">", j.spec().seed(), "</td><td>",
        HtmlEscape(j.spec().dataset().name()), "</td><td class=\"num\">", j.spec().context_length(),
        "</td><td>", StateCell(report::JobStateName(j.state())), "</td><td>",
        Progress(j.chunks_committed(), j.chunks_total()), " <span data-field=\"chunks\">",
        j.chunks_committed(), "/", j.chunks_total(),
        "</span></td><td class=\"num\" data-field=\"attempts\">", j.attempts(),
        "</td><td class=\"error\" data-field=\"error\">", HtmlEscape(j.error()), "</td></tr>\n");
  }
  body += "</tbody>\n</table>\n";

  // Figures.
  body += "<h2>Figures</h2>\n";
#ifdef LAYERFLOW_HAVE_PLOT
  const auto& figures = (*data)->figures;
  if (!figures.ok()) {
    absl::StrAppend(&body, "<p class=\"none\" id=\"no-figures\">No figures: ",
                    HtmlEscape(figures.status().message()), "</p>\n");
  } else {
    body += "<div class=\"figures\">\n";
    for (const report::NamedFigure& f : *figures) {
      const std::string title = std::visit([](const auto& fig) { return fig.title; }, f.figure);
      const std::string name = HtmlEscape(f.name);
      absl::StrAppend(&body, "<figure id=\"figure-", name, "\"><img class=\"figure-image\" src=\"",
                      base, "/figures/", name, ".png\" alt=\"", HtmlEscape(title),
                      "\"><figcaption>", HtmlEscape(title), " · <a href=\"", base, "/figures/",
                      name, ".svg\">SVG</a> · <a href=\"", base, "/figures/", name,
                      ".json\">data</a></figcaption></figure>\n");
    }
    body += "</div>\n";
  }
#else
  body +=
      "<p class=\"none\" id=\"no-figures\">No figures: this coordinator was built without "
      "cairo (libcairo2-dev).</p>\n";
#endif

  // Tables: the summary, then the per-layer results as `layerflow results`
  // prints them.
  body += "<h2>Summary</h2>\n";
  body += SummaryTable((*data)->rows);
  if (!(*data)->rows.empty()) {
    absl::StrAppend(&body,
                    "<h2>Per-layer results</h2>\n<p class=\"note\">As "
                    "<code>layerflow results ",
                    id, "</code> prints them (mean ± std over prompts).</p>\n<pre id=\"results\">",
                    HtmlEscape(report::FormatResultsTable((*data)->rows)), "</pre>\n");
  }
  return Page(absl::StrCat("layerflow · ", sweep->spec().name(), " ", sweep_id), body);
}

HttpResponse ResultsSite::Results(const std::string& sweep_id, const Query& query) {
  if (auto bad = UnknownParameter(query, {"format", "model", "metric", "job"})) return *bad;
  const std::string format_name = query.count("format") ? Get(query, "format") : "csv";
  if (format_name != "csv" && format_name != "json") {
    return Error(400,
                 absl::StrCat("query parameter 'format': '", format_name, "' is not csv or json"));
  }
  const report::OutputFormat format =
      format_name == "csv" ? report::OutputFormat::kCsv : report::OutputFormat::kJson;
  // The request `layerflow results SWEEP --model M --metric X --job J` makes.
  v1::QueryResultsRequest request;
  request.set_sweep_id(sweep_id);
  request.set_model(Get(query, "model"));
  request.set_metric(Get(query, "metric"));
  request.set_job_id(Get(query, "job"));
  absl::StatusOr<std::vector<v1::ResultRow>> rows = QueryRows(request);
  if (!rows.ok()) return Error(rows.status());
  HttpResponse r;
  r.content_type = format == report::OutputFormat::kCsv ? "text/csv; charset=utf-8" : kJson;
  r.body = report::FormatResults(*rows, format);
  r.headers.push_back({"Cache-Control", "no-store"});
  r.headers.push_back({"Content-Disposition",
                       absl::StrCat("inline; filename=\"", sweep_id, ".", format_name, "\"")});
  return r;
}

HttpResponse ResultsSite::Figure(const std::string& sweep_id, const std::string& file,
                                 const Query& query) {
  if (auto bad = UnknownParameter(query, {})) return *bad;
  absl::StatusOr<v1::Sweep> sweep = core_->GetSweep(sweep_id);
  if (!sweep.ok()) return Error(sweep.status());
#ifdef LAYERFLOW_HAVE_PLOT
  const size_t dot = file.rfind('.');
  const std::string stem = file.substr(0, dot);
  const std::string ext = dot == std::string::npos ? "" : file.substr(dot + 1);
  if (ext != "png" && ext != "svg" && ext != "json") {
    return Error(404, absl::StrCat("figure '", file,
                                   "': expected NAME.png, NAME.svg or "
                                   "NAME.json"));
  }
  absl::StatusOr<std::shared_ptr<SweepData>> data = Data(*sweep);
  if (!data.ok()) return Error(data.status());
  SweepData& d = **data;
  if (!d.figures.ok()) {
    return Error(404, absl::StrCat("figure '", stem, "' of sweep ", sweep_id, ": none drawn (",
                                   d.figures.status().message(), ")"));
  }
  const report::NamedFigure* figure = nullptr;
  std::vector<std::string> names;
  for (const report::NamedFigure& f : *d.figures) {
    names.push_back(f.name);
    if (f.name == stem) figure = &f;
  }
  if (figure == nullptr) {
    return Error(404, absl::StrCat("sweep ", sweep_id, " has no figure '", stem,
                                   "' (its figures: ", absl::StrJoin(names, ", "), ")"));
  }
  HttpResponse r;
  r.headers.push_back({"Cache-Control", "no-cache"});
  if (ext == "json") {
    r.content_type = kJson;
    r.body = plot::FigureJson(figure->figure);
    return r;
  }
  r.content_type = ext == "png" ? "image/png" : "image/svg+xml";
  {
    absl::MutexLock lock(&d.mu);
    if (auto it = d.images.find(file); it != d.images.end()) {
      r.body = it->second;
      return r;
    }
  }
  absl::StatusOr<std::string> image = plot::RenderFigure(
      figure->figure, ext == "png" ? plot::ImageFormat::kPng : plot::ImageFormat::kSvg);
  if (!image.ok()) return Error(image.status());
  {
    absl::MutexLock lock(&d.mu);
    d.images[file] = *image;
  }
  r.body = std::move(*image);
  return r;
#else
  (void)file;
  return Error(404, "no figures: this coordinator was built without cairo (libcairo2-dev)");
#endif
}

HttpResponse ResultsSite::SweepsJson(const HttpRequest& request, const Query& query) {
  if (auto bad = UnknownParameter(query, {})) return *bad;
  absl::StatusOr<std::vector<v1::Sweep>> sweeps = ListSweeps(request);
  if (!sweeps.ok()) return Error(sweeps.status());
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const v1::Sweep& s : *sweeps) out.push_back(SweepToJson(s));
  return JsonResponse(out);
}

HttpResponse ResultsSite::SweepJson(const std::string& sweep_id, const Query& query) {
  if (auto bad = UnknownParameter(query, {})) return *bad;
  absl::StatusOr<v1::Sweep> sweep = core_->GetSweep(sweep_id);
  if (!sweep.ok()) return Error(sweep.status());
  absl::StatusOr<std::vector<v1::Job>> jobs = ListJobs(sweep_id);
  if (!jobs.ok()) return Error(jobs.status());
  nlohmann::ordered_json out = SweepToJson(*sweep);
  out["jobs"] = nlohmann::ordered_json::array();
  for (const v1::Job& j : *jobs) out["jobs"].push_back(JobToJson(j));
  return JsonResponse(out);
}

}  // namespace layerflow::server::web

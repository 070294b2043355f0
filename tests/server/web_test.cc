// The results page's handlers (server/web) over a real CoordinatorCore and
// SQLite store, with chunks whose means and stds are worked out by hand,
// and its civetweb listener on loopback.
#include "server/web/results_site.h"

#include <arpa/inet.h>
#include <cairo.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "report/figures/figures.h"
#include "report/output.h"
#include "report/plot/plot.h"
#include "server/web/http_server.h"
#include "server/web/page_auth.h"
#include "server/auth/authorizer.h"
#include "server/auth/token_store.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server::web {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::CoreOnSqlite;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// intertoken_cos per layer of every job (pythia-tiny and mamba-tiny have 2
// blocks: layers 0..3, 3 the final norm): the mean over the chunk's 2
// prompts, whose std is 0.25 (sum_sq = 2 (m^2 + 1/16)); all exact in binary.
constexpr double kMeans[] = {0.25, 0.5, 0.75, 0.5};
constexpr double kStd = 0.25;

class WebTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LF_ASSERT_OK_AND_ASSIGN(
        core_, CoreOnSqlite(dir_.File("lf.db"), CoreOptions(), [this] { return now_.load(); }));
    site_ = std::make_unique<ResultsSite>(core_.get());
    auto worker = core_->RegisterWorker(v1::RegisterWorkerRequest());
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_id_ = worker->worker_id();
  }

  // A sweep of one job per model, 2 prompts in one chunk each.
  std::string Submit(const std::string& name, const std::vector<std::string>& models) {
    v1::SweepSpec spec;
    spec.set_name(name);
    for (const std::string& m : models) spec.add_models(m);
    spec.set_num_prompts(2);
    spec.set_prompts_per_chunk(2);
    auto submitted = core_->SubmitSweep(spec);
    EXPECT_TRUE(submitted.ok()) << submitted.status();
    now_ += 1000;
    return submitted.ok() ? submitted->sweep_id() : "";
  }

  // Leases the next job and commits its one chunk (kMeans, kStd); with
  // `error`, fails it instead. Returns the job id.
  std::string RunNextJob(const std::string& error = "") {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_id_);
    auto lease = core_->LeaseJob(request);
    EXPECT_TRUE(lease.ok() && lease->leased());
    if (!lease.ok() || !lease->leased()) return "";
    if (!error.empty()) {
      v1::FailJobRequest fail;
      fail.set_job_id(lease->job().job_id());
      fail.set_lease_id(lease->lease_id());
      fail.set_error(error);
      EXPECT_TRUE(core_->FailJob(fail).ok());
      return lease->job().job_id();
    }
    v1::ResultChunk chunk;
    chunk.set_job_id(lease->job().job_id());
    chunk.set_lease_id(lease->lease_id());
    chunk.set_sequence(0);
    for (int layer = 0; layer < 4; ++layer) {
      v1::MetricStat* s = chunk.add_stats();
      s->set_metric("intertoken_cos");
      s->set_layer(layer);
      s->set_sum(2 * kMeans[layer]);
      s->set_sum_sq(2 * (kMeans[layer] * kMeans[layer] + kStd * kStd));
      s->set_count(2);
    }
    EXPECT_TRUE(core_->CommitChunk(chunk).ok());
    v1::CompleteJobRequest complete;
    complete.set_job_id(lease->job().job_id());
    complete.set_lease_id(lease->lease_id());
    EXPECT_TRUE(core_->CompleteJob(complete).ok());
    return lease->job().job_id();
  }

  HttpResponse Get(const std::string& path, const std::string& query = "") {
    return site_->Handle({.method = "GET", .path = path, .query = query});
  }

  std::string Header(const HttpResponse& r, const std::string& name) {
    for (const auto& [n, v] : r.headers) {
      if (n == name) return v;
    }
    return "";
  }

  TempDir dir_;
  std::atomic<int64_t> now_{1'764'651'600'000};  // 2025-12-02 05:00:00 UTC
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<ResultsSite> site_;
  std::string worker_id_;
};

TEST_F(WebTest, SweepsPageListsEverySweepNewestFirstWithProgress) {
  HttpResponse empty = Get("/");
  EXPECT_EQ(empty.status, 200);
  EXPECT_THAT(empty.body, HasSubstr("No sweeps yet"));

  const std::string first = Submit("first", {"pythia-tiny"});
  RunNextJob();
  const std::string second = Submit("second", {"pythia-tiny", "mamba-tiny"});
  HttpResponse r = Get("/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_THAT(r.body, StartsWith("<!DOCTYPE html>"));
  EXPECT_THAT(r.body, HasSubstr("<script src=\"/layerflow.js\" defer></script>"));
  const size_t at_first = r.body.find(absl::StrCat("<a href=\"/sweeps/", first, "\">"));
  const size_t at_second = r.body.find(absl::StrCat("<a href=\"/sweeps/", second, "\">"));
  ASSERT_NE(at_first, std::string::npos);
  ASSERT_NE(at_second, std::string::npos);
  EXPECT_LT(at_second, at_first);  // newest first
  // The finished one: 1 of 1 job, 1 of 1 chunk; the new one: nothing yet.
  EXPECT_THAT(r.body, HasSubstr("data-live=\"0\""));
  EXPECT_THAT(r.body, HasSubstr("1/1 jobs done · 1/1 chunks"));
  EXPECT_THAT(r.body, HasSubstr("0/2 jobs done · 0/2 chunks"));
  EXPECT_THAT(r.body, HasSubstr("state-succeeded\" data-field=\"state\">succeeded"));
  EXPECT_THAT(r.body, HasSubstr("state-active\" data-field=\"state\">active"));
  EXPECT_THAT(r.body, HasSubstr("2025-12-02 05:00:00 UTC"));

  HttpResponse json = Get("/api/sweeps");
  EXPECT_EQ(json.content_type, "application/json");
  const nlohmann::json sweeps = nlohmann::json::parse(json.body);
  ASSERT_EQ(sweeps.size(), 2u);
  EXPECT_EQ(sweeps[0]["sweep_id"], second);
  EXPECT_EQ(sweeps[0]["state"], "active");
  EXPECT_EQ(sweeps[0]["jobs_total"], 2);
  EXPECT_EQ(sweeps[1]["state"], "succeeded");
  EXPECT_EQ(sweeps[1]["chunks_committed"], 1);
}

TEST_F(WebTest, SweepPageShowsJobsFiguresAndTables) {
  const std::string id = Submit("contrast", {"pythia-tiny", "mamba-tiny"});
  const std::string done = RunNextJob();
  HttpResponse r = Get("/sweeps/" + id);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, HasSubstr("<h1>contrast <span class=\"id\">" + id + "</span></h1>"));
  EXPECT_THAT(r.body, HasSubstr("data-live=\"1\""));  // the script refreshes it
  EXPECT_THAT(r.body, HasSubstr("1/2 jobs done · 1/2 chunks"));
  // Jobs with state and progress.
  EXPECT_THAT(r.body, HasSubstr(absl::StrCat("<tr class=\"job\" data-job-id=\"", done, "\">")));
  EXPECT_THAT(r.body, HasSubstr("<td>mamba-tiny</td>"));
  EXPECT_THAT(r.body, HasSubstr("<progress value=\"1\" max=\"1\"></progress> <span "
                                "data-field=\"chunks\">1/1</span>"));
  EXPECT_THAT(r.body, HasSubstr("<progress value=\"0\" max=\"1\"></progress> <span "
                                "data-field=\"chunks\">0/1</span>"));
  EXPECT_THAT(r.body, HasSubstr("state-queued\" data-field=\"state\">queued"));
  // The figure of intertoken_cos over depth, and its downloads.
  EXPECT_THAT(r.body, HasSubstr(absl::StrCat("<img class=\"figure-image\" src=\"/sweeps/", id,
                                             "/figures/depth_intertoken_cos.png\"")));
  EXPECT_THAT(r.body, HasSubstr(absl::StrCat("href=\"/sweeps/", id,
                                             "/results?format=csv\" download=\"", id, ".csv\"")));
  // The summary: intertoken_cos peaks at layer 2 (0.75) and ends at 0.5.
  EXPECT_THAT(r.body, HasSubstr("<td>pythia-tiny</td><td>reference</td><td>kvpr</td>"));
  EXPECT_THAT(r.body, HasSubstr("<td>2</td><td>0.7500</td><td>0.5000</td>"));
  // The per-layer table as `layerflow results` prints it.
  EXPECT_THAT(r.body, HasSubstr("0.7500 ± 0.2500"));
  EXPECT_THAT(r.body, HasSubstr("<pre id=\"results\">"));
}

TEST_F(WebTest, DownloadsAreTheBytesOfLayerflowResults) {
  const std::string id = Submit("dl", {"pythia-tiny", "mamba-tiny"});
  RunNextJob();
  RunNextJob();
  HttpResponse csv = Get("/sweeps/" + id + "/results", "format=csv");
  ASSERT_EQ(csv.status, 200) << csv.body;
  EXPECT_EQ(csv.content_type, "text/csv; charset=utf-8");
  EXPECT_EQ(Header(csv, "Content-Disposition"), "inline; filename=\"" + id + ".csv\"");
  // Hand-worked rows: mean 0.75, population std 0.25 over the 2 prompts.
  EXPECT_THAT(csv.body, StartsWith("sweep_id,job_id,model,init_scheme,seed,dataset,"));
  EXPECT_THAT(csv.body, HasSubstr(absl::StrCat(id, ",", id,
                                               "-0,pythia-tiny,reference,0,kvpr,2048,"
                                               "intertoken_cos,2,0.75,0.25,2,,,\n")));
  EXPECT_THAT(csv.body, HasSubstr(absl::StrCat(id,
                                               "-1,mamba-tiny,reference,0,kvpr,2048,"
                                               "intertoken_cos,3,0.5,0.25,2,,,\n")));
  // What `layerflow results ID --format csv` prints: FormatResultsCsv of
  // every page of QueryResults, here read with a page size of 1 row.
  std::vector<v1::ResultRow> rows;
  v1::QueryResultsRequest request;
  request.set_sweep_id(id);
  request.set_page_size(1);
  do {
    auto page = core_->QueryResults(request);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const v1::ResultRow& row : page->rows()) rows.push_back(row);
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  ASSERT_EQ(rows.size(), 8u);  // 2 jobs x 4 layers
  EXPECT_EQ(csv.body, report::FormatResultsCsv(rows));
  EXPECT_EQ(Get("/sweeps/" + id + "/results").body, csv.body);  // csv is the default

  HttpResponse json = Get("/sweeps/" + id + "/results", "format=json");
  EXPECT_EQ(json.content_type, "application/json");
  EXPECT_EQ(json.body, report::FormatResultsJson(rows));
  EXPECT_EQ(nlohmann::json::parse(json.body).size(), rows.size());

  // The filters of `layerflow results --model / --metric / --job`.
  HttpResponse mamba = Get("/sweeps/" + id + "/results", "model=mamba-tiny&metric=intertoken_cos");
  ASSERT_EQ(mamba.status, 200) << mamba.body;
  EXPECT_THAT(mamba.body, Not(HasSubstr("pythia-tiny")));
  EXPECT_EQ(std::count(mamba.body.begin(), mamba.body.end(), '\n'), 1 + 4);  // header + layers
  HttpResponse job = Get("/sweeps/" + id + "/results", "job=" + id + "-0&format=json");
  for (const auto& row : nlohmann::json::parse(job.body)) EXPECT_EQ(row["model"], "pythia-tiny");
}

cairo_status_t ReadBytes(void* closure, unsigned char* data, unsigned int length) {
  auto* bytes = static_cast<std::pair<const std::string*, size_t>*>(closure);
  if (bytes->second + length > bytes->first->size()) return CAIRO_STATUS_READ_ERROR;
  std::memcpy(data, bytes->first->data() + bytes->second, length);
  bytes->second += length;
  return CAIRO_STATUS_SUCCESS;
}

TEST_F(WebTest, FiguresAreServedAsLayerflowPlotDrawsThem) {
  const std::string id = Submit("figs", {"pythia-tiny", "mamba-tiny"});
  RunNextJob();
  RunNextJob();
  const std::string base = "/sweeps/" + id + "/figures/depth_intertoken_cos";
  HttpResponse png = Get(base + ".png");
  ASSERT_EQ(png.status, 200) << png.body;
  EXPECT_EQ(png.content_type, "image/png");
  // It decodes, to the size of a line chart.
  std::pair<const std::string*, size_t> reader{&png.body, 0};
  cairo_surface_t* image = cairo_image_surface_create_from_png_stream(ReadBytes, &reader);
  ASSERT_EQ(cairo_surface_status(image), CAIRO_STATUS_SUCCESS);
  EXPECT_GT(cairo_image_surface_get_width(image), 400);
  EXPECT_GT(cairo_image_surface_get_height(image), 300);
  cairo_surface_destroy(image);
  // The bytes `layerflow plot` writes for these rows.
  v1::QueryResultsRequest request;
  request.set_sweep_id(id);
  auto page = core_->QueryResults(request);
  ASSERT_TRUE(page.ok());
  std::vector<v1::ResultRow> rows(page->rows().begin(), page->rows().end());
  auto figures = report::BuildFigures(rows, {.sweep_id = id});
  ASSERT_TRUE(figures.ok()) << figures.status();
  ASSERT_EQ(figures->size(), 1u);
  EXPECT_TRUE(png.body == *plot::RenderFigure(figures->front().figure, plot::ImageFormat::kPng));
  EXPECT_EQ(Get(base + ".png").body, png.body);  // from the cache: the same

  HttpResponse svg = Get(base + ".svg");
  EXPECT_EQ(svg.content_type, "image/svg+xml");
  EXPECT_THAT(svg.body, StartsWith("<?xml"));
  // The sidecar: one line per model, y the hand-worked means over depth
  // l / (L+1) = l / 3.
  HttpResponse sidecar = Get(base + ".json");
  EXPECT_EQ(sidecar.content_type, "application/json");
  const nlohmann::json fig = nlohmann::json::parse(sidecar.body);
  ASSERT_EQ(fig["lines"].size(), 2u);
  EXPECT_EQ(fig["lines"][1]["label"], "mamba-tiny");
  for (int l = 0; l < 4; ++l) {
    EXPECT_DOUBLE_EQ(fig["lines"][0]["y"][l].get<double>(), kMeans[l]);
    EXPECT_DOUBLE_EQ(fig["lines"][0]["std"][l].get<double>(), kStd);
    EXPECT_DOUBLE_EQ(fig["lines"][0]["x"][l].get<double>(), l / 3.0);
  }
}

// Regression: the page's rows are cached per sweep; a chunk committed
// after a first look must show on the next one.
TEST_F(WebTest, PageFollowsTheSweepAfterItChanges) {
  const std::string id = Submit("live", {"pythia-tiny", "mamba-tiny"});
  HttpResponse before = Get("/sweeps/" + id);
  EXPECT_THAT(before.body, HasSubstr("No figures: nothing to plot in sweep " + id));
  EXPECT_THAT(before.body, HasSubstr("No results yet."));
  EXPECT_EQ(Get("/sweeps/" + id + "/figures/depth_intertoken_cos.png").status, 404);
  RunNextJob();
  HttpResponse after = Get("/sweeps/" + id);
  EXPECT_THAT(after.body, HasSubstr("depth_intertoken_cos.png"));
  EXPECT_THAT(after.body, Not(HasSubstr("<td>mamba-tiny</td><td>reference</td><td>kvpr</td>")));
  RunNextJob();
  HttpResponse last = Get("/sweeps/" + id);
  EXPECT_THAT(last.body, HasSubstr("<td>mamba-tiny</td><td>reference</td><td>kvpr</td>"));
  const nlohmann::json fig =
      nlohmann::json::parse(Get("/sweeps/" + id + "/figures/depth_intertoken_cos.json").body);
  EXPECT_EQ(fig["lines"].size(), 2u);
}

TEST_F(WebTest, TextFromTheStoreIsEscaped) {
  const std::string id = Submit("esc", {"pythia-tiny"});
  RunNextJob("<img src=x onerror=alert(1)> & \"quotes\"");
  HttpResponse r = Get("/sweeps/" + id);
  EXPECT_THAT(r.body, HasSubstr("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;"));
  EXPECT_THAT(r.body, Not(HasSubstr("<img src=x")));
  EXPECT_THAT(r.body, HasSubstr("state-failed\" data-field=\"state\">failed"));
  const nlohmann::json api = nlohmann::json::parse(Get("/api/sweeps/" + id).body);
  EXPECT_EQ(api["jobs"][0]["error"], "<img src=x onerror=alert(1)> & \"quotes\"");
  EXPECT_EQ(api["jobs"][0]["attempts"], 1);
}

TEST_F(WebTest, ErrorsNameWhatIsWrong) {
  const std::string id = Submit("err", {"pythia-tiny"});
  RunNextJob();
  auto expect = [&](const std::string& path, const std::string& query, int status,
                    const std::string& message) {
    HttpResponse r = Get(path, query);
    EXPECT_EQ(r.status, status) << path << "?" << query << ": " << r.body;
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
    EXPECT_THAT(r.body, HasSubstr(message)) << path << "?" << query;
  };
  for (const std::string path :
       {"/sweeps/sw-nope", "/sweeps/sw-nope/results",
        "/sweeps/sw-nope/figures/depth_intertoken_cos.png", "/api/sweeps/sw-nope"}) {
    expect(path, "", 404, "unknown sweep 'sw-nope'");
  }
  expect("/sweeps/" + id + "/figures/depth_adjacent_cos.png", "", 404,
         absl::StrCat("sweep ", id,
                      " has no figure 'depth_adjacent_cos' (its figures: "
                      "depth_intertoken_cos)"));
  expect("/sweeps/" + id + "/figures/depth_intertoken_cos.gif", "", 404,
         "expected NAME.png, NAME.svg or NAME.json");
  expect("/nowhere", "", 404, "no page at '/nowhere'");
  expect("/sweeps/" + id + "/results", "format=xml", 400,
         "query parameter 'format': 'xml' is not csv or json");
  expect("/sweeps/" + id + "/results", "formt=csv", 400,
         "query parameter 'formt': unknown here (expected format, job, metric, model)");
  expect("/sweeps/" + id, "x=1", 400, "query parameter 'x': unknown here (expected none)");
  expect("/sweeps/" + id + "/results", "model=a&model=b", 400,
         "query parameter 'model': given more than once");
  expect("/sweeps/" + id + "/results", "model=%zz", 400, "query: malformed escape '%zz'");
  expect("/sweeps/" + id + "/results", "job=" + std::string(200, 'j'), 400, "job_id");

  HttpResponse post = site_->Handle({.method = "POST", .path = "/"});
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(Header(post, "Allow"), "GET, HEAD");
  HttpResponse head = site_->Handle({.method = "HEAD", .path = "/sweeps/" + id});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.content_type, "text/html; charset=utf-8");
  EXPECT_TRUE(head.body.empty());
}

// Issue 14: with --auth-db the gRPC port checked every caller, but the
// results page on --http showed every sweep, its rows and figures to anyone
// who reached the port. GatePage puts the page behind the same tokens.
class PageAuthTest : public WebTest {
 protected:
  void SetUp() override {
    WebTest::SetUp();
    auto tokens = auth::OpenSqliteTokenStore(dir_.File("auth.db"));
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = tokens->get();
    alice_ = Token("alice", auth::Role::kUser);
    admin_ = Token("root", auth::Role::kAdmin);
    worker_ = Token("gpu-host", auth::Role::kWorker);
    authorizer_ = std::make_unique<auth::Authorizer>(*std::move(tokens), auth::AuthorizerOptions());
    mine_ = Submit("mine", {"pythia-tiny"});
    theirs_ = Submit("theirs", {"pythia-tiny"});
    ASSERT_TRUE(tokens_->ClaimOwner(auth::OwnedKind::kSweep, mine_, "alice").ok());
    ASSERT_TRUE(tokens_->ClaimOwner(auth::OwnedKind::kSweep, theirs_, "bob").ok());
  }

  std::string Token(const std::string& user, auth::Role role) {
    auto made = tokens_->CreateToken(user, role);
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? made->token : "";
  }

  // The coordinator's order: the gate, then the site.
  HttpResponse GetAs(const std::optional<std::string>& authorization, const std::string& path,
                     const std::string& query = "") {
    HttpRequest request{.method = "GET", .path = path, .query = query};
    request.authorization = authorization;
    if (std::optional<HttpResponse> refused = GatePage(*authorizer_, &request)) return *refused;
    return site_->Handle(request);
  }

  auth::TokenStore* tokens_ = nullptr;  // owned by authorizer_
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::string alice_, admin_, worker_, mine_, theirs_;
};

TEST_F(PageAuthTest, NoTokenIsAskedForOne) {
  HttpResponse r = GetAs(std::nullopt, "/");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Header(r, "WWW-Authenticate"), "Basic realm=\"layerflow\", charset=\"UTF-8\"");
  EXPECT_THAT(r.body, HasSubstr("results page: GetSweep: "));
  EXPECT_THAT(r.body, HasSubstr("send 'Authorization: Bearer <token>'"));
  EXPECT_THAT(r.body, Not(HasSubstr(mine_)));

  HttpResponse wrong = GetAs("Bearer lf_0000000000000000_nope", "/api/sweeps");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_THAT(wrong.body, Not(HasSubstr("nope")));  // the secret is never echoed
  HttpResponse garbled = GetAs("Basic %%%", "/");
  EXPECT_EQ(garbled.status, 401);
  EXPECT_THAT(garbled.body, HasSubstr("not 'Bearer <token>'"));
}

TEST_F(PageAuthTest, AWorkerTokenMayNotReadResults) {
  HttpResponse r = GetAs("Bearer " + worker_, "/");
  EXPECT_EQ(r.status, 403);
  EXPECT_THAT(r.body, HasSubstr("GetSweep needs role user or admin"));
  EXPECT_THAT(r.body, HasSubstr("has role worker"));
}

TEST_F(PageAuthTest, AUserSeesOnlyTheirOwnSweeps) {
  for (const std::string& header :
       {"Bearer " + alice_, "Basic " + absl::Base64Escape("alice:" + alice_)}) {
    SCOPED_TRACE(header.substr(0, 6));
    HttpResponse list = GetAs(header, "/");
    EXPECT_EQ(list.status, 200);
    EXPECT_THAT(list.body, HasSubstr(absl::StrCat("<a href=\"/sweeps/", mine_, "\">")));
    EXPECT_THAT(list.body, Not(HasSubstr(theirs_)));
    const nlohmann::json json = nlohmann::json::parse(GetAs(header, "/api/sweeps").body);
    ASSERT_EQ(json.size(), 1u);
    EXPECT_EQ(json[0]["sweep_id"], mine_);
    EXPECT_EQ(GetAs(header, "/sweeps/" + mine_).status, 200);
    for (const std::string& path :
         {"/sweeps/" + theirs_, "/sweeps/" + theirs_ + "/results", "/api/sweeps/" + theirs_,
          "/sweeps/" + theirs_ + "/figures/x.png", std::string("/sweeps/sw-none")}) {
      HttpResponse other = GetAs(header, path, "format=csv");
      EXPECT_EQ(other.status, 403) << path;
      EXPECT_THAT(other.body, HasSubstr("is not a sweep of 'alice'")) << path;
    }
  }
}

TEST_F(PageAuthTest, AnAdminSeesEverySweep) {
  HttpResponse list = GetAs("Bearer " + admin_, "/");
  EXPECT_EQ(list.status, 200);
  EXPECT_THAT(list.body, HasSubstr(mine_));
  EXPECT_THAT(list.body, HasSubstr(theirs_));
  EXPECT_EQ(GetAs("Bearer " + admin_, "/sweeps/" + theirs_).status, 200);
}

TEST_F(WebTest, WithAuthenticationOffThePagePassesUnchanged) {
  const std::string id = Submit("open", {"pythia-tiny"});
  auth::Authorizer off;
  HttpRequest request{.method = "GET", .path = "/sweeps/" + id};
  EXPECT_EQ(GatePage(off, &request), std::nullopt);
  EXPECT_FALSE(request.may_see_sweep);
  EXPECT_EQ(site_->Handle(request).status, 200);
}

TEST(SweepOfPathTest, NamesTheSweepOfEachPage) {
  EXPECT_EQ(SweepOfPath("/sweeps/sw-1"), "sw-1");
  EXPECT_EQ(SweepOfPath("/sweeps/sw-1/results"), "sw-1");
  EXPECT_EQ(SweepOfPath("/sweeps/sw-1/figures/a.png"), "sw-1");
  EXPECT_EQ(SweepOfPath("/api/sweeps/sw-2"), "sw-2");
  EXPECT_EQ(SweepOfPath("/"), "");
  EXPECT_EQ(SweepOfPath("/sweeps"), "");
  EXPECT_EQ(SweepOfPath("/api/sweeps"), "");
  EXPECT_EQ(SweepOfPath("/layerflow.js"), "");
}

TEST(ParseQueryTest, DecodesAndRejects) {
  auto q = ParseQuery("a=1&b=x+y%2Fz&&empty=&flag");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->size(), 4u);
  EXPECT_EQ(q->at("a"), "1");
  EXPECT_EQ(q->at("b"), "x y/z");
  EXPECT_EQ(q->at("empty"), "");
  EXPECT_EQ(q->at("flag"), "");
  EXPECT_EQ(ParseQuery("=1").status().message(), "query: a parameter without a name in '=1'");
  EXPECT_EQ(ParseQuery("a=%4").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseQuery("a=%").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HtmlEscape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
}

TEST(HttpBindAddressTest, PortAloneIsLoopback) {
  EXPECT_EQ(*HttpBindAddress("8080"), "127.0.0.1:8080");
  EXPECT_EQ(*HttpBindAddress("0.0.0.0:80"), "0.0.0.0:80");
  EXPECT_THAT(HttpBindAddress("host:").status().message(),
              HasSubstr("http address 'host:': expected HOST:PORT or PORT"));
  EXPECT_THAT(HttpBindAddress(":8080").status().message(), HasSubstr("the host is empty"));
  EXPECT_FALSE(HttpBindAddress("127.0.0.1:70000").ok());
  EXPECT_FALSE(HttpBindAddress("127.0.0.1:-1").ok());
}

// A plain HTTP/1.0 GET over loopback; the whole response.
std::string Fetch(int port, const std::string& target, const std::string& headers = "") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  const std::string request =
      "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(HttpServerTest, ServesTheHandlerOnLoopback) {
  std::string seen_path, seen_query;
  std::optional<std::string> seen_authorization;
  auto server = HttpServer::Start("127.0.0.1:0", [&](const HttpRequest& r) {
    seen_path = r.path;
    seen_authorization = r.authorization;
    seen_query = r.query;
    HttpResponse response;
    response.status = r.path == "/missing" ? 404 : 200;
    response.content_type = "text/csv; charset=utf-8";
    response.body = "a,b\n1,2\n";
    response.headers.push_back({"Content-Disposition", "inline; filename=\"x.csv\""});
    return response;
  });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string ok = Fetch((*server)->port(), "/sweeps/sw%2D1/results?format=csv&m=a%2Bb");
  EXPECT_THAT(ok, StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Type: text/csv; charset=utf-8\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Length: 8\r\n"));
  EXPECT_THAT(ok, HasSubstr("X-Content-Type-Options: nosniff\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Disposition: inline; filename=\"x.csv\"\r\n"));
  EXPECT_THAT(ok, ::testing::EndsWith("\r\n\r\na,b\n1,2\n"));
  EXPECT_EQ(seen_path, "/sweeps/sw-1/results");  // decoded by civetweb
  EXPECT_EQ(seen_query, "format=csv&m=a%2Bb");   // left to ParseQuery
  EXPECT_EQ(seen_authorization, std::nullopt);
  EXPECT_THAT(Fetch((*server)->port(), "/missing", "Authorization: Bearer lf_1_x\r\n"),
              StartsWith("HTTP/1.0 404 Not Found\r\n"));
  EXPECT_EQ(seen_authorization, "Bearer lf_1_x");  // handed to the gate (page_auth.h)

  // A port in use: UNAVAILABLE naming the address.
  const std::string taken = absl::StrCat("127.0.0.1:", (*server)->port());
  auto second = HttpServer::Start(taken, [](const HttpRequest&) { return HttpResponse(); });
  EXPECT_THAT(second.status(), StatusIs(absl::StatusCode::kUnavailable, taken));
}

}  // namespace
}  // namespace layerflow::server::web

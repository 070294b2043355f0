#include "server/core/result_pages.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/api_limits.h"
#include "common/status_macros.h"
#include "server/core/request_limits.h"
#include "server/derived/derived_rows.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;

constexpr absl::string_view kResultsToken = "QueryResults";

ResultKey KeyOf(const v1::ResultRow& row) {
  return ResultKey{row.metric(), row.layer(), row.has_layer_b() ? row.layer_b() : -1,
                   row.has_head() ? row.head() : -1, row.has_position() ? row.position() : -1};
}

// Where the stream stands, as a token's PageCursor.key:
//   "A|layer|layer_b|head|position|metric"  after that stored row of the job
//                                          (its derived rows still to come)
//   "B"  the job's stored rows are done; cursor.skip of its derived rows sent
//   "W"  the job is done, derived rows included
//   ""   at the start
std::string EncodeKey(const ResultKey& k) {
  return absl::StrCat("A|", k.layer, "|", k.layer_b, "|", k.head, "|", k.position, "|", k.metric);
}
std::optional<ResultKey> DecodeKey(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('|', 5));
  ResultKey k;
  if (parts.size() != 6 || parts[0] != "A" || !absl::SimpleAtoi(parts[1], &k.layer) ||
      !absl::SimpleAtoi(parts[2], &k.layer_b) || !absl::SimpleAtoi(parts[3], &k.head) ||
      !absl::SimpleAtoi(parts[4], &k.position)) {
    return std::nullopt;
  }
  k.metric = std::string(parts[5]);
  return k;
}

// The output rows in order, from a cursor on.
class ResultStream {
 public:
  ResultStream(Store& store, ResultFilter filter,
               std::optional<derived::DerivedMetricName> derived_metric, bool with_derived,
               int64_t batch)
      : store_(store),
        filter_(std::move(filter)),
        only_(std::move(derived_metric)),
        with_derived_(with_derived),
        batch_(batch) {}

  absl::Status Resume(const PageCursor& cursor) {
    if (cursor.after_job_id.empty()) {
      if (!cursor.key.empty() || cursor.skip != 0) return Bad();
      return absl::OkStatus();
    }
    job_ = cursor.after_job_id;
    if (cursor.key == "B" || cursor.key == "W") {
      after_key_.reset();  // the job's stored rows are behind
      derived_done_ = true;
      if (cursor.key == "B") {
        LF_ASSIGN_OR_RETURN(derived_, DerivedRowsOf(job_));
        if (cursor.skip > static_cast<int64_t>(derived_.size())) return Bad();
        derived_pos_ = static_cast<size_t>(cursor.skip);
      }
      return absl::OkStatus();
    }
    std::optional<ResultKey> key = DecodeKey(cursor.key);
    if (!key.has_value() || cursor.skip != 0) return Bad();
    after_key_ = *std::move(key);
    derived_done_ = !with_derived_;
    return absl::OkStatus();
  }

  // Where the next Next() starts.
  PageCursor Position() const {
    if (job_.empty()) return PageCursor{};
    if (derived_pos_ < derived_.size()) {
      return PageCursor{job_, static_cast<int64_t>(derived_pos_), "B"};
    }
    if (!after_key_.has_value()) return PageCursor{job_, 0, "W"};
    // After the job's last stored row walked (its derived rows, if any, due).
    return PageCursor{job_, 0, EncodeKey(*after_key_)};
  }

  // The next output row; false at the end.
  absl::StatusOr<bool> Next(v1::ResultRow* out) {
    while (true) {
      if (derived_pos_ < derived_.size()) {
        *out = std::move(derived_[derived_pos_++]);
        if (derived_pos_ == derived_.size()) {
          derived_.clear();
          derived_pos_ = 0;
        }
        return true;
      }
      if (buffer_pos_ == buffer_.size() && !exhausted_) {
        LF_RETURN_IF_ERROR(Refill());
      }
      const bool have_row = buffer_pos_ < buffer_.size();
      if (!job_.empty() && !derived_done_ && (!have_row || buffer_[buffer_pos_].job_id() != job_)) {
        // The job's stored rows ended: its derived rows come next.
        derived_done_ = true;
        LF_ASSIGN_OR_RETURN(derived_, DerivedRowsOf(job_));
        derived_pos_ = 0;
        after_key_.reset();
        continue;
      }
      if (!have_row) return false;
      v1::ResultRow& row = buffer_[buffer_pos_++];
      if (row.job_id() != job_) {
        job_ = row.job_id();
        derived_done_ = !with_derived_;
      }
      after_key_ = KeyOf(row);
      if (only_.has_value()) continue;  // stored rows only drive the walk
      *out = std::move(row);
      return true;
    }
  }

 private:
  static absl::Status Bad() {
    return absl::InvalidArgumentError("page_token: not a token this coordinator made");
  }

  absl::Status Refill() {
    ResultFilter f = filter_;
    f.after_job_id = job_;
    f.after_key = after_key_;
    f.row_limit = batch_;
    LF_ASSIGN_OR_RETURN(buffer_, store_.QueryResults(f));
    buffer_pos_ = 0;
    exhausted_ = static_cast<int64_t>(buffer_.size()) < batch_;
    return absl::OkStatus();
  }

  // The derived rows of one job (derived::AppendDerivedRows over all its
  // stored rows), filtered as the request asks.
  absl::StatusOr<std::vector<v1::ResultRow>> DerivedRowsOf(const std::string& job_id) {
    if (!with_derived_) return std::vector<v1::ResultRow>();
    // A job with `layers` has a series at the listed points only: a cubic
    // over them is not the fit of the depth profile (and L, read off the
    // series' last layer, would be wrong), so it has no derived rows.
    LF_ASSIGN_OR_RETURN(const v1::Job job, store_.GetJob(job_id));
    if (job.spec().layers_size() > 0) return std::vector<v1::ResultRow>();
    ResultFilter f = filter_;
    f.job_id = job_id;
    LF_ASSIGN_OR_RETURN(std::vector<v1::ResultRow> rows, store_.QueryResults(f));
    const size_t stored = rows.size();
    std::vector<v1::ResultRow> all = derived::AppendDerivedRows(std::move(rows), only_);
    if (only_.has_value()) return all;
    return std::vector<v1::ResultRow>(std::make_move_iterator(all.begin() + stored),
                                      std::make_move_iterator(all.end()));
  }

  Store& store_;
  const ResultFilter filter_;
  const std::optional<derived::DerivedMetricName> only_;
  const bool with_derived_;
  const int64_t batch_;
  // The job of the last stored row walked and its last key (unset: the
  // whole job is behind); whether its derived rows were produced.
  std::string job_;
  std::optional<ResultKey> after_key_;
  bool derived_done_ = true;
  std::vector<v1::ResultRow> derived_;
  size_t derived_pos_ = 0;
  std::vector<v1::ResultRow> buffer_;
  size_t buffer_pos_ = 0;
  bool exhausted_ = false;
};

}  // namespace

absl::StatusOr<v1::QueryResultsResponse> QueryResultsPage(Store& store,
                                                          const v1::QueryResultsRequest& request) {
  LF_ASSIGN_OR_RETURN(const int32_t page_size,
                      EffectivePageSize(request.page_size(), limits::kDefaultResultsPageSize,
                                        limits::kMaxResultsPageSize));
  const std::vector<std::string> filters = {request.sweep_id(), request.model(), request.metric(),
                                            request.job_id()};
  LF_ASSIGN_OR_RETURN(const PageCursor cursor,
                      DecodePageToken(request.page_token(), kResultsToken, filters));
  // Derived rows (v_loc, v_glob, cubic; server/derived) are functions of a
  // job's merged series: a filter naming one reads its base metric from the
  // store and returns only that derived metric; no filter returns both.
  std::optional<derived::DerivedMetricName> derived_metric =
      derived::ParseDerivedMetric(request.metric());
  const bool with_derived = derived_metric.has_value() || request.metric().empty();
  ResultFilter filter{request.sweep_id(), request.model(),
                      derived_metric.has_value() ? derived_metric->base : request.metric(),
                      request.job_id()};
  ResultStream stream(store, std::move(filter), std::move(derived_metric), with_derived,
                      int64_t{page_size} + 1);
  LF_RETURN_IF_ERROR(stream.Resume(cursor));
  v1::QueryResultsResponse response;
  while (true) {
    const PageCursor before = stream.Position();
    v1::ResultRow row;
    LF_ASSIGN_OR_RETURN(const bool more, stream.Next(&row));
    if (!more) break;
    if (response.rows_size() == page_size) {
      // A row beyond the page exists: the token resumes at it.
      response.set_next_page_token(EncodePageToken(kResultsToken, filters, before));
      break;
    }
    *response.add_rows() = std::move(row);
  }
  return response;
}

}  // namespace layerflow::server

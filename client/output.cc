#include "client/output.h"
#include "worker/model/model_config.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace layerflow::client {
namespace {

// Terminal columns of a UTF-8 string: code points, not bytes ("±" and "·"
// are two bytes each but one column). Good enough for the text we print.
size_t DisplayWidth(absl::string_view s) {
  return std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  });
}

enum class Align { kLeft, kRight };

// Renders "a | b | c" rows under a header and a "--+--" rule, every column
// as wide as its widest cell. No trailing spaces on a left-aligned last column.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<Align>& align,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = DisplayWidth(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], DisplayWidth(row[c]));
    }
  }
  std::string out;
  auto append_row = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) out += " | ";
      const std::string pad(width[c] - DisplayWidth(row[c]), ' ');
      const bool last = c + 1 == row.size();
      if (align[c] == Align::kRight) {
        absl::StrAppend(&out, pad, row[c]);
      } else {
        absl::StrAppend(&out, row[c], last ? "" : pad);
      }
    }
    // An empty last cell would leave trailing blanks.
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += '\n';
  };
  append_row(header);
  for (size_t c = 0; c < header.size(); ++c) {
    if (c > 0) out += '+';
    // The rule spans the cell and the spaces around the " | " separator.
    out += std::string(width[c] + (c > 0 ? 1 : 0) + (c + 1 < header.size() ? 1 : 0), '-');
  }
  out += '\n';
  for (const auto& row : rows) append_row(row);
  return out;
}

// Shortest text that parses back to the same double.
std::string ShortestDouble(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string CsvField(absl::string_view field) {
  if (field.find_first_of(",\"\r\n") == absl::string_view::npos) {
    return std::string(field);
  }
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "table") return OutputFormat::kTable;
  if (lower == "csv") return OutputFormat::kCsv;
  if (lower == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format '", name, "' (expected table, csv or json)"));
}

// METHODS.md's layout: 0 = embedding, 1..L = blocks, L+1 = the final norm's
// output. The store keeps L+1 as a number; for a preset L is known, so the
// table names that row "final" as the papers do.
std::string LayerLabel(const std::string& model, int layer) {
  absl::StatusOr<worker::ModelPreset> preset = worker::FindModelPreset(model);
  if (preset.ok() && layer == preset->gpt_neox.num_hidden_layers + 1) return "final";
  return absl::StrCat(layer);
}

std::string FormatResultsTable(absl::Span<const v1::ResultRow> rows) {
  if (rows.empty()) return "(no results)\n";
  // Group by job in order of first appearance (the coordinator returns jobs
  // in sweep-expansion order, which is the order a reader expects).
  std::vector<std::string> job_order;
  std::map<std::string, std::vector<const v1::ResultRow*>> by_job;
  for (const v1::ResultRow& row : rows) {
    auto [it, inserted] = by_job.try_emplace(row.job_id());
    if (inserted) job_order.push_back(row.job_id());
    it->second.push_back(&row);
  }
  std::string out;
  for (const std::string& job_id : job_order) {
    const std::vector<const v1::ResultRow*>& job_rows = by_job[job_id];
    const v1::ResultRow& first = *job_rows.front();
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, "model ", first.model(), " · init ", first.init_scheme(),
                    " · seed ", first.seed(), " · dataset ", first.dataset(),
                    " · context ", first.context_length(), " · job ", job_id, "\n");
    std::set<std::string> metrics;
    std::map<int, std::map<std::string, std::string>> cells;  // layer -> metric -> cell
    for (const v1::ResultRow* row : job_rows) {
      metrics.insert(row->metric());
      cells[row->layer()][row->metric()] =
          absl::StrFormat("%.4f ± %.4f", row->value(), row->std());
    }
    std::vector<std::string> header = {"layer"};
    header.insert(header.end(), metrics.begin(), metrics.end());
    std::vector<std::vector<std::string>> table;
    for (const auto& [layer, by_metric] : cells) {
      std::vector<std::string> line = {LayerLabel(first.model(), layer)};
      for (const std::string& metric : metrics) {
        auto cell = by_metric.find(metric);
        line.push_back(cell == by_metric.end() ? "-" : cell->second);
      }
      table.push_back(std::move(line));
    }
    out += RenderTable(header, std::vector<Align>(header.size(), Align::kRight), table);
  }
  return out;
}

std::string FormatResultsCsv(absl::Span<const v1::ResultRow> rows) {
  std::string out =
      "sweep_id,job_id,model,init_scheme,seed,dataset,context_length,metric,"
      "layer,value,std,count\n";
  for (const v1::ResultRow& row : rows) {
    absl::StrAppend(&out, CsvField(row.sweep_id()), ",", CsvField(row.job_id()), ",",
                    CsvField(row.model()), ",", CsvField(row.init_scheme()), ",",
                    row.seed(), ",", CsvField(row.dataset()), ",",
                    row.context_length(), ",", CsvField(row.metric()), ",",
                    row.layer(), ",", ShortestDouble(row.value()), ",",
                    ShortestDouble(row.std()), ",", row.count(), "\n");
  }
  return out;
}

std::string FormatResultsJson(absl::Span<const v1::ResultRow> rows) {
  // ordered_json keeps the keys in CSV column order.
  nlohmann::ordered_json array = nlohmann::ordered_json::array();
  for (const v1::ResultRow& row : rows) {
    array.push_back({{"sweep_id", row.sweep_id()},
                     {"job_id", row.job_id()},
                     {"model", row.model()},
                     {"init_scheme", row.init_scheme()},
                     {"seed", row.seed()},
                     {"dataset", row.dataset()},
                     {"context_length", row.context_length()},
                     {"metric", row.metric()},
                     {"layer", row.layer()},
                     {"value", row.value()},
                     {"std", row.std()},
                     {"count", row.count()}});
  }
  return array.dump(2) + "\n";
}

std::string FormatResults(absl::Span<const v1::ResultRow> rows, OutputFormat format) {
  switch (format) {
    case OutputFormat::kCsv:
      return FormatResultsCsv(rows);
    case OutputFormat::kJson:
      return FormatResultsJson(rows);
    case OutputFormat::kTable:
      break;
  }
  return FormatResultsTable(rows);
}

std::string FormatProgressLine(const v1::Sweep& sweep, int bar_width) {
  const int64_t done =
      int64_t{sweep.jobs_succeeded()} + sweep.jobs_failed() + sweep.jobs_cancelled();
  double fraction = 0;
  if (sweep.chunks_total() > 0) {
    fraction = static_cast<double>(sweep.chunks_committed()) / sweep.chunks_total();
  } else if (sweep.jobs_total() > 0) {
    fraction = static_cast<double>(done) / sweep.jobs_total();
  }
  // A finished sweep shows a full bar even when cancelled or failed jobs
  // left chunks uncommitted: the bar is about "is it still working".
  if (sweep.state() != v1::SWEEP_STATE_ACTIVE &&
      sweep.state() != v1::SWEEP_STATE_UNSPECIFIED) {
    fraction = 1;
  }
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * bar_width);
  std::string bar = "[" + std::string(filled, '=');
  if (filled < bar_width) bar += '>' + std::string(bar_width - filled - 1, ' ');
  bar += ']';
  std::string line = absl::StrCat(bar, " ", done, "/", sweep.jobs_total(),
                                  " jobs done, ", sweep.jobs_running(), " running, ",
                                  sweep.jobs_failed(), " failed");
  if (sweep.jobs_cancelled() > 0) {
    absl::StrAppend(&line, ", ", sweep.jobs_cancelled(), " cancelled");
  }
  absl::StrAppend(&line, " · ", sweep.chunks_committed(), "/", sweep.chunks_total(),
                  " chunks");
  return line;
}

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

std::string SweepStateName(v1::SweepState state) {
  switch (state) {
    case v1::SWEEP_STATE_ACTIVE:
      return "active";
    case v1::SWEEP_STATE_SUCCEEDED:
      return "succeeded";
    case v1::SWEEP_STATE_FAILED:
      return "failed";
    case v1::SWEEP_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (v1::JobState state :
       {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
        v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    if (JobStateName(state) == lower) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown job state '", name,
      "' (expected queued, running, succeeded, failed or cancelled)"));
}

std::string FormatJobsTable(absl::Span<const v1::Job> jobs) {
  if (jobs.empty()) return "(no jobs)\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& job : jobs) {
    // Errors can be multi-line (LibTorch messages); one line per job keeps
    // the table readable and `jobs` greppable.
    std::string error = job.error();
    std::replace(error.begin(), error.end(), '\n', ' ');
    rows.push_back({job.job_id(), JobStateName(job.state()), job.spec().model(),
                    job.spec().init_scheme(), absl::StrCat(job.spec().seed()),
                    absl::StrCat(job.chunks_committed(), "/", job.chunks_total()),
                    absl::StrCat(job.attempts()), error});
  }
  return RenderTable(
      {"job", "state", "model", "init", "seed", "chunks", "attempts", "error"},
      {Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight,
       Align::kRight, Align::kRight, Align::kLeft},
      rows);
}

}  // namespace layerflow::client

#include "server/web/http_server.h"

#include <civetweb.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace layerflow::server::web {

absl::StatusOr<std::string> HttpBindAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  const std::string host = colon == std::string::npos ? "127.0.0.1" : address.substr(0, colon);
  const std::string port = colon == std::string::npos ? address : address.substr(colon + 1);
  int number = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &number) || number < 0 || number > 65535 ||
      !std::all_of(port.begin(), port.end(), absl::ascii_isdigit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("http address '", address, "': expected HOST:PORT or PORT (port 0-65535)"));
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("http address '", address, "': the host is empty (use 0.0.0.0:", port,
                     " for every interface, 127.0.0.1:", port, " for loopback)"));
  }
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address,
                                                              Handler handler) {
  absl::StatusOr<std::string> bind = HttpBindAddress(address);
  if (!bind.ok()) return bind.status();
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->handler_ = std::move(handler);
  // No document root: civetweb serves only what the handler answers.
  const char* options[] = {
      "listening_ports", bind->c_str(),       "num_threads", "4",    "request_timeout_ms",
      "30000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error = {&error_code, error_text, sizeof(error_text)};
  mg_init_data init = {&callbacks, server.get(), options};
  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve the results page on '", *bind, "': ",
                                               error_text[0] ? error_text : "civetweb failed"));
  }
  mg_set_request_handler(server->context_, "/", &HttpServer::OnRequest, server.get());
  mg_server_port ports[4];
  const int n = mg_get_server_ports(server->context_, 4, ports);
  if (n <= 0) {
    return absl::UnavailableError(absl::StrCat("results page on '", *bind, "' bound no port"));
  }
  server->port_ = ports[0].port;
  return server;
}

HttpServer::~HttpServer() {
  if (context_ != nullptr) mg_stop(context_);
}

int HttpServer::OnRequest(::mg_connection* connection, void* self) {
  const mg_request_info* info = mg_get_request_info(connection);
  HttpRequest request;
  request.method = info->request_method != nullptr ? info->request_method : "";
  request.path = info->local_uri != nullptr ? info->local_uri : "";
  request.query = info->query_string != nullptr ? info->query_string : "";
  if (const char* authorization = mg_get_header(connection, "Authorization")) {
    request.authorization = authorization;
  }
  HttpResponse response;
  try {
    response = static_cast<HttpServer*>(self)->handler_(request);
  } catch (const std::exception& e) {
    // Nothing below should throw; if it does, answer instead of crashing.
    response.status = 500;
    response.content_type = "text/plain; charset=utf-8";
    response.body = absl::StrCat("internal error: ", e.what(), "\n");
  }
  mg_response_header_start(connection, response.status);
  mg_response_header_add(connection, "Content-Type", response.content_type.c_str(), -1);
  const std::string length = absl::StrCat(response.body.size());
  mg_response_header_add(connection, "Content-Length", length.c_str(), -1);
  mg_response_header_add(connection, "X-Content-Type-Options", "nosniff", -1);
  for (const auto& [name, value] : response.headers) {
    mg_response_header_add(connection, name.c_str(), value.c_str(), -1);
  }
  mg_response_header_send(connection);
  if (request.method != "HEAD" && !response.body.empty()) {
    mg_write(connection, response.body.data(), response.body.size());
  }
  return response.status;  // handled (a status code, not 0)
}

}  // namespace layerflow::server::web

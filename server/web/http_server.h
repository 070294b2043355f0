// The results page's HTTP listener: civetweb (the library prometheus-cpp's
// exposer already brings) in front of a handler such as ResultsSite::Handle.
#ifndef LAYERFLOW_SERVER_WEB_HTTP_SERVER_H_
#define LAYERFLOW_SERVER_WEB_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/web/results_site.h"

struct mg_context;
struct mg_connection;

namespace layerflow::server::web {

// "host:port" as given; a bare "port" means 127.0.0.1:port (loopback, as
// for --metrics). INVALID_ARGUMENT for an empty or non-numeric port.
absl::StatusOr<std::string> HttpBindAddress(const std::string& address);

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Serves `handler` on `address` (HttpBindAddress; port 0 picks a free
  // one) from a few threads. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address,
                                                           Handler handler);
  ~HttpServer();  // stops: waits for the requests in progress

  int port() const { return port_; }

 private:
  HttpServer() = default;
  static int OnRequest(::mg_connection* connection, void* self);

  Handler handler_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace layerflow::server::web

#endif  // LAYERFLOW_SERVER_WEB_HTTP_SERVER_H_

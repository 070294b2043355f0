#include "common/channel.h"

#include <grpcpp/support/client_interceptor.h>

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace layerflow {
namespace {

namespace gx = ::grpc::experimental;

class TokenInterceptor final : public gx::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            gx::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;  // the factory's, which the channel keeps
};

class TokenInterceptorFactory final : public gx::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token)
      : value_(absl::StrCat("Bearer ", token)) {}
  gx::Interceptor* CreateClientInterceptor(gx::ClientRpcInfo* /*info*/) override {
    return new TokenInterceptor(&value_);
  }

 private:
  const std::string value_;
};

absl::StatusOr<std::string> ReadFile(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read '", path, "'"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (bytes.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", path, "' is empty"));
  }
  return bytes.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeCoordinatorChannel(
    const std::string& address, const ChannelSecurity& security,
    const grpc::ChannelArguments& args) {
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert / --tls-key: give both (a client certificate) or neither");
  }
  if (!security.tls_cert_file.empty() && security.tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert: a client certificate needs TLS (--tls-ca, the coordinator's CA)");
  }
  if (security.token.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("--token: contains a line break");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (security.tls_ca_file.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    LF_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile("--tls-ca", security.tls_ca_file));
    if (!security.tls_cert_file.empty()) {
      LF_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile("--tls-cert", security.tls_cert_file));
      LF_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile("--tls-key", security.tls_key_file));
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments channel_args = args;
  if (security.token.empty()) {
    return grpc::CreateCustomChannel(address, credentials, channel_args);
  }
  std::vector<std::unique_ptr<gx::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(security.token));
  return gx::CreateCustomChannelWithInterceptors(address, credentials, channel_args,
                                                 std::move(interceptors));
}

}  // namespace layerflow

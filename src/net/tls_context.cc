#include "net/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace parley::net {

namespace {

Error tls_error(const std::string& what, const boost::system::error_code& ec) {
  return {ErrorKind::kBadInput, "tls_config", what + ": " + ec.message()};
}

}  // namespace

Result<std::shared_ptr<asio::ssl::context>> TlsContexts::make(const TlsConfig& config) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  boost::system::error_code ec;
  // TLS 1.0 and 1.1 are deprecated (RFC 8996): 1.2 at least, 1.3 preferred by OpenSSL.
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression |
                       asio::ssl::context::single_dh_use | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION,
                   ec);
  if (ec) return tls_error("cannot set TLS options", ec);
  // Idle connections give OpenSSL's record buffers back (tens of KiB each).
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
  ctx->use_certificate_chain_file(config.cert_file, ec);
  if (ec) return tls_error("cannot load the TLS certificate " + config.cert_file, ec);
  ctx->use_private_key_file(config.key_file, asio::ssl::context::pem, ec);
  if (ec) return tls_error("cannot load the TLS key " + config.key_file, ec);
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return Error{ErrorKind::kBadInput, "tls_config",
                 "the TLS key " + config.key_file + " does not match the certificate " + config.cert_file};
  }
  return ctx;
}

Result<std::unique_ptr<TlsContexts>> TlsContexts::load(const TlsConfig& config) {
  auto ctx = make(config);
  if (!ctx) return ctx.error();
  std::unique_ptr<TlsContexts> out(new TlsContexts(config));
  out->current_ = std::move(*ctx);
  return out;
}

std::shared_ptr<asio::ssl::context> TlsContexts::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

Status TlsContexts::reload() {
  auto ctx = make(config_);
  if (!ctx) return ctx.error();
  std::lock_guard lock(mu_);
  current_ = std::move(*ctx);
  return Ok{};
}

}  // namespace parley::net

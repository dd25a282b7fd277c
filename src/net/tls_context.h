// TlsContexts: the server's TLS settings (OpenSSL through asio::ssl), the
// certificate and key of --tls-cert / --tls-key, TLS 1.2 and 1.3 only.
// reload() swaps in a freshly read pair: handshakes started afterwards use
// it, connections already up keep theirs (each SSL holds a reference to the
// context it was made from). A pair that does not load leaves the current
// one in place. Any thread may call current() and reload().
#pragma once

#include <memory>
#include <mutex>

#include "common/config.h"
#include "common/error.h"
#include "net/beast_tls.h"

namespace parley::net {

class TlsContexts {
 public:
  // Reads the pair; an unreadable file, a bad PEM or a key that does not
  // match the certificate is an error saying which.
  static Result<std::unique_ptr<TlsContexts>> load(const TlsConfig& config);

  std::shared_ptr<asio::ssl::context> current() const;
  // Reads the files again; on success new handshakes use them.
  Status reload();

 private:
  explicit TlsContexts(TlsConfig config) : config_(std::move(config)) {}
  static Result<std::shared_ptr<asio::ssl::context>> make(const TlsConfig& config);

  const TlsConfig config_;
  mutable std::mutex mu_;
  std::shared_ptr<asio::ssl::context> current_;
};

}  // namespace parley::net

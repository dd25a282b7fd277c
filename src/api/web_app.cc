#include "api/web_app.h"

#include <string>
#include <string_view>

#include "api/web_assets.h"

namespace parley {

namespace {

constexpr std::string_view kPrefix = "/app/";

// No inline script or style anywhere: everything comes from our own files.
// 'self' in connect-src also covers ws:/wss: of the same host (CSP Level 3).
// media-src and blob: are for call streams; data: images are the favicon.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

void add_security_headers(HttpResponse& r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(kContentSecurityPolicy));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Cross-Origin-Opener-Policy", "same-origin");
  // The app asks for camera and microphone (calls) only from itself.
  r.headers.emplace_back("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()");
}

HttpResponse redirect(std::string location) {
  HttpResponse r;
  r.status = 302;
  r.content_type = "text/plain; charset=utf-8";
  r.body = "See " + location;
  r.headers.emplace_back("Location", std::move(location));
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

HttpResponse not_built() {
  HttpResponse r;
  r.status = 404;
  r.content_type = "text/plain; charset=utf-8";
  r.body = "The web app is not built into this binary (Node.js and npm were missing at build time).\n";
  add_security_headers(r);
  return r;
}

const WebAsset* find_asset(std::string_view relative) {
  const WebAsset* table = web_assets();
  for (size_t i = 0; i < web_asset_count(); ++i)
    if (table[i].path == relative) return &table[i];
  return nullptr;
}

bool accepts_html(const std::string& accept) { return accept.find("text/html") != std::string::npos; }

}  // namespace

std::optional<HttpResponse> serve_web_app(const HttpRequest& req) {
  const bool get = req.method == "GET" || req.method == "HEAD";
  if (!get) return std::nullopt;
  // A browser typing the server's address lands in the app; curl and load
  // balancers (no text/html in Accept) still get the plain "running" line.
  if (req.path == "/" && accepts_html(req.accept)) return redirect(std::string(kPrefix));
  if (req.path == "/app") return redirect(std::string(kPrefix));
  if (req.path.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  if (web_asset_count() == 0) return not_built();

  std::string_view relative = std::string_view(req.path).substr(kPrefix.size());
  if (relative.empty()) relative = "index.html";
  const WebAsset* asset = find_asset(relative);
  // The app has one page and keeps its state in the URL's fragment, so an
  // unknown path is a missing file, not a client-side route.
  if (!asset) {
    HttpResponse r;
    r.status = 404;
    r.content_type = "text/plain; charset=utf-8";
    r.body = "Not found\n";
    add_security_headers(r);
    return r;
  }
  HttpResponse r;
  r.content_type = std::string(asset->content_type);
  // Also for HEAD: the network layer drops the body and keeps its length.
  r.body = std::string(asset->body);
  add_security_headers(r);
  // Hashed names never change content: cache for a year. index.html names
  // the current hashes, so it is revalidated every time.
  r.headers.emplace_back("Cache-Control", asset->immutable ? "public, max-age=31536000, immutable" : "no-cache");
  return r;
}

}  // namespace parley

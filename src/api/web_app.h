// Serves the browser app embedded in the binary (web_assets.h) at /app/, and
// sends browsers that ask for GET / as HTML there. Pure function of the
// request, no state: any thread may call it.
#pragma once

#include <optional>

#include "api/http.h"

namespace parley {

// The answer for a request the web app owns (/app, /app/…, and GET / from a
// browser that accepts text/html), or nullopt for everything else.
std::optional<HttpResponse> serve_web_app(const HttpRequest& request);

}  // namespace parley

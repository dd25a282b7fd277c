// The browser app's built files (web/dist), compiled into the binary by
// web/CMakeLists.txt so `parley serve` needs nothing beside itself. Read-only
// constant data: any thread may read it; nothing is owned or freed.
#pragma once

#include <cstddef>
#include <string_view>

namespace parley {

struct WebAsset {
  std::string_view path;          // relative to the app's root: "index.html", "assets/app-3F2A9C1D.js"
  std::string_view content_type;  // from the file's extension
  std::string_view body;
  bool immutable;                 // its name carries a hash of its content
};

// The table generated at build time; empty (count 0) when the build had no Node.js.
const WebAsset* web_assets();
size_t web_asset_count();

}  // namespace parley

// Which malloc the process runs on: jemalloc, linked into every Parley binary
// unless the build disables it (PARLEY_JEMALLOC=OFF, or a sanitizer build,
// whose runtime must own malloc). Pure queries; any thread may call them.
#pragma once

#include <cstdint>
#include <string>

namespace parley {

// "jemalloc 5.3.0-…", or "system" when the build does not link jemalloc.
std::string allocator_name();

// Bytes this thread has allocated so far, as jemalloc counts them; -1 when
// the build does not link jemalloc. Tests use it to prove that malloc really
// goes to jemalloc (a linked but shadowed allocator would count nothing).
int64_t allocator_thread_allocated();

}  // namespace parley

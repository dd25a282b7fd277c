#include "common/allocator.h"

#ifdef PARLEY_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

namespace parley {

std::string allocator_name() {
#ifdef PARLEY_JEMALLOC
  const char* version = nullptr;
  size_t len = sizeof version;
  if (mallctl("version", &version, &len, nullptr, 0) == 0 && version) return std::string("jemalloc ") + version;
  return "jemalloc";
#else
  return "system";
#endif
}

int64_t allocator_thread_allocated() {
#ifdef PARLEY_JEMALLOC
  uint64_t bytes = 0;
  size_t len = sizeof bytes;
  if (mallctl("thread.allocated", &bytes, &len, nullptr, 0) != 0) return -1;
  return static_cast<int64_t>(bytes);
#else
  return -1;
#endif
}

}  // namespace parley

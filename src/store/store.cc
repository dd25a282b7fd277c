#include "store/store.h"

#include <future>
#include <memory>

namespace parley {

Result<AppendResult> Store::append_and_wait(AppendRequest request) {
  // Shared: the callback may still be inside set_value() when get() returns.
  auto promise = std::make_shared<std::promise<Result<AppendResult>>>();
  auto future = promise->get_future();
  append(std::move(request), [promise](Result<AppendResult> r) { promise->set_value(std::move(r)); });
  return future.get();
}

}  // namespace parley

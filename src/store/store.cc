#include "store/store.h"

#include "common/wait.h"

namespace parley {

Result<AppendResult> Store::append_and_wait(AppendRequest request) {
  return wait_for_callback<Result<AppendResult>>(
      [&](AppendCallback done) { append(std::move(request), std::move(done)); });
}

}  // namespace parley

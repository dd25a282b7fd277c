// `parley seed`: bulk-creates benchmark users and group threads with
// deterministic ids, so load generators (bench/parley_bench, bench/peers) can
// derive every id and membership from the same rule without a database:
//
//   user i   (0 <= i < users):        id 00000000-0000-4000-8000-%012x(i),
//                                     username bench_<i>, full_name "Bench <i>",
//                                     role bench, no password (token-only)
//   thread k (0 <= k < users/group):  id 00000000-0000-4000-9000-%012x(k),
//                                     group of users k*G .. k*G+G-1
//
// Idempotent: what exists already is checked and skipped; a thread that exists
// with other participants (seeded with another group size) is an error.
#pragma once

#include <cstdint>
#include <string>

#include "common/config.h"

namespace parley {

struct SeedOptions {
  int64_t users = 0;
  int64_t group_size = 0;
  int threads = 16;  // concurrent blocking creates; the store group-commits them
};

std::string bench_user_id(uint64_t index);
std::string bench_thread_id(uint64_t group);

// Runs the seeding (progress on stderr, JSON summary on stdout). Exit code.
int run_seed(const Config& config, const SeedOptions& options);

}  // namespace parley

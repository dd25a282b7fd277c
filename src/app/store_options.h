// The store settings of a command's Config (serve, migrate, seed, user add, token).
#pragma once

#include "common/config.h"
#include "store/store.h"

namespace parley {

inline StoreOptions store_options(const Config& config) {
  StoreOptions options;
  options.data_dir = config.data_dir;
  options.fsync_commits = config.fsync_commits;
  options.database_url = config.database_url;
  options.wal_checkpoint_pages = config.wal_checkpoint_pages;
  return options;
}

}  // namespace parley

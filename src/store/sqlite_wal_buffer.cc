#include "store/sqlite_wal_buffer.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <new>
#include <string>

namespace parley {

namespace {

// Larger than a typical commit of the `dm` benchmark (a few hundred 4 KiB
// frames), small enough to be nothing beside the writer's 64 MiB page cache.
constexpr size_t kBufferBytes = 2 << 20;
constexpr int kFrameHeaderBytes = 24;  // SQLite's WAL format
// The unix VFS masks a write's length with 0x1ffff (os_unix.c,
// seekAndWriteFd): a longer one would be cut short, or to nothing. So the
// gathered bytes go out in pieces below 128 KiB.
constexpr size_t kMaxWriteBytes = 124 * 1024;

sqlite3_vfs* g_root = nullptr;  // the default VFS, which does the real work
sqlite3_vfs g_vfs;
std::atomic<uint64_t> g_writes{0};

// A WAL file opened through this VFS: this header, then (at kHeaderBytes)
// the default VFS's own file object. SQLite allocates both in one block of
// g_vfs.szOsFile bytes and knows only `base`.
struct WalFile {
  sqlite3_file base;
  std::string* pending;      // the gathered writes, to go at pending_at
  sqlite3_int64 pending_at;
  bool commit_next;          // the last write was a commit frame's header
};
constexpr size_t kHeaderBytes = (sizeof(WalFile) + 7) & ~size_t{7};

WalFile* wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }
sqlite3_file* real(sqlite3_file* f) {
  return reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + kHeaderBytes);
}

uint32_t big_endian32(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

int flush(sqlite3_file* f) {
  WalFile* w = wal(f);
  std::string& buf = *w->pending;
  sqlite3_file* r = real(f);
  int rc = SQLITE_OK;
  for (size_t done = 0; done < buf.size() && rc == SQLITE_OK; done += kMaxWriteBytes) {
    const size_t n = std::min(kMaxWriteBytes, buf.size() - done);
    rc = r->pMethods->xWrite(r, buf.data() + done, static_cast<int>(n), w->pending_at + static_cast<sqlite3_int64>(done));
    g_writes.fetch_add(1, std::memory_order_relaxed);
  }
  buf.clear();
  return rc;
}

int wal_close(sqlite3_file* f) {
  int rc = flush(f);
  sqlite3_file* r = real(f);
  int closed = r->pMethods->xClose(r);
  delete wal(f)->pending;
  wal(f)->pending = nullptr;
  return rc != SQLITE_OK ? rc : closed;
}

int wal_write(sqlite3_file* f, const void* data, int n, sqlite3_int64 offset) {
  WalFile* w = wal(f);
  std::string& buf = *w->pending;
  if (!buf.empty() && offset != w->pending_at + static_cast<sqlite3_int64>(buf.size())) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  if (buf.empty()) w->pending_at = offset;
  buf.append(static_cast<const char*>(data), static_cast<size_t>(n));
  bool commit_done = false;
  if (n == kFrameHeaderBytes) {
    // Bytes 4..7 of a frame header: the database size after a commit, else 0.
    // A commit frame's header goes out at once as well: when SQLite rewrites
    // the headers of frames overwritten within a transaction (their
    // checksums), the commit frame's header is the last write, with no page
    // after it.
    w->commit_next = big_endian32(static_cast<const char*>(data) + 4) != 0;
    commit_done = w->commit_next;
  } else if (w->commit_next) {
    w->commit_next = false;
    commit_done = true;
  }
  if (commit_done || buf.size() >= kBufferBytes) return flush(f);
  return SQLITE_OK;
}

// Everything else writes what is gathered first, then does what the default VFS does.
int wal_read(sqlite3_file* f, void* out, int n, sqlite3_int64 offset) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xRead(real(f), out, n, offset);
}
int wal_truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xTruncate(real(f), size);
}
int wal_sync(sqlite3_file* f, int flags) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xSync(real(f), flags);
}
int wal_file_size(sqlite3_file* f, sqlite3_int64* size) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xFileSize(real(f), size);
}
int wal_lock(sqlite3_file* f, int level) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xLock(real(f), level);
}
int wal_unlock(sqlite3_file* f, int level) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xUnlock(real(f), level);
}
int wal_check_reserved_lock(sqlite3_file* f, int* out) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xCheckReservedLock(real(f), out);
}
int wal_file_control(sqlite3_file* f, int op, void* arg) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xFileControl(real(f), op, arg);
}
int wal_sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int wal_device_characteristics(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }

// Version 1: SQLite uses shared memory and memory maps on the database file only.
const sqlite3_io_methods kWalMethods = {
    1,          wal_close,     wal_read,   wal_write,        wal_truncate,   wal_sync,
    wal_file_size, wal_lock,   wal_unlock, wal_check_reserved_lock, wal_file_control, wal_sector_size,
    wal_device_characteristics, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

int open_file(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  // Every other file is the default VFS's own, in the same block.
  if (!(flags & SQLITE_OPEN_WAL)) return g_root->xOpen(g_root, name, f, flags, out_flags);
  f->pMethods = nullptr;  // SQLite calls xClose only on a file that opened
  auto* pending = new (std::nothrow) std::string;
  if (!pending) return SQLITE_NOMEM;
  sqlite3_file* r = real(f);
  r->pMethods = nullptr;
  int rc = g_root->xOpen(g_root, name, r, flags, out_flags);
  if (rc != SQLITE_OK) {
    delete pending;
    return rc;
  }
  pending->reserve(kBufferBytes + 64 * 1024);
  WalFile* w = wal(f);
  w->pending = pending;
  w->pending_at = 0;
  w->commit_next = false;
  w->base.pMethods = &kWalMethods;
  return SQLITE_OK;
}

}  // namespace

Status register_wal_buffer_vfs() {
  static std::once_flag once;
  static int rc = SQLITE_ERROR;
  std::call_once(once, [] {
    g_root = sqlite3_vfs_find(nullptr);
    if (!g_root) return;
    // A copy of the default VFS (its other methods, its pAppData) with our open.
    g_vfs = *g_root;
    g_vfs.pNext = nullptr;
    g_vfs.zName = kWalBufferVfs;
    g_vfs.szOsFile = static_cast<int>(kHeaderBytes) + g_root->szOsFile;
    g_vfs.xOpen = open_file;
    rc = sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0);
  });
  if (rc != SQLITE_OK) return internal_error(std::string("cannot register the WAL-buffering SQLite VFS: ") + sqlite3_errstr(rc));
  return Ok{};
}

uint64_t wal_buffer_writes() { return g_writes.load(std::memory_order_relaxed); }

}  // namespace parley

#include "store/sqlite_wal_buffer.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace parley {

namespace {

// Larger than a typical commit of the `dm` benchmark (a few hundred 4 KiB
// frames), small enough to be nothing beside the writer's 64 MiB page cache.
constexpr size_t kBufferBytes = 2 << 20;
constexpr int kFrameHeaderBytes = 24;  // SQLite's WAL format
constexpr int kLogHeaderBytes = 32;
// The unix VFS masks a write's length with 0x1ffff (os_unix.c,
// seekAndWriteFd): a longer one would be cut short, or to nothing. So the
// gathered bytes go out in pieces below 128 KiB.
constexpr size_t kMaxWriteBytes = 124 * 1024;

// The file system's block (ext4's default, and the page size): a write that
// covers only part of a block whose page is not in memory makes the kernel
// read that block from disk first, under the writer's pwrite.
constexpr sqlite3_int64 kBlockBytes = 4096;

sqlite3_vfs* g_root = nullptr;  // the default VFS, which does the real work
sqlite3_vfs g_vfs;
std::atomic<uint64_t> g_writes{0};
std::atomic<uint64_t> g_partial_writes{0};

// What a WAL file handle keeps besides the default VFS's file object.
struct WalState {
  // The gathered writes, to go at `at`. The first kBlockBytes of `bytes`
  // are room for the tail below, so it goes in front without a copy of the rest.
  std::string bytes;
  sqlite3_int64 at = 0;
  // `end`: the end of this handle's furthest write since the log last
  // restarted (SQLite writes the log's header, at offset 0, only then).
  // `tail`: the file's bytes from the start of end's block up to end.
  // `salt`: the salt of the log this handle writes now, from the last log
  // or frame header it wrote (SQLite gives every log a new salt and puts it
  // in each frame's header); `tail_salt`: the salt when the tail was taken.
  // A write that continues the log at `end` with the tail's salt starts at
  // that block's start, the tail first: nothing else has written there
  // since (another connection, such as `parley user disable` in another
  // process, appending or starting a new log would have moved the end or
  // changed the salt).
  sqlite3_int64 end = 0;
  std::string tail;
  bool tail_valid = false;
  std::string salt, tail_salt;
};

// A WAL file opened through this VFS: this header, then (at kHeaderBytes)
// the default VFS's own file object. SQLite allocates both in one block of
// g_vfs.szOsFile bytes and knows only `base`.
struct WalFile {
  sqlite3_file base;
  WalState* state;
  bool commit_next;  // the last write was a commit frame's header
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

size_t pending_size(const WalState& s) { return s.bytes.size() - kBlockBytes; }

// Writes out the gathered bytes. A write that continues the log is widened
// to whole blocks: it starts at its first block's start (the tail's bytes,
// which the file already holds, go first) and is padded with zeros to its
// last block's end (past the log's end: SQLite never reads there, and
// recovery stops at the first frame whose salt and checksum do not match).
// So the kernel never has to read a block back to merge a partial write
// into it: on this machine such reads, behind a checkpoint's writes,
// stalled commits for tens of milliseconds (docs/benchmarks.md, "Whole
// blocks for the WAL"). A write elsewhere (SQLite rewriting a frame of the
// open transaction) goes as it is.
int flush(sqlite3_file* f) {
  WalState& s = *wal(f)->state;
  const size_t n = pending_size(s);
  if (n == 0) return SQLITE_OK;
  if (s.at == 0) {  // a new log: the old one's bytes are dead
    s.end = 0;
    s.tail_valid = false;
  }
  const sqlite3_int64 write_end = s.at + static_cast<sqlite3_int64>(n);
  const bool furthest = write_end >= s.end;
  size_t from = kBlockBytes;  // where the write starts in s.bytes
  sqlite3_int64 at = s.at;
  if (s.at == s.end && s.tail_valid && !s.salt.empty() && s.salt == s.tail_salt) {
    from -= s.tail.size();
    std::memcpy(s.bytes.data() + from, s.tail.data(), s.tail.size());
    at -= static_cast<sqlite3_int64>(s.tail.size());
  }
  if (furthest) {
    s.bytes.append(static_cast<size_t>((kBlockBytes - write_end % kBlockBytes) % kBlockBytes), '\0');
  } else if (s.tail_valid && write_end > s.end - static_cast<sqlite3_int64>(s.tail.size())) {
    s.tail_valid = false;  // a rewrite inside the tail's block (SQLite makes none there)
  }
  const size_t total = s.bytes.size() - from;
  if (at % kBlockBytes != 0 || (at + static_cast<sqlite3_int64>(total)) % kBlockBytes != 0)
    g_partial_writes.fetch_add(1, std::memory_order_relaxed);

  sqlite3_file* r = real(f);
  int rc = SQLITE_OK;
  for (size_t done = 0; done < total && rc == SQLITE_OK; done += kMaxWriteBytes) {
    const size_t len = std::min(kMaxWriteBytes, total - done);
    rc = r->pMethods->xWrite(r, s.bytes.data() + from + done, static_cast<int>(len),
                             at + static_cast<sqlite3_int64>(done));
    g_writes.fetch_add(1, std::memory_order_relaxed);
  }
  if (furthest) {
    // The new tail: write_end's block up to write_end, all inside this
    // write when it started at or before that block's start.
    const sqlite3_int64 block = write_end - write_end % kBlockBytes;
    s.end = write_end;
    s.tail_valid = rc == SQLITE_OK && at <= block && !s.salt.empty();
    if (s.tail_valid) {
      s.tail.assign(s.bytes.data() + from + (block - at), static_cast<size_t>(write_end - block));
      s.tail_salt = s.salt;
    }
  }
  if (rc != SQLITE_OK) s.tail_valid = false;  // the file may hold part of it
  s.bytes.resize(kBlockBytes);
  return rc;
}

int wal_close(sqlite3_file* f) {
  int rc = flush(f);
  sqlite3_file* r = real(f);
  int closed = r->pMethods->xClose(r);
  delete wal(f)->state;
  wal(f)->state = nullptr;
  return rc != SQLITE_OK ? rc : closed;
}

int wal_write(sqlite3_file* f, const void* data, int n, sqlite3_int64 offset) {
  WalFile* w = wal(f);
  WalState& s = *w->state;
  if (pending_size(s) != 0 && offset != s.at + static_cast<sqlite3_int64>(pending_size(s))) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  if (pending_size(s) == 0) s.at = offset;
  s.bytes.append(static_cast<const char*>(data), static_cast<size_t>(n));
  bool commit_done = false;
  // Where the salt is: bytes 16-23 of the log's header, 8-15 of a frame's.
  if (offset == 0 && n == kLogHeaderBytes) {
    s.salt.assign(static_cast<const char*>(data) + 16, 8);
  } else if (n == kFrameHeaderBytes) {
    s.salt.assign(static_cast<const char*>(data) + 8, 8);
  }
  if (n == kFrameHeaderBytes) {
    // Bytes 4..7 of a frame header: the database size after a commit, else 0.
    // A commit frame's header appended at the log's end is followed by its
    // page, and both go out together. One written anywhere else goes out at
    // once: when SQLite rewrites the headers of frames overwritten within a
    // transaction (their checksums), the commit frame's header, inside the
    // log, is the last write, with no page after it.
    w->commit_next = big_endian32(static_cast<const char*>(data) + 4) != 0;
    commit_done = w->commit_next && offset < s.end;
  } else if (w->commit_next) {
    w->commit_next = false;
    commit_done = true;
  }
  if (commit_done || pending_size(s) >= kBufferBytes) return flush(f);
  return SQLITE_OK;
}

// Everything else writes what is gathered first, then does what the default VFS does.
int wal_read(sqlite3_file* f, void* out, int n, sqlite3_int64 offset) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xRead(real(f), out, n, offset);
}
int wal_truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  WalState& s = *wal(f)->state;
  if (size < s.end) {  // what the tail copied is gone
    s.end = size;
    s.tail_valid = false;
  }
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
  auto* state = new (std::nothrow) WalState;
  if (!state) return SQLITE_NOMEM;
  sqlite3_file* r = real(f);
  r->pMethods = nullptr;
  int rc = g_root->xOpen(g_root, name, r, flags, out_flags);
  if (rc != SQLITE_OK) {
    delete state;
    return rc;
  }
  state->bytes.reserve(2 * kBlockBytes + kBufferBytes + 64 * 1024);
  state->bytes.resize(kBlockBytes);
  state->tail.reserve(kBlockBytes);
  WalFile* w = wal(f);
  w->state = state;
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
uint64_t wal_buffer_partial_writes() { return g_partial_writes.load(std::memory_order_relaxed); }

}  // namespace parley

// The "parley-walbuf" SQLite VFS: the default VFS, except that the writes to
// a WAL file are gathered and handed on in few large writes.
//
// SQLite writes each WAL frame with two pwrite calls (its 24-byte header,
// then the page), so a commit of 500 pages costs 1,000 system calls, and on
// a virtual machine each call's fixed cost is most of the writer's kernel
// time. Here contiguous WAL writes collect in a buffer owned by the file
// handle, and are written in pieces of up to 124 KiB (the most the default
// VFS writes in one call) when
//   - a commit frame's header, and then its page, have been written (a
//     commit frame's header carries the database size after the commit;
//     every other frame's is 0): the commit is then complete in the OS
//     before SQLite publishes it to other connections through the
//     wal-index, which involves no VFS call. (The header alone when it is
//     written inside the log: when SQLite rewrites the checksums of frames
//     it overwrote within the transaction, the commit frame's header is its
//     last write);
//   - the next write is not contiguous (SQLite rewrites a frame in place);
//   - the buffer is full;
//   - before any other operation on the file (read, sync, truncate, size,
//     lock, file control, close), so nothing SQLite reads or syncs is missing.
// A write that continues the log also goes out as whole file-system blocks
// (the bytes of its first block that the file already holds in front, zeros
// past the log's end behind), so the kernel never reads a block back from
// disk to merge it.
// So what is durable, and when, is exactly as with the default VFS: a commit
// is in the OS (it survives kill -9) before sqlite3_step returns, and the
// sync of synchronous=FULL still comes after every frame is written.
//
// register_wal_buffer_vfs() may be called from any thread, any number of
// times; the VFS lives until the process exits. A connection opened with it
// is used by one thread at a time, as every SQLite connection here is.
#pragma once

#include <cstdint>

#include "common/error.h"

namespace parley {

inline constexpr const char* kWalBufferVfs = "parley-walbuf";

// Registers the VFS (not as the default). Fails only if SQLite has no default VFS.
Status register_wal_buffer_vfs();

// WAL writes handed on to the default VFS so far, process-wide: tests use it
// to see that a commit's frames went out in a few calls.
uint64_t wal_buffer_writes();
// Of those, the writes that did not cover whole 4 KiB blocks: tests use it to
// see that appends to the log go out as whole blocks.
uint64_t wal_buffer_partial_writes();

}  // namespace parley

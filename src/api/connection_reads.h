// Page sizes and timings shared by a connection's reads of the store: its
// replays and gap fills (connection.cc) and what it reads again after the
// bus lost events or its client was away (connection_sync.cc). Internal to
// api/: constants only.
#pragma once

#include <chrono>
#include <cstdint>

#include "common/clock.h"  // Micros

namespace parley {

// The seq of a thread's frame that is not a new message (an edit, a
// deletion) or whose seq is not at hand: it waits behind any own message.
inline constexpr int64_t kAnySeq = INT64_MAX;

// Replays in pages so a long absence does not build one huge reply; live
// messages of the thread are held by the cursor meanwhile. Sending is paced
// by the outbound queue: a big backlog waits for the client to read instead
// of overflowing the queue (which would drop the connection).
inline constexpr int kReplayPage = 500;
inline constexpr auto kReplayPause = std::chrono::milliseconds(5);

// A store that cannot be read now, or does not have the missing seqs yet, is
// tried again this often, while the thread's live messages wait behind the
// gap; after kGapFillAttempts reads that found nothing, the gap is accepted
// (an event for a seq the store never had must not stall the thread).
inline constexpr auto kGapFillRetry = std::chrono::seconds(1);
inline constexpr int kGapFillAttempts = 5;

// Several nodes: how much older than the connection a message found by the
// fill of a thread's first live message may be and still be sent (other
// nodes' clocks; a duplicate of history is better than a loss).
inline constexpr Micros kFirstFillMarginUs = 1'000'000;

}  // namespace parley

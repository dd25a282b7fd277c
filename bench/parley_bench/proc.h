// The server's CPU time and memory, read from /proc (same machine).
#pragma once

#include <cstdint>
#include <vector>

namespace bench {

struct ProcSample {
  bool ok = false;
  double cpu_seconds = 0;  // utime + stime of every thread
  int64_t rss_kb = 0;      // VmRSS
};

ProcSample sample_process(int64_t pid);
// Summed over several processes (the nodes of one deployment); ok when all were read.
ProcSample sample_processes(const std::vector<int64_t>& pids);
double own_cpu_seconds();  // this process (getrusage)

// Raises RLIMIT_NOFILE's soft limit to the hard one; returns the new soft limit.
int64_t raise_fd_limit();

}  // namespace bench

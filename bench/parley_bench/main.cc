// parley-bench: a load generator for Parley's WebSocket protocol and its
// Socket.IO mapping (and for the peers in bench/peers that speak the same
// subset). See docs/benchmarks.md.
#include "options.h"
#include "run.h"

int main(int argc, char** argv) {
  bench::Options opt;
  int code = 0;
  if (!bench::parse_options(argc, argv, opt, code)) return code;
  return bench::run(opt);
}

// Runs one scenario end to end; returns the process exit code
// (0 ok, 1 failed run or failed check, 2 bad setup).
#pragma once

#include "options.h"

namespace bench {

int run(const Options& opt);

}  // namespace bench

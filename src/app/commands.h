// The `parley` command line: serve, user add, token, seed, migrate, version.
#pragma once

namespace parley {

int run_cli(int argc, char** argv);

}  // namespace parley

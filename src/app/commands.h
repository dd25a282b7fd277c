// The `parley` command line: serve, user add, token, seed, migrate, migrate-store, version.
#pragma once

namespace parley {

int run_cli(int argc, char** argv);

}  // namespace parley

#include "app/commands.h"

int main(int argc, char** argv) { return parley::run_cli(argc, argv); }

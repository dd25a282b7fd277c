// Replays a fuzz target's seed corpus (fuzz/corpus/TARGET) and every input
// that once crashed or hung it (fuzz/regressions/TARGET) through the same
// entry point, LLVMFuzzerTestOneInput, in the normal build. A target reports
// a failure by aborting, so a regression fails this test's process.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

// The files of dir, sorted, so a failure names the same file every run.
std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

size_t replay(const fs::path& dir) {
  size_t n = 0;
  for (const fs::path& file : files_in(dir)) {
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::cerr << "replay " << file.string() << " (" << bytes.size() << " bytes)\n";
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++n;
  }
  return n;
}

}  // namespace

TEST(FuzzReplay, SeedCorpus) { EXPECT_GT(replay(PARLEY_FUZZ_DIR "/corpus/" PARLEY_FUZZ_TARGET), 0u); }

TEST(FuzzReplay, Regressions) { replay(PARLEY_FUZZ_DIR "/regressions/" PARLEY_FUZZ_TARGET); }

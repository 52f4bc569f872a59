// dsa_bench --devices N1,N2,...: the multi-GPU owned-cache path on GPUs 0..N-1 against one GPU in the same
// run (multi_gpu.cpp says what is measured).
#pragma once

#include <string>
#include <vector>

namespace dsa_bench {

// "1,2,4" -> {1, 2, 4}; false on anything else.
bool parse_device_counts(const std::string& text, std::vector<int>* counts);
// Returns the exit status (0 when every check passed or nothing could run, 1 on a FAIL, 2 when the JSON
// cannot be written).
int run_multi_gpu(std::vector<int> counts, const std::string& json_path, int iterations);

}  // namespace dsa_bench

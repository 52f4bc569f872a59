// dsa_bench --plot FILE: an SVG written by hand (no dependencies). Two panels against context length L, one
// line per batch size B, for the workloads named "BxL" only: latency (log scale) and % of the bandwidth
// floor (the floor exists only on a GPU).
#pragma once

#include <string>
#include <vector>

#include "workloads.hpp"

namespace dsa_bench {

// false when the file cannot be written.
bool write_plot(const std::string& path, const std::vector<Result>& results, const std::string& device_name);

}  // namespace dsa_bench

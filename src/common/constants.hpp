// The operator's fixed sizes and limits (SPEC sections 1 and 4), one definition each, for host and device
// code alike.
#pragma once

namespace dsa {

constexpr int kHeadDim = 128;                        // D: fp8 bytes of one key, and of one query head
constexpr int kScaleBytes = 4;                       // the fp32 scale of one key
constexpr int kTokenBytes = kHeadDim + kScaleBytes;  // 132: one token of the paged cache (key, then scale)
constexpr int kMaxTopk = 2048;                       // largest k
constexpr int kMaxNextN = 4;                         // largest next_n (MTP rows per sequence)

}  // namespace dsa

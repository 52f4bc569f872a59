// The ranking rule of SPEC section 1, as one definition shared by the CPU backend and the kernels.
// A score maps to a 32-bit key whose unsigned order is the ranking order: NaN lowest (all NaNs equal),
// then -inf .. +inf, with -0 and +0 equal. A candidate is (key << 32) | ~position, so among equal scores
// the smaller position ranks higher, and a larger 64-bit value always means "ranks first".
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "common/host_device.h"

namespace dsa {

DSA_HOST_DEVICE uint32_t score_order_key(float score) {
    uint32_t bits;
#if defined(__CUDA_ARCH__)
    bits = __float_as_uint(score);
#else
    std::memcpy(&bits, &score, sizeof bits);
#endif
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0u;  // NaN: below everything
    if (bits == 0x80000000u) bits = 0u;                  // -0 ranks equal to +0
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

DSA_HOST_DEVICE uint64_t candidate_key(float score, uint32_t position) {
    return (uint64_t(score_order_key(score)) << 32) | uint64_t(~position);
}

DSA_HOST_DEVICE uint32_t candidate_position(uint64_t key) { return ~uint32_t(key); }

}  // namespace dsa

namespace dsa {

// The score reported beside a padding index (-1): -inf (SPEC section 1, outputs).
DSA_HOST_DEVICE float padding_score() {
#if defined(__CUDA_ARCH__)
    return -__int_as_float(0x7f800000);
#else
    return -std::numeric_limits<float>::infinity();
#endif
}

// The score a key stands for (inverse of score_order_key up to its canonicalisation: -0 reads back as +0
// and every NaN as one NaN). Both backends report returned scores through this, so they agree bit for bit.
DSA_HOST_DEVICE float score_from_order_key(uint32_t key) {
    const uint32_t bits = key == 0u ? 0x7fc00000u : ((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float score;
    std::memcpy(&score, &bits, sizeof score);
    return score;
#endif
}

}  // namespace dsa

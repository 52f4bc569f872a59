// OCP FP8 e4m3fn (the "fn" variant: no infinities, S.1111.111 is NaN, bias 7) decoded to float.
#pragma once

#include <cmath>
#include <cstdint>

namespace dsa {

inline float fp8_e4m3_to_float(uint8_t byte) {
    const int exponent = (byte >> 3) & 0xf;
    const int mantissa = byte & 0x7;
    const float sign = (byte & 0x80) ? -1.0f : 1.0f;
    if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
    if (exponent == 0) return sign * std::ldexp(float(mantissa), -9);  // subnormal: m/8 * 2^-6
    return sign * std::ldexp(float(8 + mantissa), exponent - 10);    // (1 + m/8) * 2^(e-7)
}

// All 256 decodings, built once.
struct Fp8Table {
    float value[256];
    Fp8Table() {
        for (int b = 0; b < 256; ++b) value[b] = fp8_e4m3_to_float(uint8_t(b));
    }
};

inline const Fp8Table& fp8_table() {
    static const Fp8Table table;
    return table;
}

}  // namespace dsa

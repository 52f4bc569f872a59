// The float scores of one causal row of a RaggedCase (row r sees keys [0, r + 1)), summed in float64 and rounded
// to float as the kernels' order (ties aside): what the prefill simulators of bench/experiments run their rules on.
#pragma once

#include <algorithm>
#include <vector>

#include "test_util.hpp"

inline std::vector<float> causal_row_scores(const dsa_test::RaggedCase& c, int heads, int row) {
    const int window = row + 1;
    std::vector<float> scores(static_cast<size_t>(window));
    const uint8_t* q = c.query(row);
    const float* w = c.row_weights(row);
    std::vector<float> qf(size_t(heads) * 128);
    for (int i = 0; i < heads * 128; ++i) qf[size_t(i)] = float(dsa_test::fp8_decode(q[i]));
    for (int p = 0; p < window; ++p) {
        const uint8_t* key = c.key(row, p);
        float kf[128];
        for (int d = 0; d < 128; ++d) kf[d] = float(dsa_test::fp8_decode(key[d]));
        double sum = 0;
        for (int h = 0; h < heads; ++h) {
            double dot = 0;
            for (int d = 0; d < 128; ++d) dot += double(qf[size_t(h * 128 + d)]) * kf[d];
            sum += w[h] * std::max(dot, 0.0);
        }
        scores[size_t(p)] = float(sum * c.key_scale(row, p));
    }
    return scores;
}

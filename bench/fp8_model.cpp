// dsa_fp8_model: what the FP8 tensor cores' accumulation precision does to SPEC section 5's checks, without a
// GPU (bench/NOTES.md, session 10). It scores a paged workload's inputs (exactly as dsa_bench draws them from
// its seed) under models of one head's 128-element fp8 dot product as wgmma computes it: four k32 steps, each
// adding 32 exact products to the accumulator with every term truncated toward zero to `bits` significant
// bits of the step's largest term, the sum truncated to fp32. Each row's top k by the modelled scores is then
// checked like a GPU result: SPEC 5's rank rule and the FlashInfer-Bench evaluator, against the float64 oracle.
//   dsa_fp8_model [--shape BxL] [--seed N] [--rows R]     (default 128x4096, seed 6, every row)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "workloads.hpp"

namespace {

constexpr int kStep = 32;  // products per wgmma k-step (fp8: k32)

// A model of one head's dot product: `bits` significant bits per step (0: exact, then rounded to fp32), the
// steps chained through the accumulator or each started from zero and their results added in fp32.
struct Model {
    const char* name;
    int bits;
    bool chained;
};

// One k-step: c plus the products, every term truncated toward zero to `bits` significant bits of the largest.
double truncated_step(double c, const double* products, int bits) {
    double largest = std::fabs(c);
    for (int i = 0; i < kStep; ++i) largest = std::max(largest, std::fabs(products[i]));
    if (largest == 0.0) return 0.0;
    int exponent;
    std::frexp(largest, &exponent);  // largest in [2^(exponent - 1), 2^exponent)
    const double unit = std::ldexp(1.0, exponent - bits);
    double sum = std::trunc(c / unit) * unit;
    for (int i = 0; i < kStep; ++i) sum += std::trunc(products[i] / unit) * unit;
    return double(float(sum));
}

double modelled_dot(const double* products, const Model& m) {
    if (m.bits == 0) {
        double exact = 0;
        for (int d = 0; d < dsa_test::kHeadDim; ++d) exact += products[d];
        return double(float(exact));
    }
    double acc = 0;
    float separate = 0;
    for (int s = 0; s < dsa_test::kHeadDim / kStep; ++s) {
        if (m.chained) acc = truncated_step(acc, products + s * kStep, m.bits);
        else separate += float(truncated_step(0.0, products + s * kStep, m.bits));
    }
    return m.chained ? acc : double(separate);
}

// Row r's modelled score of every visible position: s_p * sum_h w_h * relu(dot_h), the head sum in fp32.
std::vector<float> modelled_scores(const dsa_test::TopkCase& c, int64_t r, const Model& m) {
    const int H = c.heads();
    const uint8_t* q = c.query(r);
    const float* w = c.row_weights(r);
    std::vector<float> score(size_t(c.visible(r)));
    double products[dsa_test::kHeadDim];
    for (int64_t p = 0; p < c.visible(r); ++p) {
        const uint8_t* k = c.key(r, p);
        float sum = 0;
        for (int h = 0; h < H; ++h) {
            for (int d = 0; d < dsa_test::kHeadDim; ++d)
                products[d] = dsa_test::fp8_decode(q[h * dsa_test::kHeadDim + d]) * dsa_test::fp8_decode(k[d]);
            sum = std::fma(w[h], float(std::max(modelled_dot(products, m), 0.0)), sum);
        }
        score[size_t(p)] = c.key_scale(r, p) * sum;
    }
    return score;
}

// A whole number in [0, 2^31) from all of `text`, else -1.
int64_t whole_number(const char* text) {
    char* end = nullptr;
    const long long v = std::strtoll(text, &end, 10);
    return end != text && *end == '\0' && v >= 0 && v < (1LL << 31) ? v : -1;
}

int usage(const char* why) {
    std::fprintf(stderr, "dsa_fp8_model: %s\nusage: dsa_fp8_model [--shape BxL] [--seed N] [--rows R]\n", why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string shape = "128x4096";
    int seed = 6, rows_limit = -1;  // -1: every row
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) return usage(("missing value after " + arg).c_str());
        const char* value = argv[++i];
        if (arg == "--shape") {
            shape = value;
        } else if (arg == "--seed" || arg == "--rows") {
            const int64_t v = whole_number(value);
            if (v < 0) return usage((arg + " takes a whole number, not " + value).c_str());
            (arg == "--seed" ? seed : rows_limit) = int(v);
        } else {
            return usage(("unknown option " + arg).c_str());
        }
    }
    std::vector<dsa_bench::Workload> parsed;
    std::string error;
    if (!dsa_bench::parse_shapes(shape, dsa_bench::Workload{}, &parsed, &error) || parsed.size() != 1)
        return usage(("--shape: " + (error.empty() ? std::string("one BxL") : error)).c_str());
    parsed[0].seed = seed;
    const dsa_test::PagedCase c = dsa_bench::paged_case_of(parsed[0]);
    const int64_t rows = rows_limit >= 0 ? std::min<int64_t>(rows_limit, c.rows()) : c.rows();
    const int topk = dsa_bench::kDefaultTopk;
    const dsa_test::Oracle oracle = dsa_test::compute_oracle(c);

    const Model models[] = {{"exact products and sum, rounded to fp32", 0, true},
                            {"14 bits, k-steps chained (as wgmma accumulates)", 14, true},
                            {"14 bits, k-steps separate, added in fp32", 14, false}};
    std::printf("%s, seed %d: %lld of %lld rows, k %d; SPEC 5 checks of each row's top k by the modelled scores\n",
                shape.c_str(), seed, (long long)rows, (long long)c.rows(), topk);
    for (const Model& m : models) {
        std::vector<int32_t> indices(size_t(c.rows() * topk), -1);
        auto keep_best = [&](int64_t r, const std::vector<double>& score) {  // row r's top k by `score`
            const std::vector<int64_t> ranked = dsa_test::ranked_positions(score, std::min<int64_t>(topk, c.visible(r)));
            for (size_t i = 0; i < ranked.size(); ++i) indices[size_t(r * topk) + i] = c.index_of(r, ranked[i], 0);
        };
        std::vector<double> worst(size_t(rows), 0.0);  // max |modelled - oracle| / A(p) per row
        auto run_rows = [&](int64_t first, int64_t step) {
            for (int64_t r = first; r < rows; r += step) {
                const std::vector<float> score = modelled_scores(c, r, m);
                keep_best(r, std::vector<double>(score.begin(), score.end()));
                const dsa_test::RowOracle& o = oracle[size_t(r)];
                for (size_t p = 0; p < score.size(); ++p)
                    worst[size_t(r)] = std::max(worst[size_t(r)], std::fabs(double(score[p]) - o.score[p]) / (o.magnitude[p] + 1e-30));
            }
        };
        const int64_t threads = std::max(1u, std::thread::hardware_concurrency());
        std::vector<std::thread> pool;
        for (int64_t t = 0; t < threads; ++t) pool.emplace_back(run_rows, t, threads);
        for (std::thread& t : pool) t.join();
        // Rows past `rows` return the oracle's own top k, so they pass.
        for (int64_t r = rows; r < c.rows(); ++r) keep_best(r, oracle[size_t(r)].score);
        const std::string check = dsa_test::check_spec5(c, oracle, topk, 0, indices.data(), nullptr);
        const double worst_row = worst.empty() ? 0.0 : *std::max_element(worst.begin(), worst.end());
        std::printf("%-48s max |modelled - oracle| / A = %.2e   %s\n", m.name, worst_row,
                    check.empty() ? "PASS" : ("FAIL: " + check).c_str());
    }
    return 0;
}

// Simulates a prefill design in the shape of DeepGEMM's fp8_mqa_logits (jobs of 2 rows, 256-key blocks, each of
// 16 math warps taking 16 keys of a block per row) whose math warps append a row's scores at or above a shared
// entry threshold to per-warp buffers (no position order, no exchange between warps), and whose selector
// warpgroup sets that threshold from estimates and selects each row at its end. Per sampled row of the benchmark's
// causal inputs: the scores appended (the math's stores, the selector's staging reads), those at or above the
// final threshold (the final selection's radix items), the estimates made (each a selection over the candidates
// so far), the largest per-warp count (the buffers' capacity) and rows whose estimate fails (scored again).
// Estimate rule (one per row): once the row has seen m >= E keys, the r-th best of them, r = k m / W + 4 sqrt(k m / W),
// becomes the threshold D blocks later (the selector's response time); rows of at most W0 keys make none and
// append every key. A row whose candidates at or above the final threshold are fewer than k "fails" (its job
// would be scored again without estimates). Build like prefill_candidate_sim.cpp (same includes and libraries):
//   g++ -O2 -std=c++17 -Iinclude -Itests -Isrc bench/experiments/prefill_append_sim.cpp
//       build/libdsa_test_util.a -Lbuild -ldsa_indexer -Wl,-rpath,$PWD/build -o /tmp/append_sim
//   /tmp/append_sim S [front_keys] [sampled_rows]      e.g. /tmp/append_sim 16384 8192 48
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>
#include "causal_row_scores.hpp"
#include "test_util.hpp"
using namespace dsa_test;
static float kth_largest(std::vector<float> v, int k) {
    std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
    return v[k - 1];
}
struct Cfg { int E, D, W0; };
struct Acc { double rows = 0, appended = 0, final_items = 0, estimates = 0, fail = 0, maxwarp_sum = 0; int maxwarp = 0; };
static void sim(const std::vector<float>& s, int k, const Cfg& c, Acc& a) {
    const int W = int(s.size()), block = 256;
    float T = -INFINITY, pending = -INFINITY;
    int publish_at = -1, estimates = 0;
    std::vector<int> cnt(16, 0);
    std::vector<float> cand;
    const bool estimate = W > c.W0;
    for (int b = 0; b * block < W; ++b) {
        if (b == publish_at) T = std::max(T, pending);
        for (int i = 0; i < block && b * block + i < W; ++i) {
            const float x = s[size_t(b * block + i)];
            if (x >= T) { cnt[size_t(i / 16)]++; cand.push_back(x); }
        }
        const int seen = std::min(W, (b + 1) * block);
        if (estimate && estimates == 0 && seen >= c.E && seen < W) {
            const double r0 = double(k) * seen / W;
            const int r = int(std::ceil(r0 + 4 * std::sqrt(r0)));
            int above = 0; for (float x : cand) above += x >= T;
            if (r <= above) {  // the r-th best of the keys seen is among the candidates
                pending = kth_largest(cand, r);
                publish_at = b + 1 + c.D;
                ++estimates;
            }
        }
    }
    int final_items = 0; for (float x : cand) final_items += x >= T;
    a.rows++; a.appended += cand.size(); a.final_items += final_items; a.estimates += estimates;
    a.fail += estimate && final_items < k;
    const int mw = *std::max_element(cnt.begin(), cnt.end());
    a.maxwarp = std::max(a.maxwarp, mw); a.maxwarp_sum += mw;
}
// prefill-v12-warp-appends.patch's rules on the same row: chunks of 1920 keys; the math appends a chunk's keys at
// or above the threshold the selector had `lag` chunks earlier; the selector keeps the best k of a list that the
// chunk could overflow (4096), gathers what reaches its current threshold, and estimates once (window over 4096,
// at least 1024 keys in, more to come: keep the best r of them). Counts per row: the math's stores, the selector's
// gathered entries, its keeps (selections before the final one), the final list, and whether it came up short.
struct AccV12 { double rows = 0, stored = 0, gathered = 0, keeps = 0, final_items = 0, shortrows = 0; };
static void sim_v12(const std::vector<float>& s, int k, int lag, AccV12& a) {
    const int W = int(s.size()), chunk = 1920, cap = 4096;
    std::vector<float> list, thr_after;  // the selector's threshold after each chunk
    float thr = -INFINITY;
    bool estimated = false, tried = false;
    double stored = 0, gathered = 0, keeps = 0;
    auto keep = [&](int r) {  // the best r of the list; the threshold just above the r-th (ties: rare on floats)
        const float kth = kth_largest(list, r);
        std::vector<float> kept;
        for (float x : list) if (x > kth) kept.push_back(x);
        for (float x : list) if (x == kth && int(kept.size()) < r) kept.push_back(x);
        list = kept;
        thr = std::max(thr, std::nextafter(kth, INFINITY));
        ++keeps;
    };
    for (int c = 0; c * chunk < W; ++c) {
        const float math_thr = c - lag >= 0 ? thr_after[size_t(c - lag)] : -INFINITY;
        std::vector<float> app;
        for (int p = c * chunk; p < std::min(W, (c + 1) * chunk); ++p)
            if (s[size_t(p)] >= math_thr) app.push_back(s[size_t(p)]);
        stored += app.size();
        if (int(list.size() + app.size()) > cap) { estimated = false; keep(k); }
        for (float x : app) if (x >= thr) { list.push_back(x); ++gathered; }
        const int n = int(list.size());
        if (W > cap && !tried && thr == -INFINITY && n >= 1024 && W > (c + 1) * chunk) {
            tried = true;
            const double r0 = double(k) * n / W;
            const int r = int(std::ceil(r0 + 4 * std::sqrt(r0)));
            if (r < n) { keep(r); estimated = true; }
        }
        thr_after.push_back(thr);
    }
    a.rows++; a.stored += stored; a.gathered += gathered; a.keeps += keeps; a.final_items += list.size();
    a.shortrows += estimated && int(list.size()) < k;
}

int main(int argc, char** argv) {
    const int S = argc > 1 ? atoi(argv[1]) : 16384, front = argc > 2 ? atoi(argv[2]) : 0;
    const int samples = argc > 3 ? atoi(argv[3]) : 64, k = 2048, H = 64;
    RaggedCase c(H, S, causal_windows({S}, {S}));
    Rng rng(99); fill_spec6(c, rng);
    for (int i = 0; i < front && i < S; ++i) c.k_scale[size_t(i)] *= 4.0f;
    const Cfg cfgs[] = {{1024, 4, 4096}, {1024, 16, 4096}, {512, 8, 4096}, {512, 4, 2048}, {256, 4, 2048}};
    const int nc = int(sizeof(cfgs) / sizeof(cfgs[0]));
    std::vector<Acc> acc(static_cast<size_t>(nc));
    std::vector<AccV12> v12(2);
    for (int si = 0; si < samples; ++si) {
        const int row = int((int64_t(si) * (S - 1)) / (samples - 1));
        const int W = row + 1;
        if (W <= k) continue;
        const std::vector<float> sc = causal_row_scores(c, H, row);
        for (int i = 0; i < nc; ++i) sim(sc, k, cfgs[i], acc[size_t(i)]);
        for (int lag = 1; lag <= 2; ++lag) sim_v12(sc, k, lag, v12[size_t(lag - 1)]);
    }
    for (int lag = 1; lag <= 2; ++lag) {
        const AccV12& a = v12[size_t(lag - 1)];
        printf("S %5d front %5d v12 rules, the math %d chunk(s) behind: rows %2.0f: stored %5.0f gathered %5.0f keeps %.2f "
               "final items %5.0f short %.0f\n",
               S, front, lag, a.rows, a.stored / a.rows, a.gathered / a.rows, a.keeps / a.rows, a.final_items / a.rows,
               a.shortrows);
    }
    for (int i = 0; i < nc; ++i) {
        const Acc& a = acc[size_t(i)];
        printf("S %5d front %5d E %4d D %2d W0 %4d rows %2.0f: appended %5.0f final items %5.0f estimated %.2f "
               "fail %.0f per-warp max mean %3.0f max %3d\n",
               S, front, cfgs[i].E, cfgs[i].D, cfgs[i].W0, a.rows,
               a.appended / a.rows, a.final_items / a.rows, a.estimates / a.rows, a.fail, a.maxwarp_sum / a.rows,
               a.maxwarp);
    }
}

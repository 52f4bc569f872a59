// Simulates the prefill kernel's candidate rules on the benchmark's inputs (a causal sequence of S tokens from
// bench/workloads.cpp's generator, optionally front-loaded), row by row for a sample of rows, on the CPU: main's
// running threshold (compaction past 4032 candidates keeping k), est3 (session 17's estimate at a long row's
// first compaction), early (est3 with session 18's early threshold for rows of 4097..16384 keys: main since
// 8a7567b), k1024 (bench/experiments/prefill-estimate-at-1024.patch: main's rule since session 25) and pastk
// (bench/experiments/prefill-estimates-past-k-plus-1024.patch: every row of more than k + 1024 keys). Prints per row
// of more than k keys: compactions, early threshold passes, re-scorings, the final candidate count (and how many
// rows' final selections fall in each width's range: 20, 24, 28 or 32 items per thread). Scores are
// float64 sums rounded to float (ties aside, the kernel's order); admission is per 64-key tile as in the kernel.
// Build against a CPU build of the repository (build/ with DSA_BUILD_TESTS), e.g.:
//   g++ -O2 -std=c++17 -Iinclude -Itests bench/experiments/prefill_candidate_sim.cpp \
//       build/libdsa_test_util.a -Lbuild -ldsa_indexer -Wl,-rpath,$PWD/build -o /tmp/sim
//   /tmp/sim S [front_keys] [sampled_rows]      e.g. /tmp/sim 16384 8192 96
// (front_keys < 0: the last -front_keys keys scaled x4 instead of the first: later keys outscore earlier ones)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>
#include "causal_row_scores.hpp"
#include "test_util.hpp"
using namespace dsa_test;

struct Stats {
    double compactions = 0, early = 0, redo = 0, final_count = 0;
    int rows = 0;
    int selected[4] = {0, 0, 0, 0};  // rows ending with k < n <= 2560, <= 3072, <= 3584, more candidates
    int wrong = 0;                // rows not scored again whose buffer's best k are not the row's best k
};

static float kth_largest(std::vector<float> v, int k) {  // k-th best (1-based)
    std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
    return v[k - 1];
}

// mode 0 main, 1 est3, 2 early+est3 (with guard irrelevant per row), 3 keep1024 (every row longer than the
// buffer compacts to its estimate at 1024 candidates; no threshold pass, no est3), 4 pastk (keep1024 for every
// row of more than k + 1024 keys)
static void simulate(const std::vector<float>& s, int k, int mode, Stats& st) {
    const int W = int(s.size());
    const int cap = 4096, compact_at = 4032, tile = 64;
    std::vector<float> buf;
    float thr = -INFINITY; bool thr_strict = false;  // admit s > thr (strict) or s >= thr
    bool est = false; int below = 0; bool early_done = false, forced = false;
    int comps = 0, early = 0;
    const bool early_ok = mode == 2 && W > cap && W <= 16384;
    for (int t0 = 0; t0 < W; t0 += tile) {
        for (int p = t0; p < std::min(W, t0 + tile); ++p)
            if (thr_strict ? s[p] > thr : s[p] >= thr) buf.push_back(s[p]);
        const int n = int(buf.size());
        if (early_ok && !early_done && n >= 1024) {
            early_done = true; ++early;
            const double r0 = double(k) * n / W;
            const int r = std::min(n - 1, int(std::ceil(r0 + 4 * std::sqrt(r0))));
            thr = kth_largest(buf, r); thr_strict = false;
            int reach = 0; for (float x : buf) reach += x >= thr;
            est = true; below = n - reach;
            continue;
        }
        const bool keep1024 = ((mode == 3 && W > cap) || (mode == 4 && W > k + 1024)) && comps == 0 && n >= 1024;
        if (n > compact_at || keep1024) {
            ++comps;
            int keep = k;
            const bool first = !early_done && comps == 1;
            if ((mode == 1 || mode == 2) && first && W >= 8192 && W >= 4 * k) {
                const double r0 = double(k) * n / W;
                keep = std::min(k, int(std::ceil(r0 + 4 * std::sqrt(r0))));
            }
            if (keep1024) {
                const double r0 = double(k) * n / W;
                keep = std::min({k, n - 1, int(std::ceil(r0 + 4 * std::sqrt(r0)))});
            }
            if (keep < k) { est = true; below = 0; }
            else if (est) { if (n - below >= k) est = false; else forced = true; }
            const float kth = kth_largest(buf, keep);
            std::vector<float> kept; for (float x : buf) if (x > kth) kept.push_back(x);
            for (float x : buf) if (x == kth && int(kept.size()) < keep) kept.push_back(x);
            buf = kept; thr = kth; thr_strict = true; below = est ? 0 : below;
        }
    }
    const int n = int(buf.size());
    const bool redo = forced || (est && n - below < k);
    st.compactions += comps; st.early += early; st.redo += redo; st.final_count += n; st.rows++;
    if (n > k) st.selected[n <= 2560 ? 0 : n <= 3072 ? 1 : n <= 3584 ? 2 : 3]++;
    if (!redo) {  // the rule's claim: a row that is not scored again holds its best k (as scores)
        std::vector<float> got = buf, want = s;
        std::sort(got.begin(), got.end(), std::greater<float>());
        std::sort(want.begin(), want.end(), std::greater<float>());
        const size_t m = size_t(std::min(k, W));
        st.wrong += got.size() < m || !std::equal(want.begin(), want.begin() + m, got.begin());
    }
}

int main(int argc, char** argv) {
    const int S = argc > 1 ? atoi(argv[1]) : 16384, front = argc > 2 ? atoi(argv[2]) : 0;
    const int samples = argc > 3 ? atoi(argv[3]) : 96, k = 2048, H = 64;
    RaggedCase c(H, S, causal_windows({S}, {S}));
    Rng rng(99);
    fill_spec6(c, rng);
    for (int i = 0; i < front && i < S; ++i) c.k_scale[size_t(i)] *= 4.0f;
    for (int i = std::max(0, S + front); front < 0 && i < S; ++i) c.k_scale[size_t(i)] *= 4.0f;  // recency
    Stats st[5];
    for (int si = 0; si < samples; ++si) {
        const int row = int((int64_t(si) * (S - 1)) / (samples - 1));
        const int W = row + 1;
        if (W <= k) continue;
        const std::vector<float> sc = causal_row_scores(c, H, row);
        for (int m = 0; m < 5; ++m) simulate(sc, k, m, st[m]);
    }
    const char* names[5] = {"main", "est3", "early", "k1024", "pastk"};
    for (int m = 0; m < 5; ++m)
        printf("S %d front %d %-5s rows %d (of W > k): compactions/row %.2f early/row %.2f redo/row %.3f "
               "final count %.0f, final selections of <= 2560 / <= 3072 / <= 3584 / more: %d / %d / %d / %d, "
               "wrong %d\n",
               S, front, names[m], st[m].rows, st[m].compactions / st[m].rows, st[m].early / st[m].rows,
               st[m].redo / st[m].rows, st[m].final_count / st[m].rows, st[m].selected[0], st[m].selected[1],
               st[m].selected[2], st[m].selected[3], st[m].wrong);
}

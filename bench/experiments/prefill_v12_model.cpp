// A sequential model of prefill v12's candidate rules (bench/experiments/prefill-v12-warp-appends.patch), checked
// against an exact top-k on synthetic scores: per job of two rows (windows causal or anywhere), the math appends
// a chunk's keys at or above the threshold the selector had `lag` chunks earlier (1-3: the math runs ahead), the
// selector keeps the best k of a list the chunk could overflow, gathers what reaches its current threshold, makes
// the one-time estimate (windows over 4096, at least 1024 keys in, more to come), and a job with an estimated row
// left short of k is scored again without estimates. keep_best's threshold is the kernel's: k-th key + 1, or the
// lowest key of a bin whose items were all kept. Scores: normal, heavily tied (rounded), falling or rising along
// the window (estimates fail or hold), with NaNs; k 2048 or any 1..2048. Exit status 1 on a wrong row.
//   g++ -O2 -std=c++17 bench/experiments/prefill_v12_model.cpp -o /tmp/v12model && /tmp/v12model [cases]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
static uint32_t okey(float s) {
    uint32_t b; std::memcpy(&b, &s, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0u;
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
struct Cand { uint32_t key; int pos; };
static bool better(const Cand& a, const Cand& b) { return a.key != b.key ? a.key > b.key : a.pos < b.pos; }
// best r of v (exact), in position order; returns the threshold keep_best returns: kth+1 (exact) or, when
// `loose`, the lowest key of a 2^bits-wide bin holding the kth (a lower bound).
static uint32_t keep_best(std::vector<Cand>& v, int r, bool loose, std::mt19937& rng) {
    std::vector<Cand> s = v;
    std::nth_element(s.begin(), s.begin() + (r - 1), s.end(), better);
    const Cand kth = s[r - 1];
    std::vector<Cand> kept;
    for (auto& c : v) if (better(c, kth) || (c.key == kth.key && c.pos == kth.pos)) kept.push_back(c);
    v = kept;  // position order kept (v was in position order)
    // The kernel's refinement stops early only when the threshold bin holds exactly what is still needed: then
    // every item of the bin is kept and the bin's lowest key is returned; else (all 32 bits known) kth + 1.
    if (loose) {
        const int bits = 1 + int(rng() % 11);
        const uint32_t low = kth.key & ~((1u << bits) - 1u);
        int reach = 0;
        for (auto& c : s) reach += c.key >= low;
        if (reach == r) return low;
    }
    return kth.key == 0xffffffffu ? kth.key : kth.key + 1;
}
constexpr int kBlock = 192, kChunkBlocks = 10, kChunk = kBlock * kChunkBlocks, kListCap = 4096, kEstAt = 1024;
static int estimate_rank(int k, int n, int w) { const float r0 = float(k) * n / w; return int(std::ceil(r0 + 4.0f * r0 / std::sqrt(r0))); }
int main(int argc, char** argv) {
    const int cases = argc > 1 ? atoi(argv[1]) : 300;
    std::mt19937 rng(7);
    int wrong = 0, redos = 0, estimates = 0, compactions = 0;
    for (int cs = 0; cs < cases; ++cs) {
        const int N = 500 + int(rng() % 40000);
        const int k = (rng() % 3 == 0) ? 1 + int(rng() % 2048) : 2048;
        const int kind = int(rng() % 5);  // 0 random, 1 heavy ties, 2 falling, 3 rising, 4 with NaNs
        std::vector<float> sc(N);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (int i = 0; i < N; ++i) {
            float x = nd(rng);
            if (kind == 1) x = std::round(x * 2.f);
            if (kind == 2) x += 8.f * (N - i) / N;
            if (kind == 3) x += 8.f * i / N;
            if (kind == 4 && rng() % 7 == 0) x = NAN;
            sc[i] = x;
        }
        // two rows: windows (shared scores for simplicity: each row has its own window)
        int st[2], en[2];
        for (int j = 0; j < 2; ++j) {
            if (rng() % 2) { st[j] = 0; en[j] = N - int(rng() % 3); }
            else { st[j] = int(rng() % (N / 2)); en[j] = st[j] + 1 + int(rng() % (N - st[j])); }
        }
        const int lo = std::min(st[0], st[1]), hi = std::max(en[0], en[1]);
        const int blocks = (hi - lo + kBlock - 1) / kBlock;
        const int lag = 1 + int(rng() % 3);
        const bool loose = rng() % 2;
        bool estimates_off = false;
        for (int attempt = 0; attempt < 2; ++attempt) {
            std::vector<Cand> list[2];
            uint32_t thr[2] = {0, 0};
            bool estimated[2] = {false, false}, tried[2] = {false, false};
            std::vector<uint32_t> thr_after_chunk[2];  // the selector's threshold after each chunk
            const int chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
            for (int c = 0; c < chunks; ++c) {
                const int clo = lo + c * kChunk;
                for (int j = 0; j < 2; ++j) {
                    // math: appends with the threshold the selector had `lag` chunks earlier
                    const uint32_t mt = c - lag >= 0 ? thr_after_chunk[j][c - lag] : 0u;
                    std::vector<Cand> app;  // position order within the chunk (the bitmap gather orders them)
                    for (int p = std::max(clo, st[j]); p < std::min(clo + kChunk, en[j]); ++p)
                        if (okey(sc[p]) >= mt) app.push_back({okey(sc[p]), p});
                    if (int(list[j].size() + app.size()) > kListCap) {
                        estimated[j] = false;
                        thr[j] = std::max(thr[j], keep_best(list[j], k, loose, rng));
                        ++compactions;
                    }
                    for (auto& a : app) if (a.key >= thr[j]) list[j].push_back(a);
                    const int n = int(list[j].size()), window = en[j] - st[j];
                    if (window > kListCap && !estimates_off && !tried[j] && thr[j] == 0u && n >= kEstAt &&
                        en[j] > clo + kChunk) {
                        tried[j] = true;
                        const int r = estimate_rank(k, n, window);
                        if (r < n) { thr[j] = keep_best(list[j], r, loose, rng); estimated[j] = true; ++estimates; }
                    }
                    thr_after_chunk[j].push_back(thr[j]);
                }
            }
            bool shortrow = false;
            for (int j = 0; j < 2; ++j) shortrow |= estimated[j] && int(list[j].size()) < k;
            if (shortrow) { ++redos; estimates_off = true; continue; }
            for (int j = 0; j < 2; ++j) {
                std::vector<Cand> all;
                for (int p = st[j]; p < en[j]; ++p) all.push_back({okey(sc[p]), p});
                const int take = std::min<int>(k, int(all.size()));
                std::vector<Cand> want = all, got = list[j];
                std::sort(want.begin(), want.end(), better); want.resize(take);
                std::sort(got.begin(), got.end(), better); got.resize(std::min<size_t>(got.size(), size_t(take)));
                bool ok = got.size() == want.size();
                for (size_t i = 0; ok && i < want.size(); ++i) ok = got[i].pos == want[i].pos;
                if (!ok) { ++wrong; if (wrong < 5) printf("WRONG case %d kind %d N %d k %d row %d window [%d,%d) lag %d loose %d\n", cs, kind, N, k, j, st[j], en[j], lag, loose); }
            }
            break;
        }
    }
    printf("%d cases: wrong rows %d, redos %d, estimates %d, compactions %d\n", cases, wrong, redos, estimates, compactions);
    return wrong != 0;
}

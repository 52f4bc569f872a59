// dsa_bench's input cache (input_cache.hpp): a case read back from the cache holds exactly the inputs its workload
// draws without one; a file that is short, longer, or of another workload is never used, but replaced.
// usage: dsa_bench_input_cache_test (ctest bench_input_cache); exits 1 on the first failed check.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "workloads.hpp"

namespace fs = std::filesystem;
using dsa_bench::RaggedWorkload;
using dsa_bench::Workload;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    if (!ok) ++failures;
}

bool same(const dsa_test::PagedCase& a, const dsa_test::PagedCase& b) {
    return a.q == b.q && a.k_cache == b.k_cache && a.weights == b.weights && a.block_table == b.block_table &&
           a.seq_lens == b.seq_lens;
}
bool same(const dsa_test::RaggedCase& a, const dsa_test::RaggedCase& b) {
    return a.q == b.q && a.k == b.k && a.k_scale == b.k_scale && a.weights == b.weights &&
           a.row_start == b.row_start && a.row_end == b.row_end;
}

std::vector<fs::path> files_in(const fs::path& dir) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
    return files;
}

// Runs make(dir, &cached) and checks where the case came from and that it equals `drawn`.
template <class Case, class Make>
void expect(const Case& drawn, Make make, const std::string& dir, bool want_cached, const std::string& what) {
    bool cached = !want_cached;
    const Case c = make(dir, &cached);
    check(cached == want_cached && same(c, drawn),
          what + (want_cached ? ": read from the cache" : ": drawn") + ", the same inputs");
}

}  // namespace

int main() {
    const fs::path dir = fs::temp_directory_path() / ("dsa_input_cache_test." + std::to_string(::getpid()));
    fs::remove_all(dir);

    Workload w;
    w.name = "3x700_next_n2";
    w.seq_lens = {700, 1, 130};
    w.next_n = 2;
    w.heads = 32;
    w.seed = 5;
    Workload other = w;
    other.seed = 6;
    auto paged = [](const Workload& of) {
        return [of](const std::string& d, bool* cached) { return dsa_bench::paged_case_of(of, d, cached); };
    };
    const dsa_test::PagedCase drawn = dsa_bench::paged_case_of(w);
    const dsa_test::PagedCase drawn_other = dsa_bench::paged_case_of(other);
    check(!same(drawn, drawn_other), "workloads of different seeds draw different inputs");

    expect(drawn, paged(w), dir.string(), false, "first run");
    const std::vector<fs::path> first = files_in(dir);
    check(first.size() == 1, "one file written");
    expect(drawn, paged(w), dir.string(), true, "second run");
    expect(drawn_other, paged(other), dir.string(), false, "another seed");
    check(files_in(dir).size() == 2, "a file per workload");
    const fs::path file = first.at(0);
    const auto whole = fs::file_size(file);

    fs::resize_file(file, whole / 2);
    expect(drawn, paged(w), dir.string(), false, "a short file");
    check(fs::file_size(file) == whole, "the short file replaced");
    std::ofstream(file, std::ios::app | std::ios::binary) << 'x';
    expect(drawn, paged(w), dir.string(), false, "a file with a byte too many");
    expect(drawn, paged(w), dir.string(), true, "the replaced file");
    for (const fs::path& f : files_in(dir))
        if (f != file) fs::copy_file(f, file, fs::copy_options::overwrite_existing);  // the other seed's inputs
    expect(drawn, paged(w), dir.string(), false, "a file of another workload under this one's name");
    expect(drawn, paged(w), "", false, "no cache (an empty directory name)");
    bool cached = true;
    const dsa_test::PagedCase unwritable = dsa_bench::paged_case_of(w, "/proc/dsa_no_such_dir", &cached);
    check(!cached && same(unwritable, drawn), "an unwritable directory: drawn, with a warning");

    RaggedWorkload r;
    r.name = "mix";
    r.key_lens = {300, 50};
    r.query_lens = {300, 20};
    r.heads = 32;
    r.seed = 3;
    r.front_keys = 10;  // applied after the cache: scaled once whether drawn or read
    auto ragged = [&r](const std::string& d, bool* c) { return dsa_bench::ragged_case_of(r, d, c); };
    const dsa_test::RaggedCase ragged_drawn = dsa_bench::ragged_case_of(r);
    expect(ragged_drawn, ragged, dir.string(), false, "ragged, first run");
    expect(ragged_drawn, ragged, dir.string(), true, "ragged, second run");

    fs::remove_all(dir);
    std::printf("%s\n", failures == 0 ? "input cache: all checks passed" : "input cache: FAILED");
    return failures == 0 ? 0 : 1;
}

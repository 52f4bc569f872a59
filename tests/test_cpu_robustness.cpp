// Resource exhaustion: "no call aborts the process" (dsa_indexer.h).
#include <functional>

#if defined(__linux__)
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#endif

#include "test_cpu_common.hpp"

using namespace dsa_test;

#if defined(__linux__)
namespace {

int64_t address_space_bytes() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmSize:", 0) == 0) return std::stoll(line.substr(7)) * 1024;
    return -1;
}

// Runs `child` in a forked process whose address space may grow by `headroom` bytes only; "" when it
// exits with 0, else how it ended. The limit stays in the child; Catch's signal handlers are dropped there.
std::string run_in_limited_child(int64_t headroom, const std::function<int()>& child) {
    const int64_t now = address_space_bytes();
    if (now < 0) return "cannot read VmSize";
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) signal(sig, SIG_DFL);
        const rlimit limit{rlim_t(now + headroom), rlim_t(now + headroom)};
        setrlimit(RLIMIT_AS, &limit);
        _exit(child());
    }
    int wait_status = 0;
    if (pid < 0 || waitpid(pid, &wait_status, 0) != pid) return "fork/waitpid failed";
    if (WIFSIGNALED(wait_status))
        return "the process was killed by signal " + std::to_string(WTERMSIG(wait_status)) +
               (WTERMSIG(wait_status) == SIGABRT ? " (SIGABRT: std::terminate)" : "");
    return WEXITSTATUS(wait_status) == 0 ? "" : "the child reported exit code " + std::to_string(WEXITSTATUS(wait_status));
}

}  // namespace

TEST_CASE("running out of threads or memory gives a status, never an abort", "[cpu][robustness]") {
    // num_cpu_threads 512 is accepted; with 512 sequences every phase wants 512 workers. Under an address-space
    // limit well below 512 thread stacks, creating a worker fails part-way: the call must return an error
    // status with nothing written (or succeed with a valid result), not take the process down.
    const PagedCase c = random_paged(layout_of(32, 32, 1), std::vector<int32_t>(512, 40), 191);
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.num_cpu_threads = 512;
    dsa_context_t ctx = nullptr;
    REQUIRE(dsa_context_create(&config, &ctx) == DSA_STATUS_SUCCESS);
    TopkOutput out(c.rows(), 8, true);
    const std::string outcome = run_in_limited_child(int64_t(256) << 20, [&] {
        const dsa_status_t status = run_paged(ctx, c, 8, 0, out);
        if (status == DSA_STATUS_SUCCESS) return check_valid(c, 8, 0, out.indices(), out.scores()).empty() ? 0 : 10;
        std::fprintf(stderr, "under the limit: %s\n", describe_status(status).c_str());
        return out.untouched() ? 0 : 11;  // a failed call must not have written the outputs
    });
    CHECK(outcome == "");
    CHECK(dsa_context_destroy(ctx) == DSA_STATUS_SUCCESS);
}
#endif

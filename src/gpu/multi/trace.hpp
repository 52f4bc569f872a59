// DSA_INDEXER_TRACE=1: the multi-GPU owned-cache calls print to stderr where their time goes, one line
// per call: host wall-clock microseconds of each phase. While tracing, each phase ends by waiting for the
// GPUs, so device time lands in the phase that queued it (and the call itself runs slower). Off (the
// default): no waits and no output.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace dsa {

class PhaseTrace {
public:
    // call: the name printed; nullptr makes a trace that stays off.
    explicit PhaseTrace(const char* call) : call_(call), on_(call && enabled()) { last_ = start_ = now(); }
    ~PhaseTrace() {
        if (on_) std::fprintf(stderr, "dsa_indexer trace: %s%s total %.1f us\n", call_, text_.c_str(), since(start_));
    }
    PhaseTrace(const PhaseTrace&) = delete;
    PhaseTrace& operator=(const PhaseTrace&) = delete;

    bool on() const { return on_; }
    // Ends a phase: wait() (only called while tracing) makes queued GPU work part of it.
    template <class Wait>
    void phase(const char* name, Wait&& wait) {
        if (!on_) return;
        wait();
        text_ += std::string(" | ") + name + " " + std::to_string(int64_t(since(last_))) + " us";
        last_ = now();
    }

private:
    using Clock = std::chrono::steady_clock;
    static Clock::time_point now() { return Clock::now(); }
    double since(Clock::time_point t) const { return std::chrono::duration<double, std::micro>(now() - t).count(); }
    static bool enabled() {
        const char* env = std::getenv("DSA_INDEXER_TRACE");
        return env && *env && std::string(env) != "0";
    }

    const char* call_;
    bool on_;
    Clock::time_point start_, last_;
    std::string text_;
};

}  // namespace dsa

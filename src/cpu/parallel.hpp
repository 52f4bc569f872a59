// A minimal fork-join loop for the CPU backend: items [0, n) handed out one at a time from an atomic
// counter, so uneven items (long and short sequences) balance. The first exception is rethrown.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace dsa {

template <class Fn>
void parallel_for(int64_t n, int threads, Fn&& fn) {
    const int workers = int(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
    if (workers == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next{0};
    std::exception_ptr first_error;
    std::mutex error_mutex;
    auto work = [&] {
        try {
            for (int64_t i = next++; i < n; i = next++) fn(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!first_error) first_error = std::current_exception();
            next = n;  // stop handing out items
        }
    };
    std::vector<std::thread> pool;
    try {
        pool.reserve(workers - 1);
        for (int t = 1; t < workers; ++t) pool.emplace_back(work);
    } catch (const std::exception&) {
        // No more threads (or memory for them): the threads started so far and this one do all the work.
    }
    work();
    for (auto& thread : pool) thread.join();
    if (first_error) std::rethrow_exception(first_error);
}

}  // namespace dsa

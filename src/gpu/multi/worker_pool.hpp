// Persistent host threads, one per extra GPU of a context: per-call work on several GPUs (host staging,
// copies, launches) runs in parallel without creating threads per call, which costs ~100 us each on
// some virtual machines. Waiting threads spin briefly before they sleep, as calls come in bursts and a
// condition-variable wake-up costs tens of microseconds there too. Where threads cannot be created, the
// caller runs the work itself, in order.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsa {

class WorkerPool {
public:
    explicit WorkerPool(size_t workers) {
        try {
            for (size_t t = 0; t < workers; ++t) threads_.emplace_back([this, t] { loop(t + 1); });
        } catch (const std::exception&) {
            // fewer threads (or none): run() gives the rest to the calling thread
        }
    }
    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        start_.notify_all();
        for (std::thread& t : threads_) t.join();
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    // fn(i) for every i in [0, n): 0 and whatever no worker takes on the calling thread, 1 .. workers on
    // the workers. Returns when all are done; rethrows the first exception. One run() at a time (the
    // context's lock); fn must not call run().
    void run(size_t n, const std::function<void(size_t)>& fn) {
        const size_t on_workers = n > 0 ? std::min(n - 1, threads_.size()) : 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = &fn;
            task_count_ = 1 + on_workers;
            error_ = nullptr;
            pending_.store(on_workers);
            generation_.fetch_add(1, std::memory_order_release);
        }
        if (on_workers) start_.notify_all();
        for (size_t i = 0; i < n; i = (i == 0 ? 1 + on_workers : i + 1)) guarded(fn, i);
        if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return pending_.load() == 0; });
        }
        std::lock_guard<std::mutex> lock(mutex_);
        task_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
    // Spins up to kSpin for done(); false if it did not come.
    template <class Done>
    static bool spin_until(Done&& done) {
        constexpr auto kSpin = std::chrono::microseconds(300);
        const auto until = std::chrono::steady_clock::now() + kSpin;
        while (!done()) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::yield();
        }
        return true;
    }

    void guarded(const std::function<void(size_t)>& fn, size_t i) {
        try {
            fn(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
    }

    void loop(size_t index) {
        uint64_t seen = 0;
        for (;;) {
            if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
                std::unique_lock<std::mutex> lock(mutex_);
                start_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
                if (stop_) return;
            }
            const std::function<void(size_t)>* fn;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (stop_) return;
                seen = generation_.load();
                if (index >= task_count_) continue;  // not needed this time
                fn = task_;
            }
            guarded(*fn, index);
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);
                done_.notify_all();
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable start_, done_;
    const std::function<void(size_t)>* task_ = nullptr;  // guarded by mutex_
    size_t task_count_ = 0;                              // guarded by mutex_
    bool stop_ = false;                                  // guarded by mutex_
    std::exception_ptr error_;                           // guarded by mutex_
    std::atomic<uint64_t> generation_{0};
    std::atomic<size_t> pending_{0};
};

}  // namespace dsa

// Persistent host threads, one per extra GPU of a context: per-call work on several GPUs (host staging,
// copies, launches) runs in parallel without creating threads per call, which costs ~100 us each on
// some virtual machines. Where threads cannot be created, the caller runs the work itself, in order.
#pragma once

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
    // the workers. Returns when all are done; rethrows the first exception. fn must not call run().
    void run(size_t n, const std::function<void(size_t)>& fn) {
        const size_t on_workers = n > 0 ? std::min(n - 1, threads_.size()) : 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = &fn;
            task_count_ = 1 + on_workers;
            pending_ = on_workers;
            error_ = nullptr;
            ++generation_;
        }
        if (on_workers) start_.notify_all();
        for (size_t i = 0; i < n; i = (i == 0 ? 1 + on_workers : i + 1)) guarded(fn, i);
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return pending_ == 0; });
        task_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
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
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            start_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            if (index >= task_count_) continue;  // not needed this time
            const std::function<void(size_t)>* fn = task_;
            lock.unlock();
            guarded(*fn, index);
            lock.lock();
            if (--pending_ == 0) done_.notify_all();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable start_, done_;
    const std::function<void(size_t)>* task_ = nullptr;
    size_t task_count_ = 0, pending_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

}  // namespace dsa

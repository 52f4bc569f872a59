// Version macros, status strings and the per-thread last error message.
#include <future>
#include <thread>

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("version macros match the library", "[cpu][api]") {
    STATIC_REQUIRE(DSA_VERSION_NUMBER == DSA_VERSION_MAJOR * 10000 + DSA_VERSION_MINOR * 100 + DSA_VERSION_PATCH);
    CHECK(dsa_version() == DSA_VERSION_NUMBER);
}

TEST_CASE("every status has its name, others are unknown", "[cpu][api]") {
    const std::vector<std::pair<dsa_status_t, const char*>> names = {
        {DSA_STATUS_SUCCESS, "DSA_STATUS_SUCCESS"},
        {DSA_STATUS_INVALID_ARGUMENT, "DSA_STATUS_INVALID_ARGUMENT"},
        {DSA_STATUS_UNSUPPORTED, "DSA_STATUS_UNSUPPORTED"},
        {DSA_STATUS_OUT_OF_MEMORY, "DSA_STATUS_OUT_OF_MEMORY"},
        {DSA_STATUS_NO_DEVICE, "DSA_STATUS_NO_DEVICE"},
        {DSA_STATUS_CUDA_ERROR, "DSA_STATUS_CUDA_ERROR"},
        {DSA_STATUS_NCCL_ERROR, "DSA_STATUS_NCCL_ERROR"},
        {DSA_STATUS_INSUFFICIENT_WORKSPACE, "DSA_STATUS_INSUFFICIENT_WORKSPACE"},
        {DSA_STATUS_DEVICE_INPUT_ERROR, "DSA_STATUS_DEVICE_INPUT_ERROR"},
        {DSA_STATUS_NOT_IMPLEMENTED, "DSA_STATUS_NOT_IMPLEMENTED"},
        {DSA_STATUS_INTERNAL_ERROR, "DSA_STATUS_INTERNAL_ERROR"},
    };
    // The values are ABI: fixed forever.
    for (size_t i = 0; i < names.size(); ++i) {
        INFO(names[i].second);
        CHECK(int(names[i].first) == int(i));
        CHECK(std::string(dsa_status_string(names[i].first)) == names[i].second);
    }
    for (int unknown : {-1, 11, 12, 1000, std::numeric_limits<int>::max()})
        CHECK(std::string(dsa_status_string(dsa_status_t(unknown))) == "DSA_STATUS_UNKNOWN");
}

TEST_CASE("the last error message is per thread, set by a failure, cleared by a success", "[cpu][api]") {
    Context ctx;
    int32_t devices = -1;
    REQUIRE(dsa_context_num_devices(ctx.get(), nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(message_contains("out_num_devices"));
    REQUIRE(dsa_context_num_devices(ctx.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(std::string(dsa_last_error_message()).empty());
    CHECK(devices == 0);

    // Thread A fails and keeps its message while thread B starts clean, fails differently and finishes.
    std::promise<void> b_done;
    std::string a_message, a_message_after_b, b_first_message, b_message;
    std::thread a([&] {
        dsa_context_num_devices(nullptr, &devices);
        a_message = dsa_last_error_message();
        b_done.get_future().wait();
        a_message_after_b = dsa_last_error_message();
    });
    std::thread b([&] {
        b_first_message = dsa_last_error_message();
        dsa_context_num_devices(ctx.get(), nullptr);
        b_message = dsa_last_error_message();
    });
    b.join();
    b_done.set_value();
    a.join();
    CHECK(a_message.find("context") != std::string::npos);
    CHECK(a_message_after_b == a_message);
    CHECK(b_first_message.empty());
    CHECK(b_message.find("out_num_devices") != std::string::npos);
    CHECK(std::string(dsa_last_error_message()).empty());  // this thread's last call succeeded
}

// Errors inside the library: thrown as dsa::Error, turned into a dsa_status_t at the extern "C" boundary.
#pragma once

#include <exception>
#include <sstream>
#include <string>
#include <utility>

#include "dsa_indexer.h"

namespace dsa {

class Error : public std::exception {
public:
    Error(dsa_status_t status, std::string message) : status_(status), message_(std::move(message)) {}
    dsa_status_t status() const noexcept { return status_; }
    const char* what() const noexcept override { return message_.c_str(); }

private:
    dsa_status_t status_;
    std::string message_;
};

// Builds the message from any streamable pieces: fail(DSA_STATUS_UNSUPPORTED, "topk ", k, " not in [1, 2048]").
template <class... Parts>
[[noreturn]] void fail(dsa_status_t status, Parts&&... parts) {
    std::ostringstream text;
    (text << ... << std::forward<Parts>(parts));
    throw Error(status, text.str());
}

template <class... Parts>
void require(bool condition, dsa_status_t status, Parts&&... parts) {
    if (!condition) fail(status, std::forward<Parts>(parts)...);
}

}  // namespace dsa

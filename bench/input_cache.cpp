// File layout: the magic line, then uint64 fields in the machine's byte order (the files stay on the machine that
// wrote them): the description's length, the description, the number of parts and each part's size, then the parts'
// bytes back to back, nothing after them.
#include "input_cache.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <unistd.h>

namespace dsa_bench {
namespace {

constexpr char kMagic[] = "dsa_bench inputs 1\n";

uint64_t fnv1a64(const std::string& text) {
    uint64_t h = 14695981039346656037ull;
    for (unsigned char ch : text) {
        h ^= ch;
        h *= 1099511628211ull;
    }
    return h;
}

std::string file_of(const std::string& dir, const std::string& description) {
    char name[32];
    std::snprintf(name, sizeof name, "%016llx.inputs", static_cast<unsigned long long>(fnv1a64(description)));
    return dir + "/" + name;
}

using File = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

bool read_exactly(std::FILE* f, void* to, size_t bytes) { return std::fread(to, 1, bytes, f) == bytes; }
bool read_u64(std::FILE* f, uint64_t* v) { return read_exactly(f, v, sizeof *v); }
bool write_all(std::FILE* f, const void* from, size_t bytes) { return std::fwrite(from, 1, bytes, f) == bytes; }
bool write_u64(std::FILE* f, uint64_t v) { return write_all(f, &v, sizeof v); }

// The parts from `path` when its header matches; read whole into memory first, so that a short or corrupt file
// changes nothing in them.
bool read_cached(const std::string& path, const std::string& description, const std::vector<CachedBytes>& parts) {
    File f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) return false;
    char magic[sizeof kMagic - 1];
    uint64_t length = 0, count = 0;
    if (!read_exactly(f.get(), magic, sizeof magic) || std::memcmp(magic, kMagic, sizeof magic) != 0) return false;
    if (!read_u64(f.get(), &length) || length != description.size()) return false;
    std::string stored(length, '\0');
    if (!read_exactly(f.get(), stored.data(), length) || stored != description) return false;
    if (!read_u64(f.get(), &count) || count != parts.size()) return false;
    size_t total = 0;
    for (const CachedBytes& part : parts) {
        uint64_t size = 0;
        if (!read_u64(f.get(), &size) || size != part.size) return false;
        total += part.size;
    }
    std::vector<unsigned char> bytes(total);
    if (!read_exactly(f.get(), bytes.data(), total) || std::fgetc(f.get()) != EOF) return false;
    size_t at = 0;
    for (const CachedBytes& part : parts) {
        std::memcpy(part.data, bytes.data() + at, part.size);
        at += part.size;
    }
    return true;
}

// Writes a temporary file beside `path` and renames it there, so that no reader sees a partial file.
bool write_cached(const std::string& dir, const std::string& path, const std::string& description,
                  const std::vector<CachedBytes>& parts) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string temporary = path + ".tmp" + std::to_string(::getpid());
    bool ok = false;
    {
        File f(std::fopen(temporary.c_str(), "wb"), std::fclose);
        if (f) {
            ok = write_all(f.get(), kMagic, sizeof kMagic - 1) && write_u64(f.get(), description.size()) &&
                 write_all(f.get(), description.data(), description.size()) && write_u64(f.get(), parts.size());
            for (const CachedBytes& part : parts) ok = ok && write_u64(f.get(), part.size);
            for (const CachedBytes& part : parts) ok = ok && write_all(f.get(), part.data, part.size);
            ok = std::fclose(f.release()) == 0 && ok;
        }
    }
    ok = ok && std::rename(temporary.c_str(), path.c_str()) == 0;
    if (!ok) std::remove(temporary.c_str());
    return ok;
}

}  // namespace

bool fill_from_cache(const std::string& dir, const std::string& description, const std::vector<CachedBytes>& parts,
                     const std::function<void()>& generate) {
    if (dir.empty()) {
        generate();
        return false;
    }
    const std::string path = file_of(dir, description);
    if (read_cached(path, description, parts)) return true;
    generate();
    if (!write_cached(dir, path, description, parts))
        std::fprintf(stderr, "dsa_bench: cannot write the input cache file %s (inputs are generated each run)\n",
                     path.c_str());
    return false;
}

}  // namespace dsa_bench

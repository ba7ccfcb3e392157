// Helpers shared by the libFuzzer harnesses: a per-process scratch folder (for parsers that
// take a path) and a loud invariant check. The folder lives under $TMPDIR (default /tmp) and
// is removed at exit.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace mor::fuzz {

// The scratch folder of this process, created on first use (never freed: the exit handler
// that removes it may run after static destructors).
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/mor_fuzz_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror(("mkdtemp " + tmpl).c_str());
      std::abort();
    }
    auto* d = new std::string(tmpl);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

// Replaces `path` with exactly these bytes (aborts if it cannot: that is the harness failing).
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(("open " + path).c_str());
    std::abort();
  }
  size_t put = 0;
  while (put < size) {
    const ssize_t w = ::write(fd, data + put, size - put);
    if (w <= 0) {
      std::perror(("write " + path).c_str());
      std::abort();
    }
    put += static_cast<size_t>(w);
  }
  ::close(fd);
}

// An invariant of the parser under test; a violation is a bug, reported like a crash.
#define MOR_FUZZ_CHECK(cond, ...)                                                       \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                \
      std::fprintf(stderr, "\n");                                                       \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

}  // namespace mor::fuzz

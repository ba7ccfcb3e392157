// One sequential pass over a checkpoint shard file, hashed (XXH3-64) on the way.
//
// HDF5 decides where every dataset lives; these two functions move the bytes. Saving and a
// same-world-size resume then cost one pass at disk speed: no second pass to checksum, no
// library copies, and (for writes) no page cache when the file system takes O_DIRECT.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mor::ckpt {

// File bytes [off, off + len) and where they are in memory.
struct Span {
  uint64_t off = 0, len = 0;
  char* mem = nullptr;
};

// Rewrites the whole file `path` front to back: the spans' bytes from memory, every other byte as
// it already is in the file (the HDF5 metadata the library wrote around unwritten, pre-allocated
// datasets). Uses O_DIRECT when the file system accepts it (else buffered writes), fsyncs, and
// returns the XXH3-64 of the complete file. Spans must be disjoint and inside the file.
// try_direct = false always writes through the page cache; *used_direct (if given) tells
// which way the bytes went.
uint64_t stream_write(const std::string& path, std::vector<Span> spans, bool try_direct = true,
                      bool* used_direct = nullptr);

// Reads the whole file `path` front to back: the spans' bytes into memory, the rest only hashed.
// Returns the XXH3-64 of the complete file; throws naming the file if it is shorter than a span.
// Uses O_DIRECT when the file system accepts it (try_direct = false: always the page cache);
// *used_direct (if given) tells which way the bytes came.
uint64_t stream_read(const std::string& path, std::vector<Span> spans, bool try_direct = true,
                     bool* used_direct = nullptr);

}  // namespace mor::ckpt

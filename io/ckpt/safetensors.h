// Writing the safetensors format (Hugging Face's tensor files): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with
// spaces to a multiple of 8 bytes, then the tensors' bytes back to back. Above a size the tensors
// are split over several files with an index JSON, as Hugging Face's save_pretrained does:
//   DIR/model.safetensors                                   (one file)
//   DIR/model-00001-of-00003.safetensors ... + DIR/model.safetensors.index.json   (several)
// mor-dist only writes these files (`mor-dist export`); it never parses them.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mor::io {

struct SafeTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;  // numel(shape) fp32 values (written as "F32", little-endian)
};

// Writes `tensors` into dir (which must exist), at most max_file_bytes of tensor data per file (a
// tensor larger than that gets a file of its own; it is never split); file order = tensor order.
// Every file is written to a .tmp name, fsynced and renamed. Returns the files written.
std::vector<std::string> write_safetensors(const std::string& dir, const std::vector<SafeTensor>& tensors,
                                           int64_t max_file_bytes, const std::map<std::string, std::string>& metadata);

// A JSON string literal of s (quotes, backslash and control characters escaped).
std::string json_string(const std::string& s);
// Writes text to path through path.tmp + fsync + rename; throws naming the file on any failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace mor::io

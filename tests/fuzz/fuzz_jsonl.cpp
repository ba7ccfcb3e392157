// Fuzzes the JSONL line parser of `mor-dist prepare` (io/data/prepare.h, parse_jsonl_text), with
// nlohmann::json as the reference (differential): a line is accepted exactly when it is one
// valid JSON object whose "text" member (the last one) is a string, and the text is the same.
// Differences the reference has by design are left out: it skips a leading UTF-8 BOM, takes a
// NUL byte for the end of the input (ours: an error, as Python's json), rejects numbers that
// overflow a double, and has no nesting limit (ours: 1000).
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "io/data/prepare.h"

using namespace mor::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  std::string text = "stale", detail;
  BadLine kind = BadLine::kMalformedJson;
  const bool ok = parse_jsonl_text(line, &text, &kind, &detail);
  if (!ok) {
    MOR_FUZZ_CHECK(!detail.empty(), "a bad line without a reason");
    MOR_FUZZ_CHECK(static_cast<int>(kind) >= 0 && static_cast<int>(kind) < kNumBadLineKinds, "bad kind");
    if (detail.find("nesting deeper") != std::string::npos) return 0;
  }
  if (size >= 3 && std::memcmp(data, "\xEF\xBB\xBF", 3) == 0) return 0;
  if (std::memchr(data, 0, size) != nullptr) return 0;

  bool ref_ok = false;
  std::string ref_text;
  try {
    const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end());
    if (j.is_object()) {
      const auto it = j.find("text");
      if (it != j.end() && it->is_string()) {
        ref_ok = true;
        ref_text = it->get<std::string>();
      }
    }
  } catch (const nlohmann::json::out_of_range&) {  // number overflow: Python's json reads it as inf
    return 0;
  } catch (const nlohmann::json::parse_error&) {}
  MOR_FUZZ_CHECK(ok == ref_ok, "parse_jsonl_text %s (%s) but nlohmann::json %s", ok ? "accepts" : "rejects",
                 detail.c_str(), ref_ok ? "accepts" : "rejects");
  if (ok) MOR_FUZZ_CHECK(text == ref_text, "text differs (%zu vs %zu bytes)", text.size(), ref_text.size());
  return 0;
}

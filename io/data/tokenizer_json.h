// What a tokenizer.json says, checked (tokenizer_json.cpp), from which Tokenizer (tokenizer.cpp)
// builds its encoder: loading is kept apart from the hot encoding code. Internal to io/data.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mor::io::tok {

// One pre-tokenizer step; steps[k] splits the pieces of steps[k - 1].
enum class PreStep { kGpt2, kDigitsIndividual, kDigitsRuns };

struct TokenizerSpec {
  std::vector<PreStep> steps;
  bool add_prefix_space = false;
  bool ignore_merges = false;
  uint32_t vocab_size = 0;  // 1 + the largest id
  std::optional<uint32_t> eot;
  std::array<uint32_t, 256> byte_id{};  // id of each byte's symbol
  std::vector<std::string> id_bytes;    // raw bytes of every id
  std::vector<uint8_t> id_known;
  std::unordered_map<std::string, uint32_t> str_to_id;    // tokenizer.json strings
  std::unordered_map<std::string, uint32_t> bytes_to_id;  // raw bytes of model.vocab tokens
  std::vector<std::array<uint32_t, 3>> merges;            // ids of (a, b, a + b), by rank
};

// Parses and checks the JSON text; throws std::runtime_error "NAME: what is wrong" naming the
// field. nlohmann::json's own exceptions (a type mismatch no check caught) pass through.
TokenizerSpec parse_tokenizer_json(std::string_view text, const std::string& name);

}  // namespace mor::io::tok

// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json`
// (GPT-2 style: model.vocab + model.merges, ByteLevel pre-tokenizer/decoder).
//
// What is supported (anything else is rejected at load, naming the field):
//  * model.type "BPE" with `merges` as "a b" strings or as [a, b] lists, no
//    dropout, no continuing_subword_prefix / end_of_word_suffix; optional
//    `ignore_merges` (a pre-token that is itself in the vocabulary is emitted
//    as is). Every one of the 256 byte symbols must be in the vocabulary.
//  * normalizer: null.
//  * pre_tokenizer: ByteLevel (use_regex true/false, add_prefix_space), a
//    Split whose pattern is GPT-2's regex (behavior Isolated), or a Sequence of
//    Digits (individual_digits true/false) / that Split / ByteLevel (the
//    SmolLM / cosmo2 tokenizers).
//  * added_tokens: kept for ids, decode and eot_id(); never matched in text.
//
// Encoding is ORDINARY encoding (special-token text inside documents is
// not special): the text "<|endoftext|>" inside a document is encoded as plain
// text, never as the special id; only `mor-dist prepare` inserts eot_id().
//
// Pre-tokenization implements GPT-2's pattern by hand,
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with leftmost-first alternation as in tiktoken / Hugging Face tokenizers.
// Code-point classes come from ICU (libicu, the Unicode version of the Debian
// package: 15.0 on Debian 12): \p{L} = general categories Lu Ll Lt Lm Lo,
// \p{N} = Nd Nl No, \s = the Unicode White_Space property (as in Rust's regex
// used by tiktoken and tokenizers; JavaScript's \s differs only on U+0085 and
// U+FEFF). The " ?" is the ASCII space U+0020 only; the contractions are
// case-sensitive.
//
// Invalid UTF-8 never throws: the input is split into well-formed sequences
// (Unicode Table 3-7) and single ill-formed bytes; each ill-formed byte is one
// code point of class "other" (neither letter, number nor space), so it joins
// a ` ?[^\s\p{L}\p{N}]+` run, and BPE runs on its raw byte. This equals GPT-2's
// encoder on text decoded with Python's errors="surrogateescape" (what
// scripts/make_corpus.py does); decode() gives the original bytes back.
// References that take Unicode strings (tiktoken, js-tiktoken, HF tokenizers)
// cannot represent such bytes at all.
//
// BPE: repeatedly merge the adjacent pair with the lowest merge rank (the
// leftmost one on ties), as Hugging Face tokenizers does. Pre-token -> ids
// results are cached (see encode()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mor::io {

// Length of the well-formed UTF-8 sequence starting at p[0] (1..4), or 0 when
// the bytes at p do not start one (Unicode Table 3-7: no overlongs, no
// surrogates, nothing above U+10FFFF, no truncated sequences). n >= 1.
size_t utf8_sequence_length(const unsigned char* p, size_t n);
// Byte offset of the first ill-formed byte of s, or s.size() if s is valid UTF-8.
size_t utf8_first_invalid(std::string_view s);

class Tokenizer {
 public:
  // Loads a tokenizer.json; throws std::runtime_error naming the file and the
  // offending field for unreadable, malformed or unsupported files.
  static Tokenizer from_file(const std::string& path);
  // Same from the JSON text; `name` is used in error messages.
  static Tokenizer from_json(std::string_view json, const std::string& name = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ordinary encoding of arbitrary bytes (see above). Thread-safe: each thread
  // keeps its own pre-token -> ids cache, backed by one shared by all threads
  // (lock-striped, consulted only on a miss); both bounded, cleared when full.
  std::vector<uint32_t> encode(std::string_view text) const;
  // Appends the ids of `text` to `out`.
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const;
  // The bytes of the tokens, concatenated (added tokens give their content).
  // Throws std::out_of_range for an id that is no token.
  std::string decode(const std::vector<uint32_t>& ids) const;

  // 1 + the largest id of model.vocab and added_tokens.
  uint32_t vocab_size() const;
  // The document separator: the id of "<|endoftext|>" (else "<|end_of_text|>",
  // "</s>", "<eos>") among added_tokens or the vocabulary; throws if none.
  uint32_t eot_id() const;
  // Id of a token given as its tokenizer.json string (vocab key or added token).
  std::optional<uint32_t> token_to_id(std::string_view token) const;
  // The pre-tokens of `text` (views into it), for tests and tools.
  std::vector<std::string_view> pretokenize(std::string_view text) const;
  // Number of merges (ranks) loaded.
  size_t num_merges() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static Tokenizer parse_json(std::string_view json, const std::string& name);  // from_json's body
  std::unique_ptr<Impl> impl_;
};

}  // namespace mor::io

// scripts/make_corpus.py: its shards load with TokenShard, match corpus.json,
// are byte-identical to what write_token_shard writes for the same tokens, and
// the script is deterministic. Skipped when /usr/bin/python3, numpy or the
// Debian `fortunes` texts are missing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "io/data/loader.h"
#include "io/data/token_shard.h"
#include "io_test_util.h"

#ifndef MOR_MAKE_CORPUS_PY
#error "MOR_MAKE_CORPUS_PY must name scripts/make_corpus.py"
#endif

namespace mor::io {
namespace {

using testing::read_bytes;
using testing::TempDir;

constexpr const char* kPython = "/usr/bin/python3";
constexpr const char* kFortunes = "/usr/share/games/fortunes";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The number after "key": in a flat JSON text (enough for corpus.json).
double json_number(const std::string& text, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t p = text.find(k);
  if (p == std::string::npos) throw std::runtime_error("corpus.json lacks " + key);
  return std::stod(text.substr(p + k.size()));
}

bool have_prerequisites(std::string* why) {
  if (!std::filesystem::exists(kPython)) {
    *why = "no /usr/bin/python3";
    return false;
  }
  if (!std::filesystem::is_directory(kFortunes)) {
    *why = "Debian package `fortunes` not installed";
    return false;
  }
  if (std::system((std::string(kPython) + " -c 'import numpy' 2>/dev/null").c_str()) != 0) {
    *why = "python3-numpy missing";
    return false;
  }
  return true;
}

int run_script(const std::string& out, int vocab) {
  const std::string cmd = std::string(kPython) + " " + MOR_MAKE_CORPUS_PY + " --out '" + out + "' --vocab " +
                          std::to_string(vocab) + " > '" + out + ".log' 2>&1";
  return std::system(cmd.c_str());
}

TEST(MakeCorpus, ShardsMatchCppWriterAndAreDeterministic) {
  std::string why;
  // scripts/setup.sh installs these; a missing one is a set-up failure, not a skip.
  ASSERT_TRUE(have_prerequisites(&why)) << why;
  TempDir dir;
  const int vocab = 512;
  const std::string a = dir.file("a"), b = dir.file("b");
  ASSERT_EQ(run_script(a, vocab), 0) << slurp(a + ".log");
  ASSERT_EQ(run_script(b, vocab), 0) << slurp(b + ".log");

  const std::string json = slurp(a + "/corpus.json");
  EXPECT_EQ(static_cast<int>(json_number(json, "vocab_size")), vocab);
  const auto train_tokens = static_cast<uint64_t>(json_number(json, "train_tokens"));
  const auto val_tokens = static_cast<uint64_t>(json_number(json, "val_tokens"));
  const auto train_docs = static_cast<uint64_t>(json_number(json, "train_documents"));
  const auto val_docs = static_cast<uint64_t>(json_number(json, "val_documents"));
  const double h_train = json_number(json, "train_unigram_entropy");
  const double h_val = json_number(json, "val_unigram_cross_entropy");
  EXPECT_GT(train_docs, 10000u);
  EXPECT_GT(val_docs, train_docs / 25);
  EXPECT_LT(val_docs, train_docs / 15);
  EXPECT_GT(h_train, 3.0);
  EXPECT_LT(h_train, std::log(static_cast<double>(vocab)));
  EXPECT_GT(h_val, 3.0);

  for (const char* name :
       {"corpus.json", "tokenizer.json", "edu_fineweb_val_000000.bin", "edu_fineweb_train_000001.bin"}) {
    EXPECT_EQ(read_bytes(a + "/" + name), read_bytes(b + "/" + name)) << name << " differs between runs";
  }

  for (const auto& [name, count, docs] :
       {std::tuple{std::string("edu_fineweb_train_000001.bin"), train_tokens, train_docs},
        std::tuple{std::string("edu_fineweb_val_000000.bin"), val_tokens, val_docs}}) {
    const std::string path = a + "/" + name;
    TokenShard s(path, static_cast<uint32_t>(vocab));
    ASSERT_EQ(s.size(), count) << path;
    EXPECT_EQ(s.token_bytes(), 2);
    EXPECT_EQ(s.token(0), 0u) << "documents must start with the EOT id 0";
    std::vector<uint32_t> tokens(s.size());
    uint64_t eot = 0;
    for (uint64_t i = 0; i < s.size(); ++i) {
      tokens[i] = s.token(i);
      eot += tokens[i] == 0;
    }
    EXPECT_EQ(eot, docs) << path;
    // The C++ writer produces the same bytes for the same tokens.
    const std::string again = dir.file("again_" + name);
    write_token_shard(again, tokens, static_cast<uint32_t>(vocab));
    EXPECT_EQ(read_bytes(again), read_bytes(path)) << path;
  }

  // Both loaders accept the output.
  DataLoader train(LoaderConfig{a + "/edu_fineweb_train_*.bin", 64, static_cast<uint32_t>(vocab), 1});
  EXPECT_EQ(train.num_samples(), (train_tokens - 1) / 64);
  ValLoader val(a + "/edu_fineweb_val_*.bin", 64, static_cast<uint32_t>(vocab));
  EXPECT_EQ(static_cast<uint64_t>(val.num_samples()), (val_tokens - 1) / 64);
}

}  // namespace
}  // namespace mor::io

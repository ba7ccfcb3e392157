// `prepare` with the tokenizer.json that scripts/make_corpus.py writes (vocab
// 1024, id 0 = <|endoftext|>) reproduces the shards of make_corpus.py's own
// Python tokenizer byte for byte: the fortunes documents go through
// scripts/corpus_jsonl.py (JSONL, same order) and io::prepare_shards.
// Needs the ctest fixture `corpus` (build/data/fortunes).
#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>
#include <string>

#include "io/data/prepare.h"
#include "io/data/token_shard.h"
#include "io/data/tokenizer.h"
#include "io_test_util.h"
#include "tokenizer_test_util.h"

namespace mor::io {
namespace {

using testing::read_bytes;
using testing::TempDir;

const std::string kCorpus = MOR_CORPUS_DIR;
const std::string kScript = std::string(MOR_REPO_ROOT) + "/scripts/corpus_jsonl.py";

void prepare_split(const TempDir& dir, const std::string& split, int threads) {
  const std::string jsonl = dir.file(split + ".jsonl");
  const std::string cmd =
      "/usr/bin/python3 '" + kScript + "' --split " + split + " --out '" + jsonl + "' > '" + jsonl + ".log' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_text_file(jsonl + ".log");
  PrepareOptions o;
  o.tokenizer = kCorpus + "/tokenizer.json";
  o.inputs = {jsonl};
  o.out_dir = dir.file("out_" + split);
  o.shard_tokens = INT32_MAX;                     // everything in one shard,
  o.val_tokens = split == "val" ? INT32_MAX : 0;  // named as make_corpus names it
  o.threads = threads;
  o.batch_bytes = 64 << 10;
  o.progress = false;
  const PrepareResult r = prepare_shards(o, nullptr);
  EXPECT_EQ(r.bad_total(), 0u);
  EXPECT_EQ(r.shards.size(), 1u);
}

// `prepare` on one split (2 threads) writes shard `name` byte for byte as make_corpus.py did.
void expect_split_matches(const TempDir& dir, const std::string& split, const std::string& name) {
  prepare_split(dir, split, 2);
  const auto want = read_bytes(kCorpus + "/" + name);
  const auto got = read_bytes(dir.file("out_" + split + "/" + name));
  ASSERT_EQ(got.size(), want.size()) << "token counts differ";
  EXPECT_TRUE(got == want) << split << " tokens differ from make_corpus.py's";
}

TEST(PrepareCorpus, MatchesMakeCorpusPythonTokenizer) {
  const Tokenizer tok = Tokenizer::from_file(kCorpus + "/tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), 1024u);
  EXPECT_EQ(tok.eot_id(), 0u);
  TempDir dir;
  expect_split_matches(dir, "val", "edu_fineweb_val_000000.bin");
  const TokenShard s(dir.file("out_val/edu_fineweb_val_000000.bin"), 1024);
  EXPECT_GT(s.size(), 50000u);
}

TEST(PrepareCorpus, TrainSplitMatchesToo) {
  TempDir dir;
  expect_split_matches(dir, "train", "edu_fineweb_train_000001.bin");
}

}  // namespace
}  // namespace mor::io

// io::prepare_shards (`mor-dist prepare`): shard layout, document order, the
// manifest and its checksums, byte-identical output for 1 and 2 threads, gzip /
// zstd inputs, every bad-input case (counted report and --strict errors naming
// file and line), uint32 shards for large vocabularies, and DataLoader reading
// the result. Synthetic tokenizers; no fixture needed.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/data/loader.h"
#include "io/data/prepare.h"
#include "io/data/token_shard.h"
#include "io/data/tokenizer.h"
#include "io_test_util.h"
#include "tokenizer_test_util.h"

namespace mor::io {
namespace {

using testing::expect_error;
using testing::read_bytes;
using testing::read_text_file;
using testing::TempDir;

const std::string kSample = std::string(MOR_REPO_ROOT) + "/tests/io/data/tokenizer_sample.txt";

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  if (!f) throw std::runtime_error("cannot write " + path);
}

// Real documents: lines of the valid part of the sample, combined and numbered.
std::vector<std::string> sample_docs(int n) {
  const std::string text = read_text_file(kSample);
  const std::string valid = text.substr(0, text.rfind('\n', utf8_first_invalid(text)));
  std::vector<std::string> lines;
  size_t p = 0;
  while (p < valid.size()) {
    size_t e = valid.find('\n', p);
    if (e == std::string::npos) e = valid.size();
    lines.push_back(valid.substr(p, e - p));
    p = e + 1;
  }
  std::vector<std::string> docs;
  for (int k = 0; k < n; ++k) {
    std::string d = lines[static_cast<size_t>(k) % lines.size()] + " #" + std::to_string(k);
    if (k % 7 == 0) d += "\n\n" + lines[static_cast<size_t>(k + 3) % lines.size()] + "\t<|endoftext|> inside";
    docs.push_back(d);
  }
  return docs;
}

std::string jsonl(const std::vector<std::string>& docs, size_t first = 0, size_t last = SIZE_MAX) {
  std::string out;
  for (size_t k = first; k < std::min(last, docs.size()); ++k)
    out +=
        nlohmann::json({{"id", k}, {"text", docs[k]}, {"meta", {{"score", 3.5}, {"tags", {"a", "b"}}}}}).dump() + "\n";
  return out;
}

std::string gzip(const std::string& s) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, s.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
  zs.avail_in = static_cast<uInt>(s.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

struct PrepRun {
  PrepareResult res;
  std::string log;
};

PrepRun run(PrepareOptions opt) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* mem = open_memstream(&buf, &len);
  PrepRun r;
  try {
    r.res = prepare_shards(opt, mem);
  } catch (...) {
    std::fclose(mem);
    std::free(buf);
    throw;
  }
  std::fclose(mem);
  r.log.assign(buf, len);
  std::free(buf);
  return r;
}

struct Fixture {
  TempDir dir;
  std::string tok_path = dir.file("tokenizer.json");
  std::vector<std::string> docs = sample_docs(600);
  Fixture() {
    testing::small_tokenizer().write(tok_path);
    write_file(dir.file("docs.jsonl"), jsonl(docs));
  }
  PrepareOptions options(const std::string& out, int threads = 2) const {
    PrepareOptions o;
    o.tokenizer = tok_path;
    o.inputs = {dir.file("docs.jsonl")};
    o.out_dir = dir.file(out);
    o.shard_tokens = 4000;
    o.val_tokens = 3000;
    o.threads = threads;
    o.batch_bytes = 1500;  // many small work items
    o.progress = false;
    return o;
  }
};

std::map<std::string, std::vector<unsigned char>> dir_files(const std::string& d) {
  std::map<std::string, std::vector<unsigned char>> m;
  for (const auto& e : std::filesystem::directory_iterator(d))
    m[e.path().filename().string()] = read_bytes(e.path().string());
  return m;
}

std::vector<uint32_t> shard_tokens(const std::string& path, uint32_t vocab = 0) {
  TokenShard s(path, vocab);
  std::vector<uint32_t> t(s.size());
  for (uint64_t i = 0; i < s.size(); ++i) t[i] = s.token(i);
  return t;
}

std::string sha256sum(const std::string& path) {
  std::FILE* p = popen(("sha256sum '" + path + "'").c_str(), "r");
  char buf[65] = {};
  const size_t n = std::fread(buf, 1, 64, p);
  pclose(p);
  return std::string(buf, n);
}

TEST(Prepare, ShardsHoldTheDocumentsInOrder) {
  Fixture fx;
  const Tokenizer tok = Tokenizer::from_file(fx.tok_path);
  const PrepRun r = run(fx.options("out"));
  const PrepareResult& res = r.res;
  std::vector<uint32_t> want;
  std::vector<size_t> starts;
  for (const auto& d : fx.docs) {
    starts.push_back(want.size());
    want.push_back(tok.eot_id());
    tok.encode_append(d, want);
  }
  EXPECT_EQ(res.documents, fx.docs.size());
  EXPECT_EQ(res.tokens, want.size());
  EXPECT_EQ(res.bad_total(), 0u);
  ASSERT_GE(res.shards.size(), 3u);

  const auto m = nlohmann::json::parse(read_text_file(fx.dir.file("out/manifest.json")));
  EXPECT_EQ(m["documents"].get<uint64_t>(), fx.docs.size());
  EXPECT_EQ(m["tokens"].get<uint64_t>(), want.size());
  EXPECT_EQ(m["token_bytes"].get<int>(), 2);
  EXPECT_EQ(m["tokenizer"]["eot_id"].get<uint32_t>(), tok.eot_id());
  ASSERT_EQ(m["shards"].size(), res.shards.size());

  std::vector<uint32_t> all;
  uint64_t docs_seen = 0;
  for (size_t k = 0; k < res.shards.size(); ++k) {
    const auto& sh = m["shards"][k];
    const std::string name = sh["file"].get<std::string>();
    const std::string path = fx.dir.file("out/" + name);
    const auto t = shard_tokens(path, tok.vocab_size());
    EXPECT_EQ(TokenShard(path).token_bytes(), 2);
    EXPECT_EQ(sh["tokens"].get<uint64_t>(), t.size()) << name;
    EXPECT_EQ(sh["sha256"].get<std::string>(), sha256sum(path)) << name;
    uint64_t eots = 0;
    for (const uint32_t id : t) eots += id == tok.eot_id();
    EXPECT_EQ(sh["documents"].get<uint64_t>(), eots) << name << ": documents = documents starting in the shard";
    docs_seen += eots;
    if (k == 0) {
      EXPECT_EQ(name, "edu_fineweb_val_000000.bin");
      EXPECT_EQ(sh["split"], "val");
      // Whole documents until >= 3000 tokens: ends at a document boundary.
      EXPECT_GE(t.size(), 3000u);
      const size_t next_doc = static_cast<size_t>(eots);
      ASSERT_LT(next_doc, starts.size());
      EXPECT_EQ(starts[next_doc], t.size());
      EXPECT_LT(starts[next_doc - 1], 3000u);
    } else {
      char want_name[64];
      std::snprintf(want_name, sizeof want_name, "edu_fineweb_train_%06zu.bin", k);
      EXPECT_EQ(name, want_name);
      EXPECT_EQ(sh["split"], "train");
      if (k + 1 < res.shards.size())
        EXPECT_EQ(t.size(), 4000u) << name;
      else
        EXPECT_LE(t.size(), 4000u);
    }
    all.insert(all.end(), t.begin(), t.end());
  }
  EXPECT_EQ(docs_seen, fx.docs.size());
  EXPECT_EQ(all, want);
  EXPECT_NE(r.log.find("no bad lines"), std::string::npos) << r.log;
}

TEST(Prepare, ByteIdenticalForOneAndTwoThreads) {
  Fixture fx;
  run(fx.options("t1", 1));
  run(fx.options("t2", 2));
  run(fx.options("t3", 3));
  const auto a = dir_files(fx.dir.file("t1")), b = dir_files(fx.dir.file("t2")), c = dir_files(fx.dir.file("t3"));
  ASSERT_GE(a.size(), 4u);
  EXPECT_TRUE(a.count("manifest.json"));
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
}

TEST(Prepare, GzipZstdAndSplitInputsGiveTheSameShards) {
  Fixture fx;
  const std::string text = jsonl(fx.docs);
  const size_t half = text.find('\n', text.size() / 2) + 1;
  // Two gzip members / two zstd frames, split mid-file.
  write_file(fx.dir.file("docs.jsonl.gz"), gzip(text.substr(0, half)) + gzip(text.substr(half)));
  write_file(fx.dir.file("docs.jsonl.zst"), zstd(text.substr(0, half / 3)) + zstd(text.substr(half / 3)));
  write_file(fx.dir.file("part_000.jsonl"), jsonl(fx.docs, 0, 250));
  write_file(fx.dir.file("part_001.jsonl.zst"), zstd(jsonl(fx.docs, 250, 400)));
  write_file(fx.dir.file("part_002.jsonl.gz"), gzip(jsonl(fx.docs, 400)));
  run(fx.options("plain"));
  auto o = fx.options("gz");
  o.inputs = {fx.dir.file("docs.jsonl.gz")};
  run(o);
  o = fx.options("zst");
  o.inputs = {fx.dir.file("docs.jsonl.zst")};
  run(o);
  o = fx.options("parts");
  o.inputs = {fx.dir.file("part_*.jsonl*")};
  const PrepRun parts = run(o);
  EXPECT_EQ(parts.res.files.size(), 3u);
  auto shards = [&](const std::string& d) {
    auto m = dir_files(fx.dir.file(d));
    m.erase("manifest.json");  // names the inputs
    return m;
  };
  const auto plain = shards("plain");
  ASSERT_GE(plain.size(), 3u);
  EXPECT_EQ(shards("gz"), plain);
  EXPECT_EQ(shards("zst"), plain);
  EXPECT_EQ(shards("parts"), plain);
}

TEST(Prepare, BadLinesAreCountedAndReported) {
  Fixture fx;
  const std::vector<std::string> lines = {
      R"({"text": "good one"})",               // 1
      R"({"text": "unterminated)",             // 2 malformed
      R"({"txt": "no text field"})",           // 3 missing
      R"({"text": 42})",                       // 4 missing (not a string)
      R"("just a string")",                    // 5 missing (not an object)
      "{\"text\": \"raw \xff byte\"}",         // 6 invalid UTF-8
      R"({"text": "lone \ud800 surrogate"})",  // 7 invalid UTF-8
      "",                                      // 8 blank: skipped silently
      R"({"text": "x"} trailing)",             // 9 malformed
      R"({"text": "good two \ud83d\ude00"})",  // 10
  };
  std::string body;
  for (const auto& l : lines) body += l + "\n";
  write_file(fx.dir.file("bad.jsonl"), body);
  auto o = fx.options("out");
  o.inputs = {fx.dir.file("bad.jsonl")};
  o.val_tokens = 0;
  const PrepRun r = run(o);
  EXPECT_EQ(r.res.documents, 2u);
  EXPECT_EQ(r.res.bad[static_cast<int>(BadLine::kMalformedJson)], 2u);
  EXPECT_EQ(r.res.bad[static_cast<int>(BadLine::kMissingText)], 3u);
  EXPECT_EQ(r.res.bad[static_cast<int>(BadLine::kInvalidUtf8)], 2u);
  const std::string f = fx.dir.file("bad.jsonl");
  for (const std::string& want :
       {std::string("skipped 7 bad lines: 2 malformed JSON, 3 missing text, 2 invalid UTF-8"),
        f + ":2: malformed JSON: unterminated string", f + ":3: missing text: no string field \"text\"",
        f + ":4: missing text", f + ":5: missing text: the line is a string",
        f + ":6: invalid UTF-8: byte 0xFF at column 15", f + ":7: invalid UTF-8: unpaired surrogate escape \\uD800",
        f + ":9: malformed JSON: unexpected characters after the JSON object at column 15"})
    EXPECT_NE(r.log.find(want), std::string::npos) << "report lacks '" << want << "':\n" << r.log;
  EXPECT_EQ(r.log.find(f + ":8:"), std::string::npos) << "a blank line is not a bad line";
  const auto m = nlohmann::json::parse(read_text_file(fx.dir.file("out/manifest.json")));
  EXPECT_EQ(m["bad_lines"]["malformed_json"], 2);
  EXPECT_EQ(m["bad_lines"]["missing_text"], 3);
  EXPECT_EQ(m["bad_lines"]["invalid_utf8"], 2);
  EXPECT_EQ(m["bad_lines"]["examples"].size(), 7u);
  // The one train shard: the two good documents.
  const Tokenizer tok = Tokenizer::from_file(fx.tok_path);
  std::vector<uint32_t> want{tok.eot_id()};
  tok.encode_append("good one", want);
  want.push_back(tok.eot_id());
  tok.encode_append("good two \xf0\x9f\x98\x80", want);
  EXPECT_EQ(shard_tokens(fx.dir.file("out/edu_fineweb_train_000001.bin")), want);

  // --strict: the first bad line is an error naming file and line.
  for (size_t bad = 1; bad + 1 < lines.size(); ++bad) {  // lines[1..8]
    if (lines[bad].empty()) continue;
    std::string strict_body;
    for (int k = 0; k < 40; ++k)
      strict_body += R"({"text": "fine"})"
                     "\n";                                                 // lines 1..40
    strict_body += lines[bad] + "\n" + lines[0] + "\n" + lines[1] + "\n";  // the bad one is line 41
    const std::string sf = fx.dir.file("strict_" + std::to_string(bad) + ".jsonl");
    write_file(sf, strict_body);
    auto so = fx.options("strict_out_" + std::to_string(bad), 2);
    so.inputs = {sf};
    so.strict = true;
    so.batch_bytes = 64;
    const char* kind = bad == 1 || bad == 8 ? "malformed JSON" : bad <= 4 ? "missing text" : "invalid UTF-8";
    expect_error<std::runtime_error>([&] { run(so); }, {sf + ":41: " + kind, "--strict"});
    EXPECT_FALSE(std::filesystem::exists(fx.dir.file("strict_out_" + std::to_string(bad) + "/manifest.json")));
  }
}

TEST(Prepare, JsonLineParser) {
  auto ok = [](const std::string& line) {
    std::string text, detail;
    BadLine kind;
    EXPECT_TRUE(parse_jsonl_text(line, &text, &kind, &detail)) << line << ": " << detail;
    return text;
  };
  auto bad = [](const std::string& line, BadLine want, const std::string& piece) {
    std::string text, detail;
    BadLine kind = BadLine::kMalformedJson;
    EXPECT_FALSE(parse_jsonl_text(line, &text, &kind, &detail)) << line;
    EXPECT_EQ(static_cast<int>(kind), static_cast<int>(want)) << line << ": " << detail;
    EXPECT_NE(detail.find(piece), std::string::npos) << line << ": " << detail;
  };
  EXPECT_EQ(ok(R"({"text":"a\nb\t\"q\" \\ \/ \u00e9 \ud83d\ude00 \b\f\r"})"),
            "a\nb\t\"q\" \\ / \xc3\xa9 \xf0\x9f\x98\x80 \b\f\r");
  EXPECT_EQ(ok(" { \"a\" : [1, -2.5e+3, true, false, null, {\"text\": 1}], \"text\" : \"x\" } \r"), "x");
  EXPECT_EQ(ok(R"({"text": "first", "text": "last"})"), "last");  // as Python's json
  EXPECT_EQ(ok(R"({"text": ""})"), "");
  EXPECT_EQ(ok("{\"text\": \"caf\xc3\xa9 \xe4\xb8\xad\"}"), "caf\xc3\xa9 \xe4\xb8\xad");
  bad(R"({"text": "x",})", BadLine::kMalformedJson, "expected a string key");
  bad(R"({"text" "x"})", BadLine::kMalformedJson, "expected ':' at column 9");
  bad(R"({"text": 01})", BadLine::kMalformedJson, "expected ',' or '}'");
  bad(R"({"a": [1 2], "text": "x"})", BadLine::kMalformedJson, "expected ',' or ']'");
  bad(R"({"text": "\x"})", BadLine::kMalformedJson, "bad escape");
  bad(R"({"text": "\u12g4"})", BadLine::kMalformedJson, "bad \\u escape");
  bad("{\"text\": \"tab\there\"}", BadLine::kMalformedJson, "control character 0x09");
  bad(R"({"text": tru})", BadLine::kMalformedJson, "unexpected");
  bad(R"({"text": "x"}})", BadLine::kMalformedJson, "unexpected characters after the JSON object");
  bad(std::string(2000, '[') + std::string(2000, ']'), BadLine::kMalformedJson, "nesting deeper than");
  bad(R"([{"text": "x"}])", BadLine::kMissingText, "the line is an array");
  bad(R"({"Text": "x"})", BadLine::kMissingText, "no string field \"text\"");
  bad(R"({"text": null})", BadLine::kMissingText, "no string field");
  bad(R"({"text": "\udc00"})", BadLine::kInvalidUtf8, "unpaired surrogate escape \\uDC00");
  bad(R"({"text": "\ud800\u0041"})", BadLine::kInvalidUtf8, "unpaired surrogate");
  bad("{\"url\": \"\xc0\xaf\", \"text\": \"x\"}", BadLine::kInvalidUtf8, "byte 0xC0 at column 10 is not UTF-8");
}

TEST(Prepare, DataLoaderReadsThePreparedShards) {
  Fixture fx;
  run(fx.options("out"));
  const Tokenizer tok = Tokenizer::from_file(fx.tok_path);
  const std::string out = fx.dir.file("out");
  const int T = 32;
  DataLoader train(LoaderConfig{out + "/edu_fineweb_train_*.bin", T, tok.vocab_size(), 5});
  ValLoader val(out + "/edu_fineweb_val_*.bin", T, tok.vocab_size());
  EXPECT_GT(train.num_samples(), 100u);
  EXPECT_GT(val.num_samples(), 50);
  std::vector<int32_t> buf(static_cast<size_t>(4 * (T + 1)));
  train.read_samples(0, 4, buf.data());
  for (int s = 0; s < 4; ++s) {
    const auto loc = train.dataset().locate(train.dataset_index(static_cast<uint64_t>(s)));
    const auto toks = shard_tokens(train.dataset().shard(loc.shard).path());
    for (int k = 0; k <= T; ++k)
      EXPECT_EQ(static_cast<uint32_t>(buf[static_cast<size_t>(s * (T + 1) + k)]),
                toks[loc.offset + static_cast<uint64_t>(k)]);
  }
  val.read_samples(0, 1, buf.data());
  EXPECT_EQ(static_cast<uint32_t>(buf[0]), tok.eot_id());
}

TEST(Prepare, LargeVocabularyWritesUint32Shards) {
  Fixture fx;
  const std::string text = read_text_file(kSample);
  testing::large_tokenizer(text).write(fx.dir.file("large.json"));
  auto o = fx.options("out");
  o.tokenizer = fx.dir.file("large.json");
  o.shard_tokens = 20000;
  const PrepRun r = run(o);
  EXPECT_EQ(r.res.token_bytes, 4);
  EXPECT_GT(r.res.vocab_size, 65536u);
  const Tokenizer tok = Tokenizer::from_file(o.tokenizer);
  std::vector<uint32_t> want;
  for (const auto& d : fx.docs) {
    want.push_back(tok.eot_id());
    tok.encode_append(d, want);
  }
  std::vector<uint32_t> all;
  uint32_t mx = 0;
  for (const auto& sh : r.res.shards) {
    const std::string path = fx.dir.file("out/" + sh.file);
    EXPECT_EQ(read_shard_header(path).magic, kShardMagicU32);
    const auto t = shard_tokens(path, tok.vocab_size());
    for (const uint32_t id : t) mx = std::max(mx, id);
    all.insert(all.end(), t.begin(), t.end());
  }
  EXPECT_EQ(all, want);
  EXPECT_GT(mx, 65535u);
  DataLoader train(LoaderConfig{fx.dir.file("out/edu_fineweb_train_*.bin"), 64, tok.vocab_size(), 1});
  EXPECT_GT(train.num_samples(), 10u);
}

TEST(Prepare, ErrorsNameTheFile) {
  Fixture fx;
  auto o = fx.options("out");
  o.inputs = {fx.dir.file("nothing_*.jsonl")};
  expect_error<std::runtime_error>([&] { run(o); },
                                   {"--input '" + fx.dir.file("nothing_*.jsonl") + "': no file matches"});
  o = fx.options("out");
  o.tokenizer = fx.dir.file("missing.json");
  expect_error<std::runtime_error>([&] { run(o); }, {fx.dir.file("missing.json"), "cannot open"});
  // Corrupt and truncated compressed input.
  const std::string text = jsonl(fx.docs);
  std::string gz = gzip(text);
  gz[gz.size() / 2] ^= 0x55;
  write_file(fx.dir.file("corrupt.jsonl.gz"), gz);
  o = fx.options("out_gz");
  o.inputs = {fx.dir.file("corrupt.jsonl.gz")};
  expect_error<std::runtime_error>([&] { run(o); }, {fx.dir.file("corrupt.jsonl.gz"), "gzip"});
  const std::string zs = zstd(text);
  write_file(fx.dir.file("cut.jsonl.zst"), zs.substr(0, zs.size() - 10));
  o = fx.options("out_zst");
  o.inputs = {fx.dir.file("cut.jsonl.zst")};
  expect_error<std::runtime_error>([&] { run(o); }, {fx.dir.file("cut.jsonl.zst"), "truncated zstd"});
  write_file(fx.dir.file("cut.jsonl.gz"), gzip(text).substr(0, 100));
  o = fx.options("out_gz2");
  o.inputs = {fx.dir.file("cut.jsonl.gz")};
  expect_error<std::runtime_error>([&] { run(o); }, {fx.dir.file("cut.jsonl.gz"), "truncated gzip"});
  // Only bad lines: no documents.
  write_file(fx.dir.file("allbad.jsonl"), "{\n[\n");
  o = fx.options("out_bad");
  o.inputs = {fx.dir.file("allbad.jsonl")};
  expect_error<std::runtime_error>([&] { run(o); }, {"no documents", "2 bad lines", "allbad.jsonl:1: malformed JSON"});
}

// A directory where a file is expected says so, and no match is dropped silently.
TEST(Prepare, DirectoriesAndBrokenLinksAreNamed) {
  namespace fs = std::filesystem;
  Fixture fx;
  auto o = fx.options("out");
  o.tokenizer = fx.dir.path();
  expect_error<std::runtime_error>([&] { run(o); }, {fx.dir.path(), "is a directory", "not a tokenizer.json"});

  fs::create_directory(fx.dir.file("jsonl_dir"));
  write_file(fx.dir.file("jsonl_dir/a.jsonl"), jsonl(fx.docs));
  o = fx.options("out");
  o.inputs = {fx.dir.file("jsonl_dir")};
  expect_error<std::runtime_error>([&] { run(o); },
                                   {"--input", "'" + fx.dir.file("jsonl_dir") + "' is a directory", "jsonl_dir/*"});

  fs::create_symlink(fx.dir.file("moved.jsonl"), fx.dir.file("jsonl_dir/b.jsonl"));
  fs::create_directory(fx.dir.file("jsonl_dir/c.jsonl"));
  o = fx.options("out");
  o.inputs = {fx.dir.file("jsonl_dir/*.jsonl")};
  expect_error<std::runtime_error>(
      [&] { run(o); },
      {"--input", "matches 2 paths that are not regular files",
       "'" + fx.dir.file("jsonl_dir/b.jsonl") + "' is a dangling symlink to '" + fx.dir.file("moved.jsonl") + "'",
       "'" + fx.dir.file("jsonl_dir/c.jsonl") + "' is a directory"});
  EXPECT_FALSE(fs::exists(fx.dir.file("out/manifest.json")));

  // The good file alone still works.
  fs::remove(fx.dir.file("jsonl_dir/b.jsonl"));
  fs::remove(fx.dir.file("jsonl_dir/c.jsonl"));
  EXPECT_EQ(run(o).res.documents, fx.docs.size());
}

TEST(Prepare, RefusesToMixWithAnEarlierRunUnlessOverwrite) {
  Fixture fx;
  run(fx.options("out"));
  expect_error<std::runtime_error>([&] { run(fx.options("out")); },
                                   {fx.dir.file("out"), "already holds edu_fineweb_train_000001.bin", "--overwrite"});
  auto o = fx.options("out");
  o.overwrite = true;
  o.shard_tokens = 1000000;  // fewer shards than before: stale ones must go
  o.val_tokens = 0;
  run(o);
  const auto files = dir_files(fx.dir.file("out"));
  EXPECT_EQ(files.size(), 2u);  // one train shard + manifest
  EXPECT_TRUE(files.count("edu_fineweb_train_000001.bin"));
}

TEST(Prepare, ProgressAndSummaryLines) {
  Fixture fx;
  auto o = fx.options("out");
  o.progress = true;
  const PrepRun r = run(o);
  EXPECT_NE(r.log.find("docs/s"), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("MB/s"), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("600 documents"), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("wrote 1 val + "), std::string::npos) << r.log;
}

}  // namespace
}  // namespace mor::io

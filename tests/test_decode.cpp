// Decoding (model/decode.h, model/generate.h, model/sampling.h), for every sharing strategy x
// router x KV mode (tests/model_combos.h):
//   - the decode path with its recursion-wise KV cache gives the logits of the training forward
//     (Model::forward_logits) over the whole sequence, within fp32 tolerance, when both take the
//     same routing decisions: forced at random, and the decoder's own causal decisions;
//   - the cache holds exactly one row per (token, layer visit it went through);
//   - sequences decoded side by side (a prefill beside single tokens, several recursions mixed)
//     give their logits alone; continuous batching generates the same tokens as one at a time;
//   - sampling: greedy, top-k, top-p, temperature, determinism per seed and stream.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/decode.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/sampling.h"
#include "tests/model_combos.h"

using namespace mor;

namespace {

using combos::Combo;

ModelConfig config(const Combo& c) {  // head_dim 16: the CPU's register-tiled attention path
  return combos::tiny_config(
      c, {.vocab_size = 37, .d_model = 32, .n_heads = 2, .n_kv_heads = 1, .d_ff = 40, .seq_len = 14, .init_std = 0.3f});
}

std::string name(const ::testing::TestParamInfo<Combo>& i) { return combos::combo_name(i.param, true); }

// The lowest depth a token may have: every token goes through recursion 0 except under expert-choice
// with kv_mode recursion; without a router every token goes through all N_r.
int min_depth(const ModelConfig& c) {
  if (c.router == RouterKind::None) return c.n_recursions;
  return c.router == RouterKind::Expert && c.kv_mode == KvMode::Recursion ? 0 : 1;
}

std::vector<int32_t> random_tokens(const ModelConfig& c, int n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = (int32_t)(g() % c.vocab_size);
  return t;
}

// Decodes `tok` in slot 0: a prefill chunk of `prefill` tokens, then one token per step; every
// token's logits [T, V] and depth. forced: per-token depths, or empty (the decoder routes).
std::vector<float> decode_all(Decoder& dec, const std::vector<int32_t>& tok, int prefill,
                              const std::vector<int>& forced, std::vector<int>* depth) {
  std::vector<float> logits;
  for (int at = 0; at < (int)tok.size();) {
    const int n = at == 0 ? prefill : 1;
    DecodeChunk ch{0, {tok.begin() + at, tok.begin() + at + n}, {}};
    if (!forced.empty()) ch.forced_depth.assign(forced.begin() + at, forced.begin() + at + n);
    const std::vector<DecodeOut> out = dec.step({ch}, true);
    logits.insert(logits.end(), out[0].logits.begin(), out[0].logits.end());
    if (depth) depth->insert(depth->end(), out[0].depth.begin(), out[0].depth.end());
    at += n;
  }
  return logits;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs((double)got[i] - want[i]) / (1 + std::fabs(want[i])));
  EXPECT_LT(worst, 2e-5) << what << ": largest relative difference";
}

class DecodeVsForward : public ::testing::TestWithParam<Combo> {};

TEST_P(DecodeVsForward, ForcedRoutingGivesTheForwardLogits) {
  const ModelConfig c = config(GetParam());
  Model m(c, kern::cpu_backend());
  m.init(3);
  const int T = c.seq_len;
  const std::vector<int32_t> tok = random_tokens(c, T, 5);
  std::mt19937 g(9);
  std::vector<int> forced(T);
  for (int& d : forced) d = min_depth(c) + (int)(g() % (c.n_recursions - min_depth(c) + 1));
  const std::vector<float> want = m.forward_logits(tok.data(), 1, forced.data());
  for (int prefill : {1, 5}) {
    Decoder dec(m, 1);
    std::vector<int> depth;
    const std::vector<float> got = decode_all(dec, tok, prefill, forced, &depth);
    expect_close(got, want, "prefill " + std::to_string(prefill));
    EXPECT_EQ(depth, forced);
    // The cache: one row per token in every visit it went through (kv share: none past recursion 0).
    const ParamLayout& L = m.layout;
    const int first = L.prelude >= 0 ? 1 : 0;
    int64_t rows = 0;
    for (int v = 0; v < c.n_layers; ++v) {
      const bool in_section = v >= first && v < first + c.section_layers();
      const int r = in_section ? (v - first) / L.block_size : -1;
      int want_rows = 0;
      for (int t = 0; t < T; ++t)
        want_rows += !in_section || (forced[t] > r && (c.kv_mode == KvMode::Recursion || r == 0 || !c.cyclic()));
      EXPECT_EQ(dec.cache(0).rows(v).n, want_rows) << "visit " << v;
      rows += want_rows;
    }
    const int64_t kvd = c.n_kv_heads * c.head_dim();
    EXPECT_EQ(dec.cache(0).bytes(), rows * (8 * kvd + 4));
    EXPECT_EQ(dec.cache(0).vanilla_bytes(T), (int64_t)T * c.n_layers * 8 * kvd);
  }
}

// The decoder's own causal decisions (expert: threshold; token: argmax at the start), then the
// training forward forced to them: the same logits. Token-choice's decisions are training's own.
TEST_P(DecodeVsForward, RoutedDecodeMatchesTheForwardWithItsDecisions) {
  const ModelConfig c = config(GetParam());
  Model m(c, kern::cpu_backend());
  m.init(4);
  const std::vector<int32_t> tok = random_tokens(c, c.seq_len, 6);
  for (float threshold : {0.5f, 0.45f}) {
    Decoder dec(m, 1, threshold);
    std::vector<int> depth;
    const std::vector<float> got = decode_all(dec, tok, 4, {}, &depth);
    expect_close(got, m.forward_logits(tok.data(), 1, depth.data()), "threshold " + std::to_string(threshold));
    if (c.router == RouterKind::Token) {
      m.forward_logits(tok.data(), 1, nullptr);
      EXPECT_EQ(depth, m.last_depths());
    }
  }
}

// The expert-choice rule at its ends: threshold 0 sends every token through every recursion,
// threshold 1 none past those training's capacity keeps whole (here c_0 = 1: recursion 0 only;
// with c_0 < 1: no recursion at all).
TEST(DecodeRouting, ExpertThresholdEnds) {
  for (bool full_first : {true, false}) {
    ModelConfig c = config({Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion, 3});
    if (!full_first) c.capacity = {0.5, 0.25, 0.125};
    Model m(c, kern::cpu_backend());
    m.init(2);
    const std::vector<int32_t> tok = random_tokens(c, c.seq_len, 3);
    for (float threshold : {0.f, 1.f}) {
      Decoder dec(m, 1, threshold);
      std::vector<int> depth;
      decode_all(dec, tok, 3, {}, &depth);
      const int want = threshold == 0.f ? c.n_recursions : full_first ? 1 : 0;
      EXPECT_EQ(depth, std::vector<int>(tok.size(), want)) << "threshold " << threshold;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCombos, DecodeVsForward, ::testing::ValuesIn(combos::valid_combos()), name);

// Three sequences in one decoder: a prefill beside single tokens in the same step, each recursion
// over tokens of several sequences; each sequence's logits are its logits decoded alone.
TEST(DecodeBatch, SequencesSideBySideGiveTheirLogitsAlone) {
  for (RouterKind router : {RouterKind::Expert, RouterKind::Token}) {
    const ModelConfig c = config({Sharing::MiddleCycle, router, KvMode::Recursion, 3});
    Model m(c, kern::cpu_backend());
    m.init(8);
    const std::vector<std::vector<int32_t>> seqs = {random_tokens(c, 12, 1), random_tokens(c, 9, 2),
                                                    random_tokens(c, 14, 3)};
    const std::vector<int> start = {0, 2, 3};  // the step at which each sequence joins (with a prefill of 3)
    std::vector<std::vector<float>> alone(3), together(3);
    for (int s = 0; s < 3; ++s) {
      Decoder dec(m, 1);
      alone[s] = decode_all(dec, seqs[s], 3, {}, nullptr);
    }
    Decoder dec(m, 3);
    std::vector<int> at(3, 0);
    for (int step = 0; step < 20; ++step) {
      std::vector<DecodeChunk> chunks;
      std::vector<int> who;
      for (int s = 0; s < 3; ++s) {
        if (step < start[s] || at[s] == (int)seqs[s].size()) continue;
        const int n = at[s] == 0 ? 3 : 1;
        chunks.push_back({s, {seqs[s].begin() + at[s], seqs[s].begin() + at[s] + n}, {}});
        who.push_back(s);
        at[s] += n;
      }
      if (chunks.empty()) continue;
      const std::vector<DecodeOut> out = dec.step(chunks, true);
      for (size_t k = 0; k < who.size(); ++k)
        together[who[k]].insert(together[who[k]].end(), out[k].logits.begin(), out[k].logits.end());
    }
    for (int s = 0; s < 3; ++s) expect_close(together[s], alone[s], "sequence " + std::to_string(s));
  }
}

// Continuous batching: 5 requests over 2 slots (finished ones replaced at once) generate exactly
// what each generates alone, greedy and sampled.
TEST(DecodeBatch, ContinuousBatchingGeneratesWhatEachDoesAlone) {
  const ModelConfig c = config({Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion, 3});
  Model m(c, kern::cpu_backend());
  m.init(12);
  std::vector<GenRequest> reqs;
  for (int i = 0; i < 5; ++i) reqs.push_back({random_tokens(c, 1 + 2 * i, 20 + i), (uint64_t)i});
  for (float temp : {0.f, 1.f}) {
    GenOptions o;
    o.max_new_tokens = 6;
    o.seed = 77;
    o.sampling.temperature = temp;
    o.eot = 3;
    Decoder one(m, 1), two(m, 2);
    const std::vector<GenResult> a = generate(one, reqs, o), b = generate(two, reqs, o);
    ASSERT_EQ(a.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(a[i].ids, b[i].ids) << "request " << i << " temperature " << temp;
      EXPECT_STREQ(a[i].stop, b[i].stop);
      EXPECT_EQ(a[i].kv_bytes, b[i].kv_bytes);
      // The last token sampled is fed only when the sequence goes on: never after "length" or "context".
      const bool last_unfed = std::string(a[i].stop) != "eot";
      EXPECT_EQ(a[i].fed, (int64_t)reqs[i].prompt.size() + (int64_t)a[i].ids.size() - (last_unfed ? 1 : 0));
      EXPECT_LE(a[i].kv_bytes, a[i].vanilla_kv_bytes + a[i].fed * c.n_layers * 4);
    }
  }
}

// --capacity-depths (throughput benchmarks): depths in the shares the capacities imply (expert:
// 1 - c_1, c_1 - c_2, c_2 for capacities 1, 2/3, 1/3; token: equal), and generation feeds exactly
// those depths whatever the routers would say.
TEST(DecodeBatch, CapacityDepthsFollowTheCapacities) {
  ModelConfig e = config({Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion, 3});
  ModelConfig t = config({Sharing::MiddleCycle, RouterKind::Token, KvMode::Recursion, 3});
  std::vector<int> ne(4, 0), nt(4, 0);
  const int n = 3000;
  for (int p = 0; p < n; ++p) ++ne.at(capacity_depth(e, p)), ++nt.at(capacity_depth(t, p));
  const double want_e[4] = {0, 1 - e.capacity_of(1), e.capacity_of(1) - e.capacity_of(2), e.capacity_of(2)};
  for (int d = 0; d < 4; ++d) {
    EXPECT_NEAR((double)ne[d] / n, want_e[d], 0.01) << "expert depth " << d;
    EXPECT_NEAR((double)nt[d] / n, d == 0 ? 0.0 : 1.0 / 3, 0.01) << "token depth " << d;
  }
  EXPECT_EQ(capacity_depth(config({Sharing::Cycle, RouterKind::None, KvMode::Recursion, 3}), 5), -1);
  Model m(e, kern::cpu_backend());
  m.init(4);
  Decoder dec(m, 2);
  GenOptions o;
  o.max_new_tokens = 8;
  o.sampling.temperature = 0;
  o.capacity_depths = true;
  const std::vector<GenRequest> reqs = {{random_tokens(e, 5, 1), 0}, {random_tokens(e, 3, 2), 1}};
  const std::vector<GenResult> r = generate(dec, reqs, o);
  for (size_t i = 0; i < r.size(); ++i) {
    std::vector<int64_t> want(4, 0);
    for (int p = 0; p < r[i].fed; ++p) ++want[capacity_depth(e, p)];
    EXPECT_EQ(r[i].tokens_at_depth, want) << "request " << i;
  }
}

TEST(DecodeBatch, ContextLimitStopsGeneration) {
  const ModelConfig c = config({Sharing::Cycle, RouterKind::None, KvMode::Recursion, 3});
  Model m(c, kern::cpu_backend());
  m.init(2);
  Decoder dec(m, 1);
  GenOptions o;
  o.max_new_tokens = 100;
  o.sampling.temperature = 0;
  const std::vector<GenResult> r = generate(dec, {{random_tokens(c, 10, 1), 0}}, o);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_STREQ(r[0].stop, "context");
  EXPECT_EQ(r[0].ids.size(), 5u);  // fed at positions 10..13, and the token after position 13 still sampled
  EXPECT_EQ(r[0].fed, c.seq_len);
}

TEST(DecodeErrors, BadInputIsRefused) {
  const ModelConfig c = config({Sharing::MiddleCycle, RouterKind::Expert, KvMode::Share, 3});
  Model m(c, kern::cpu_backend());
  m.init(1);
  Decoder dec(m, 2);
  EXPECT_THROW(dec.step({{2, {1}, {}}}), std::invalid_argument);                          // no slot 2
  EXPECT_THROW(dec.step({{0, {1}, {}}, {0, {2}, {}}}), std::invalid_argument);            // slot twice
  EXPECT_THROW(dec.step({{0, {}, {}}}), std::invalid_argument);                           // no tokens
  EXPECT_THROW(dec.step({{0, {37}, {}}}), std::invalid_argument);                         // outside the vocabulary
  EXPECT_THROW(dec.step({{0, std::vector<int32_t>(15, 1), {}}}), std::invalid_argument);  // past seq_len
  EXPECT_THROW(dec.step({{0, {1}, {0}}}), std::invalid_argument);                         // depth 0 under kv share
  EXPECT_EQ(dec.length(0), 0);                                                            // nothing ran
  EXPECT_THROW(Decoder(m, 1, 1.5f), std::invalid_argument);
  GenOptions o;
  EXPECT_THROW(generate(dec, {{{}, 0}}, o), std::invalid_argument);
  o.max_new_tokens = 0;
  EXPECT_THROW(generate(dec, {{{1}, 0}}, o), std::invalid_argument);
}

// generate's model has no gradient arena; it decodes exactly what a trainable one does.
TEST(DecodeErrors, ModelWithoutGradients) {
  const ModelConfig c = config({Sharing::MiddleCycle, RouterKind::Token, KvMode::Recursion, 3});
  Model train(c, kern::cpu_backend()), infer(c, kern::cpu_backend(), false);
  train.init(6);
  infer.init(6);
  EXPECT_EQ(infer.grads.capacity(), 0);
  const std::vector<int32_t> tok = random_tokens(c, c.seq_len + 1, 4);
  EXPECT_THROW(infer.step(tok.data(), 1, 1, true), std::logic_error);
  EXPECT_EQ(infer.step(tok.data(), 1, 1, false).ce, train.step(tok.data(), 1, 1, false).ce);
  Decoder a(train, 1), b(infer, 1);
  const std::vector<int32_t> prompt(tok.begin(), tok.begin() + 5);
  EXPECT_EQ(a.step({{0, prompt, {}}})[0].logits, b.step({{0, prompt, {}}})[0].logits);
}

// ---- sampling ----------------------------------------------------------------------------------

TEST(Sampling, GreedyTakesTheFirstLargest) {
  const std::vector<float> l = {0.1f, 2.f, -1.f, 2.f};
  Rng rng(1, 0);
  SamplingOptions o;
  o.temperature = 0;
  EXPECT_EQ(sample_token(l.data(), 4, o, rng), 1);
  o.n_allowed = 1;
  EXPECT_EQ(sample_token(l.data(), 4, o, rng), 0);
}

TEST(Sampling, TemperatureTopKTopPFollowTheirDistributions) {
  const std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  auto freq = [&](SamplingOptions o, int n) {
    Rng rng(42, 7);
    std::vector<int> count(3, 0);
    for (int i = 0; i < n; ++i) count[sample_token(l.data(), 3, o, rng)] += 1;
    return std::vector<double>{(double)count[0] / n, (double)count[1] / n, (double)count[2] / n};
  };
  const int n = 20000;
  std::vector<double> f = freq({1.f, 0, 1.f, 0}, n);
  EXPECT_NEAR(f[0], 0.5, 0.02);
  EXPECT_NEAR(f[1], 0.3, 0.02);
  EXPECT_NEAR(f[2], 0.2, 0.02);
  f = freq({1.f, 2, 1.f, 0}, n);  // top-k 2: renormalised 5/8, 3/8
  EXPECT_EQ(f[2], 0);
  EXPECT_NEAR(f[0], 0.625, 0.02);
  f = freq({1.f, 0, 0.6f, 0}, n);  // top-p 0.6: 0.5 < 0.6 <= 0.8, so {0, 1}
  EXPECT_EQ(f[2], 0);
  EXPECT_NEAR(f[1], 0.375, 0.02);
  f = freq({1.f, 0, 0.4f, 0}, n);  // top-p below the largest: greedy
  EXPECT_EQ(f[0], 1.0);
  f = freq({0.5f, 0, 1.f, 0}, n);  // temperature 0.5: p ∝ p^2 = .25 .09 .04
  EXPECT_NEAR(f[0], 0.25 / 0.38, 0.02);
  EXPECT_NEAR(f[2], 0.04 / 0.38, 0.02);
  f = freq({1.f, 1, 1.f, 0}, n);  // top-k 1 at any temperature: greedy
  EXPECT_EQ(f[0], 1.0);
}

TEST(Sampling, SameSeedAndStreamSameTokens) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = std::sin(i * 1.7f);
  auto draw = [&](uint64_t seed, uint64_t stream) {
    Rng rng(seed, stream);
    std::vector<int32_t> ids;
    for (int i = 0; i < 32; ++i) ids.push_back(sample_token(l.data(), 50, {0.9f, 20, 0.95f, 0}, rng));
    return ids;
  };
  EXPECT_EQ(draw(1, 0), draw(1, 0));
  EXPECT_NE(draw(1, 0), draw(2, 0));
  EXPECT_NE(draw(1, 0), draw(1, 1));
}

TEST(Sampling, BadOptionsAreRefused) {
  EXPECT_THROW(check_sampling({-1.f, 0, 1.f, 0}), std::invalid_argument);
  EXPECT_THROW(check_sampling({NAN, 0, 1.f, 0}), std::invalid_argument);
  EXPECT_THROW(check_sampling({1.f, -2, 1.f, 0}), std::invalid_argument);
  EXPECT_THROW(check_sampling({1.f, 0, 0.f, 0}), std::invalid_argument);
  EXPECT_THROW(check_sampling({1.f, 0, 1.5f, 0}), std::invalid_argument);
  EXPECT_NO_THROW(check_sampling({0.f, 0, 1.f, 0}));
}

}  // namespace

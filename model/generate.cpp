#include "model/generate.h"

#include <cmath>

#include <stdexcept>

namespace mor {

namespace {

// A request decoding in a slot.
struct Active {
  int req = -1;      // -1: the slot is free
  int32_t next = 0;  // the token sampled last, fed in the next step
  GenResult res;
  Rng rng{0, 0};
};

void check_requests(const Decoder& dec, const std::vector<GenRequest>& reqs, const GenOptions& o) {
  if (o.max_new_tokens < 1) throw std::invalid_argument("max_new_tokens must be >= 1");
  check_sampling(o.sampling);
  const int T = dec.config().seq_len;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const size_t n = reqs[i].prompt.size();
    if (n == 0) throw std::invalid_argument("prompt " + std::to_string(i) + " has no tokens");
    if (n > (size_t)T)
      throw std::invalid_argument("prompt " + std::to_string(i) + " has " + std::to_string(n) +
                                  " tokens; the model has " + std::to_string(T) + " positions");
  }
}

// The chunk's tokens, with their capacity depths when asked for.
DecodeChunk make_chunk(const Decoder& dec, int slot, std::vector<int32_t> tokens, const GenOptions& o) {
  DecodeChunk ch{slot, std::move(tokens), {}};
  if (o.capacity_depths && dec.config().router != RouterKind::None)
    for (size_t i = 0; i < ch.tokens.size(); ++i)
      ch.forced_depth.push_back(capacity_depth(dec.config(), dec.length(slot) + (int)i));
  return ch;
}

}  // namespace

int capacity_depth(const ModelConfig& c, int pos) {
  const int R = c.n_recursions;
  double u = std::fmod((pos + 0.5) * 0.6180339887498949, 1.0);  // spread over [0, 1)
  if (c.router == RouterKind::Token) return 1 + std::min(R - 1, (int)(u * R));
  if (c.router != RouterKind::Expert) return -1;
  int d = 0;
  while (d < R && u < c.capacity_of(d)) ++d;  // kept by recursions 0..d-1
  return d;
}

std::vector<GenResult> generate(Decoder& dec, const std::vector<GenRequest>& reqs, const GenOptions& o,
                                const GenCallbacks& cb) {
  check_requests(dec, reqs, o);
  const ModelConfig& c = dec.config();
  std::vector<GenResult> results(reqs.size());
  std::vector<Active> slot(dec.slots());
  size_t waiting = 0;  // the next request to start
  std::vector<DecodeChunk> chunks;
  std::vector<int> slot_of_chunk;
  for (;;) {
    // Every busy slot feeds its last token; a free slot takes the next waiting prompt at once.
    chunks.clear();
    slot_of_chunk.clear();
    for (int s = 0; s < dec.slots(); ++s) {
      Active& a = slot[s];
      if (a.req < 0 && waiting < reqs.size()) {
        a.req = (int)waiting++;
        a.res = GenResult{};
        a.res.tokens_at_depth.assign(c.n_recursions + 1, 0);
        a.rng = Rng(o.seed, reqs[a.req].stream);
        dec.reset(s);
        chunks.push_back(make_chunk(dec, s, reqs[a.req].prompt, o));
      } else if (a.req >= 0) {
        chunks.push_back(make_chunk(dec, s, {a.next}, o));
      } else {
        continue;
      }
      slot_of_chunk.push_back(s);
    }
    if (chunks.empty()) break;
    const std::vector<DecodeOut> out = dec.step(chunks);
    for (size_t k = 0; k < chunks.size(); ++k) {
      const int s = slot_of_chunk[k];
      Active& a = slot[s];
      for (int d : out[k].depth) a.res.tokens_at_depth[d] += 1;
      const int32_t id = sample_token(out[k].logits.data(), c.vocab_size, o.sampling, a.rng);
      if (id == o.eot) {
        a.res.stop = "eot";
      } else {
        a.res.ids.push_back(id);
        if (cb.on_token) cb.on_token(a.req, id);
        if ((int)a.res.ids.size() >= o.max_new_tokens)
          a.res.stop = "length";
        else if (dec.length(s) >= c.seq_len)  // no position left to feed it at
          a.res.stop = "context";
        else
          a.next = id;
      }
      if (*a.res.stop) {  // finished: report it and free the slot
        a.res.fed = dec.length(s);
        a.res.kv_bytes = dec.cache(s).bytes();
        a.res.vanilla_kv_bytes = dec.cache(s).vanilla_bytes(a.res.fed);
        results[a.req] = std::move(a.res);
        if (cb.on_done) cb.on_done(a.req, results[a.req]);
        a.req = -1;
        dec.reset(s);
      }
    }
  }
  return results;
}

}  // namespace mor

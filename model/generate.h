// Text generation over a Decoder with continuous depth-wise batching: up to `slots` sequences
// decode together, one token each per step (depth-wise batching inside Decoder::step: each
// recursion of the shared block runs once over the tokens of every sequence that reached it); a
// sequence that finishes frees its slot, and the next waiting prompt is prefilled into it in the
// very next step, beside the others' single tokens. Each request samples from its own RNG stream
// (seed, stream), so its tokens are the same whether it runs alone or in a batch.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/decode.h"
#include "model/sampling.h"

namespace mor {

struct GenRequest {
  std::vector<int32_t> prompt;  // at least one token; at most seq_len
  uint64_t stream = 0;          // RNG stream: the prompt's index
};

struct GenOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
  int32_t eot = -1;  // end-of-text: ends the sequence, not part of its output (-1: none)
  // Throughput benchmarks (--capacity-depths): every token's depth comes from capacity_depth()
  // instead of the router, so that a model with untrained routers does the work a trained one
  // would. The text is then not what the model would write.
  bool capacity_depths = false;
};

// The depth (recursions) a token at position pos gets with GenOptions::capacity_depths: expert-
// choice's shares are what its capacities keep (1 - c_0 none, c_0 - c_1 one, ..., c_{N_r-1} all
// N_r), token-choice's are equal (1/N_r each depth 1..N_r); positions are spread over the depths by
// a golden-ratio sequence, so every stretch of tokens has about these shares. -1 without a router.
int capacity_depth(const ModelConfig& c, int pos);

struct GenResult {
  std::vector<int32_t> ids;              // the new tokens
  const char* stop = "";                 // "eot", "length" (max_new_tokens) or "context" (seq_len positions used)
  std::vector<int64_t> tokens_at_depth;  // tokens fed (prompt and new) by recursions received, [N_r + 1]
  int64_t fed = 0;                       // tokens fed, i.e. cached
  int64_t kv_bytes = 0;                  // its KV cache at the end (KvCache::bytes)
  int64_t vanilla_kv_bytes = 0;          // a vanilla cache of the same depth over the same tokens
};

struct GenCallbacks {
  std::function<void(int req, int32_t id)> on_token;         // each new token as it is produced (may be empty)
  std::function<void(int req, const GenResult& r)> on_done;  // request req finished (may be empty)
};

// Runs every request to its end on dec (its slots are the batch); results in request order.
// Throws std::invalid_argument for an empty prompt, one longer than seq_len, or max_new_tokens < 1.
std::vector<GenResult> generate(Decoder& dec, const std::vector<GenRequest>& reqs, const GenOptions& o,
                                const GenCallbacks& cb = {});

}  // namespace mor

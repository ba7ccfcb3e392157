// Choosing the next token from a row of logits: greedy, or a draw at a temperature restricted to
// the top-k and/or top-p (nucleus) tokens. Host code in double precision; one uniform draw from
// the sequence's own Rng per sampled token (none when greedy), so a sequence's text depends only
// on its logits and its RNG stream, not on what else is decoded beside it.
#pragma once
#include <cstdint>

#include "model/rng.h"

namespace mor {

struct SamplingOptions {
  float temperature = 1.f;  // 0: greedy (the largest logit; the lowest id on ties)
  int top_k = 0;            // keep the k most likely tokens (0: all)
  float top_p = 1.f;        // then the fewest most likely tokens whose probability reaches p (1: all)
  int n_allowed = 0;        // only ids < n_allowed are chosen (a tokenizer smaller than the vocabulary); 0: all
};

// Throws std::invalid_argument naming the field for a temperature < 0 or not finite, top_k < 0,
// top_p outside (0, 1], n_allowed < 0.
void check_sampling(const SamplingOptions& o);

// The next token from logits[V]. Ranking ties go to the lower id. With temperature T > 0:
// p_i ∝ exp((l_i - max l) / T) over the kept tokens, one draw u ∈ [0, 1) from rng.
int32_t sample_token(const float* logits, int V, const SamplingOptions& o, Rng& rng);

}  // namespace mor

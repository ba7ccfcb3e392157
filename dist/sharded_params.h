// FSDP-style sharded parameters. Every tensor is split on dim 0 into W nearly
// equal row blocks (the last padded); rank r keeps block r of every tensor of
// a unit packed into one buffer, so a unit costs ONE all-gather and ONE
// reduce-scatter. Between steps a rank holds only its shards (params, grads,
// AdamW moments); the model's full arena is materialised unit by unit through
// the UnitHooks the model calls, and released (pages returned to the OS) after
// each unit's last use. The shared recursion block is one unit: gathered once
// before recursion 1, kept for all N_r recursions, gathered once more for
// backward (or kept, with keep_shared_gathered), its gradient accumulated over
// the N_r uses and reduce-scattered once.
#pragma once
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "dist/partition.h"
#include "model/model.h"
#include "model/optimizer.h"

namespace mor::dist {

struct ShardOptions {
  bool regather_per_recursion = false;  // comparison mode: gather the shared block for every use
  bool keep_shared_gathered = false;    // keep the shared block from forward to backward
  bool overlap = true;                  // prefetch the next unit while the current one computes
  // What the collectives carry: parameters all-gathered as fp32 or bf16 (each rank rounds its
  // shard; every rank then computes with the same bf16-rounded weights, upcast), gradients
  // reduce-scattered as fp32 or bf16 (summed in fp32 per pair, rounded after each). The shards,
  // the optimizer and the checkpoints stay fp32 either way.
  kern::DType param_dtype = kern::DType::F32;
  kern::DType reduce_dtype = kern::DType::F32;
};

class ShardedParams : public UnitHooks {
 public:
  ShardedParams(Model& m, Communicator& comm, ShardOptions opt);
  ~ShardedParams() override;

  // Takes this rank's shards from the model's full parameters (identical on
  // every rank after a seeded init) and releases the full copy.
  void shard_from_full();
  // Materialises every unit in the model's arena (for saving or inspection).
  void gather_full();
  // Whether the current micro-batch's backward ends the step (then gradients are reduce-scattered).
  void set_last_micro(bool last) { last_micro_ = last; }
  // Waits for the step's outstanding reduce-scatters; afterwards `grad` holds the summed shard.
  void finish_backward();

  void need(int unit, bool backward) override;
  void done(int unit, bool backward, bool last_use) override;

  int64_t shard_size() const { return (int64_t)param.size(); }
  std::vector<uint8_t> decay_mask(const std::string& no_decay) const;  // per shard element (padding: 0)
  int64_t unit_bytes(int unit) const;  // full (unsharded) bytes of a unit, padding included
  // This rank's rows of every tensor: in `param` and in each of the optimizer's state arrays.
  LocalState local_tensors(AdamW& opt);

  Buffer<float> param, grad;  // this rank's packed shards of every unit, unit after unit (backend memory)
  int64_t gathered_bytes = 0, gathered_peak_bytes = 0;  // full-unit bytes materialised now / at most

 private:
  struct Slice {  // one tensor inside a unit's packed shard
    int tensor;
    int64_t rows, cols, rows_per_rank, shard_off;
  };
  struct Unit {
    std::vector<Slice> slices;
    int64_t off = 0, len = 0;  // in param/grad; len = floats per rank
    bool present = false;
    std::unique_ptr<Work> gather;  // pending prefetch
    Buffer<float> recv;            // [W][len] all-gather target
    Buffer<float> send;            // [W][len] reduce-scatter source
    // bf16 collectives: the rounded shard sent / every rank's rounded shard received (all-gather);
    // the rounded gradient blocks sent / our summed block received (reduce-scatter).
    Buffer<kern::bf16> gather_send16, gather_recv16, reduce_send16, reduce_recv16;
  };
  void start_gather(int u);
  void finish_gather(int u);
  void release_params(int u);
  void release_grads(int u);
  void prefetch_after(int u, bool backward);
  void poke();
  // Unpacks every rank's block of unit u from `packed` ([W][len]) into the full arena `full`, or
  // (pack) the other way round.
  void unpack(int u, const float* packed, float* full);
  void pack(int u, const float* full, float* packed);
  std::string tag(const char* op, int u) const;

  Model& m_;
  kern::Backend& be_;
  Communicator& comm_;
  ShardOptions opt_;
  std::vector<Unit> units_;
  std::vector<int> fwd_order_;  // units in forward order (the embedding first)
  std::vector<std::unique_ptr<Work>> reductions_;
  std::vector<int> bf16_reduced_;  // units whose bf16 reduce-scatter result awaits its cast into `grad`
  bool last_micro_ = true;
};

// The same for one process holding every row (no ShardedParams): the model's arena and the optimizer's.
LocalState whole_tensors(Model& m, AdamW& opt);

}  // namespace mor::dist

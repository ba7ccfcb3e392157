// A CPU emulation of the part of CUDA's programming model that kernels/cuda/attention_flash.cu
// uses, so that its kernels' own source runs on the host (tests/test_cuda_emu.cpp). A block's
// threads are fibers (ucontext) on the calling thread, run round-robin: each runs until it waits
// at a barrier (__syncthreads: the block's; a warp shuffle: its warp's 32 threads, through an
// exchange buffer between two barriers) or ends; threads that have ended no longer count. Dynamic
// shared memory is one array per block filled with NaN first (a read of a word nobody wrote shows
// up in the results); blocks run one after another; a barrier that can never complete (a
// __syncthreads some threads skip) aborts with a message. A launch is checked as CUDA would: a
// non-empty grid, whole warps, at most 1024 threads, and dynamic shared memory above 48 KiB only
// up to what cudaFuncSetAttribute allowed for that kernel (and at most an sm_80 block's 163 KiB).
// What it cannot say: anything about a GPU's memory model, timing, compiler or numerics beyond
// IEEE fp32 on the host. It stands in for <cuda_runtime.h> only in that test's include path.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

using std::max;
using std::min;

namespace cuda_emu {

constexpr size_t kDefaultSmem = 48 * 1024, kMaxSmem = 166912;  // sm_80's opt-in limit
constexpr size_t kStack = 64 * 1024;                           // per emulated thread

struct Barrier {
  int expected = 0, arrived = 0;
  int64_t phase = 0;
};
struct Warp {
  Barrier bar;
  alignas(8) unsigned char slot[32][8];
};

inline dim3 g_thread, g_block, g_grid, g_block_dim;
inline std::map<const void*, size_t> g_smem_allowed;  // kernel -> bytes, from cudaFuncSetAttribute
inline int64_t g_launches = 0, g_blocks = 0;

// The running block: its fibers, barriers and shared memory.
struct Block {
  std::vector<float> smem;
  Barrier bar;
  std::vector<Warp> warps;
  std::vector<ucontext_t> ctx;
  std::vector<char> done;
  ucontext_t sched;
  int current = 0;
  int64_t events = 0;  // barrier phases completed and threads ended: progress
  std::function<void()> body;
};
inline Block* g_current = nullptr;
inline std::vector<char> g_stacks;

inline float* shared_words() { return g_current->smem.data(); }

inline void yield() {
  Block& b = *g_current;
  swapcontext(&b.ctx[b.current], &b.sched);
}
inline void complete(Barrier& br) {
  br.arrived = 0;
  ++br.phase;
  ++g_current->events;
}
inline void arrive_and_wait(Barrier& br) {
  const int64_t mine = br.phase;
  if (++br.arrived == br.expected)
    complete(br);
  else
    while (br.phase == mine) yield();
}
inline void arrive_and_drop(Barrier& br) {
  --br.expected;
  if (br.arrived > 0 && br.arrived == br.expected) complete(br);
}

inline void fiber_main(int t) {
  Block& b = *g_current;
  b.body();
  arrive_and_drop(b.warps[t / 32].bar);  // an ended thread no longer holds the others up
  arrive_and_drop(b.bar);
  b.done[t] = 1;
  ++b.events;
}  // returns to b.sched (uc_link)

// Every lane of the warp passes its value, then reads lane `src`'s.
template <class T>
T exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= 8, "8-byte slots");
  Warp& w = g_current->warps[g_thread.x / 32];
  std::memcpy(w.slot[g_thread.x % 32], &v, sizeof(T));
  arrive_and_wait(w.bar);
  T r;
  std::memcpy(&r, w.slot[src], sizeof(T));
  arrive_and_wait(w.bar);  // every lane has read before the next exchange writes
  return r;
}

template <class K, class... A>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, K kernel, A... args) {
  const unsigned threads = block.x * block.y * block.z;
  if (!grid.x || !grid.y || !grid.z) throw std::runtime_error("cuda_emu: empty grid (invalid configuration)");
  if (block.y != 1 || block.z != 1 || threads % 32 || threads > 1024)
    throw std::runtime_error("cuda_emu: blocks must be 1-D, whole warps, at most 1024 threads");
  if (grid.y > 65535 || grid.z > 65535) throw std::runtime_error("cuda_emu: grid y/z above 65535");
  if (smem > kDefaultSmem) {
    auto it = g_smem_allowed.find(reinterpret_cast<const void*>(kernel));
    if (it == g_smem_allowed.end() || it->second < smem)
      throw std::runtime_error("cuda_emu: " + std::to_string(smem) +
                               " bytes of dynamic shared memory without cudaFuncSetAttribute");
  }
  if (smem > kMaxSmem) throw std::runtime_error("cuda_emu: more shared memory than an sm_80 block has");
  ++g_launches;
  g_grid = grid;
  g_block_dim = block;
  g_stacks.resize(threads * kStack);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b;
        b.smem.assign((smem + 3) / 4, std::numeric_limits<float>::quiet_NaN());
        b.bar.expected = (int)threads;
        b.warps = std::vector<Warp>(threads / 32);
        for (Warp& w : b.warps) w.bar.expected = 32;
        b.ctx.resize(threads);
        b.done.assign(threads, 0);
        b.body = [&] { kernel(args...); };
        g_current = &b;
        g_block = dim3(bx, by, bz);
        ++g_blocks;
        for (unsigned t = 0; t < threads; ++t) {
          getcontext(&b.ctx[t]);
          b.ctx[t].uc_stack.ss_sp = g_stacks.data() + t * kStack;
          b.ctx[t].uc_stack.ss_size = kStack;
          b.ctx[t].uc_link = &b.sched;
          makecontext(&b.ctx[t], (void (*)())fiber_main, 1, (int)t);
        }
        for (unsigned left = threads; left > 0;) {
          const int64_t before = b.events;
          for (unsigned t = 0; t < threads; ++t) {
            if (b.done[t]) continue;
            b.current = (int)t;
            g_thread = dim3(t);
            swapcontext(&b.sched, &b.ctx[t]);
            if (b.done[t]) --left;
          }
          if (left > 0 && b.events == before) {
            std::fprintf(stderr, "cuda_emu: block (%u, %u, %u) deadlocked: a barrier some threads never reach\n", bx,
                         by, bz);
            std::abort();
          }
        }
        g_current = nullptr;
      }
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::g_thread)
#define blockIdx (::cuda_emu::g_block)
#define blockDim (::cuda_emu::g_block_dim)
#define gridDim (::cuda_emu::g_grid)

inline void __syncthreads() { cuda_emu::arrive_and_wait(cuda_emu::g_current->bar); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return cuda_emu::exchange(v, (threadIdx.x % 32) ^ (unsigned)lane_mask);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta) {
  const unsigned src = threadIdx.x % 32 + delta;
  const T r = cuda_emu::exchange(v, src < 32 ? src : threadIdx.x % 32);
  return src < 32 ? r : v;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute, int bytes) {
  cuda_emu::g_smem_allowed[reinterpret_cast<const void*>(kernel)] = (size_t)bytes;
  return cudaSuccess;
}

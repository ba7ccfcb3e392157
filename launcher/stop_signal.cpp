#include "launcher/stop_signal.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace mor {
namespace {
std::atomic<int> g_signal{0};
std::atomic<bool> g_end_process{false};

sigset_t stop_set() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  return s;
}
}  // namespace

void route_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A shell starts background jobs with SIGINT ignored; an ignored signal is discarded before
  // sigwait can take it. Blocked, the default action never runs: the thread below decides.
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) signal(sig, SIG_DFL);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (g_end_process.load()) {  // the default action, taken on this thread
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
        raise(sig);
      }
      int none = 0;
      // A second Ctrl-C (or any second stop signal) while the first is being handled: the user
      // wants out now. The previous checkpoint is intact (a save in flight only has its .tmp).
      if (!g_signal.compare_exchange_strong(none, sig) && sig == SIGINT) {
        std::fputs("\nmor-dist: second interrupt: exiting at once\n", stderr);
        std::_Exit(128 + SIGINT);
      }
    }
  }).detach();
}

void stop_signals_end_process() { g_end_process.store(true); }

int stop_signal() { return g_signal.load(); }

bool stop_requested() {
  static const int pause_ms = [] {
    const char* v = std::getenv("MOR_TEST_STOP_POLL_MS");
    return v ? std::atoi(v) : 0;
  }();
  if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  return stop_signal() != 0;
}

}  // namespace mor

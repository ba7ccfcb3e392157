#include "launcher/stop_signal.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
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
  return s;
}
}  // namespace

void route_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
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
      g_signal.compare_exchange_strong(none, sig);
    }
  }).detach();
}

void stop_signals_end_process() { g_end_process.store(true); }

int stop_signal() { return g_signal.load(); }

}  // namespace mor

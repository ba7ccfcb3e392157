#pragma once
// SIGUSR1 / SIGTERM / SIGINT (SLURM's warning before a time limit, preemption,
// Ctrl-C) as a flag that training polls once per step: the ranks agree on it,
// finish the step, save and exit 85. eval and convert poll it too and exit 130.
// A second SIGINT exits at once (status 130).
namespace mor {

// Call first in main, before any other thread exists: blocks both signals in
// this thread (every thread created later inherits the mask) and starts the one
// thread that takes them, with sigwait. No compute thread ever runs a handler:
// a handler's frame on a thread inside oneDNN's JIT GEMM overwrote data that
// kernel keeps below its stack pointer (heap corruption in 5 of 10 signalled runs).
void route_stop_signals();
// From now on SIGUSR1/SIGTERM end the process as by default (commands that never
// poll the flag: prepare).
void stop_signals_end_process();
// 0, or the first stop signal received.
int stop_signal();
// stop_signal() != 0, for the poll points of eval and convert. Test hook: MOR_TEST_STOP_POLL_MS=N
// sleeps N ms at each poll first, so a test can deliver a signal mid-way on any machine.
bool stop_requested();

}  // namespace mor

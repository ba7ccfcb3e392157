#pragma once
#include "dist/communicator.h"

namespace mor {
int cmd_train(int argc, char** argv, dist::Communicator& comm);
// SIGUSR1/SIGTERM set a flag that training checks once per step (save, exit 85).
// Installed first thing in main, so an early signal is never fatal.
void install_stop_handlers();
int cmd_eval(int argc, char** argv);
int cmd_convert(int argc, char** argv, dist::Communicator& comm);
int cmd_inspect(int argc, char** argv);
}

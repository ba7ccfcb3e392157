#pragma once
#include "dist/communicator.h"

namespace mor {
int cmd_train(int argc, char** argv, dist::Communicator& comm);
int cmd_eval(int argc, char** argv);
}

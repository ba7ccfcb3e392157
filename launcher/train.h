#pragma once
#include "dist/communicator.h"

namespace mor {
int cmd_train(int argc, char** argv, dist::Communicator& boot);
int cmd_eval(int argc, char** argv);
int cmd_convert(int argc, char** argv, dist::Communicator& comm);
int cmd_inspect(int argc, char** argv);
int cmd_export(int argc, char** argv);    // launcher/export_cmd.cpp
int cmd_generate(int argc, char** argv);  // launcher/generate_cmd.cpp
}  // namespace mor

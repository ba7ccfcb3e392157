#pragma once
namespace mor {
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
}

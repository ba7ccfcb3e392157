// What this binary is: version, git revision and build flags, for `mor-dist --version`, the
// first line of a run's log and the record in checkpoints.
#pragma once
#include <string>

namespace mor {

// One line, e.g. "mor-dist 0.1.0 (git 66dc2fa1b2c3, Release, GNU 12.2.0, -O3 -DNDEBUG -march=native,
// OpenBLAS 0.3.21 ... + oneDNN 3.0.0)". The git revision is the one at CMake's configure step
// (a commit re-runs it; "-dirty": uncommitted changes to tracked files then; "unknown": not built
// from a git checkout). The BLAS part is what the loaded libraries report at run time.
std::string version_string();

// The same facts, one per line ("version: ...", "git revision: ...", ...), for --version.
std::string version_details();

// The parts.
const char* version_number();  // "0.1.0" (CMake's project version)
const char* git_revision();    // "66dc2fa1b2c3", "66dc2fa1b2c3-dirty" or "unknown"

}  // namespace mor

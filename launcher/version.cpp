#include "launcher/version.h"

#include <dnnl.h>

#include <string>

// Set by launcher/CMakeLists.txt (from the top-level CMakeLists.txt) on this file only, so that a
// new revision recompiles one file.
#ifndef MOR_GIT_REVISION
#define MOR_GIT_REVISION "unknown"
#endif
#ifndef MOR_BUILD_TYPE
#define MOR_BUILD_TYPE "unknown"
#endif
#ifndef MOR_COMPILER
#define MOR_COMPILER "unknown"
#endif
#ifndef MOR_BUILD_FLAGS
#define MOR_BUILD_FLAGS "unknown"
#endif
#ifndef MOR_BLAS_LIBS
#define MOR_BLAS_LIBS "unknown"
#endif

extern "C" char* openblas_get_config(void);

namespace mor {

namespace {

std::string openblas_config() {
  const char* c = openblas_get_config();
  std::string s = c ? c : "OpenBLAS (no config string)";
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  if (!v) return "oneDNN (no version)";
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace

const char* version_number() { return MOR_VERSION; }
const char* git_revision() { return MOR_GIT_REVISION; }

std::string version_string() {
  return std::string("mor-dist ") + MOR_VERSION + " (git " + MOR_GIT_REVISION + ", " + MOR_BUILD_TYPE + ", " +
         MOR_COMPILER + ", " + MOR_BUILD_FLAGS + ", " + openblas_config() + " + " + onednn_version() + ")";
}

std::string version_details() {
  return std::string("mor-dist ") + MOR_VERSION + "\n" + "git revision: " + MOR_GIT_REVISION + "\n" +
         "build type: " + MOR_BUILD_TYPE + "\n" + "compiler: " + MOR_COMPILER + "\n" + "flags: " + MOR_BUILD_FLAGS +
         "\n" + "BLAS: " + openblas_config() + " + " + onednn_version() + " (linked: " + MOR_BLAS_LIBS + ")\n";
}

}  // namespace mor

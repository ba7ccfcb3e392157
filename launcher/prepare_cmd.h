// `mor-dist prepare`: JSONL (plain / .gz / .zst) -> llm.c token shards + manifest.json.
// See io/data/prepare.h for the output layout and the bad-input rules.
#pragma once

namespace mor {
// argv[0] is "prepare". Bad options throw ConfigError (exit 2, naming the
// option); runtime errors throw std::runtime_error (exit 1, naming the file).
int cmd_prepare(int argc, char** argv);
}  // namespace mor

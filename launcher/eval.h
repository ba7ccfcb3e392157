// Validation loss: inside training (every train.eval_every steps) and `mor-dist eval`.
#pragma once
#include "dist/communicator.h"
#include "io/data/loader.h"
#include "model/model.h"

namespace mor {

// Mean validation cross-entropy over the first n windows (all if n = 0); each
// rank scores a contiguous slice and the sums are added over ranks. Every rank
// runs the same number of forward passes (sharded units are gathered collectively).
// interruptible: a stop signal ends the evaluation (ckpt::Interrupted); inside training the
// signal is taken at the next step boundary instead.
double evaluate(Model& m, io::ValLoader& val, int n, int micro, dist::Communicator& comm, bool interruptible = false);

}  // namespace mor

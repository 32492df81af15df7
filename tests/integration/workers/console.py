"""What each rank of a 2-rank job writes, for the launcher's console to sort out: rank 0 a line
in two pieces and TensorFlow-style start-up lines; every rank the same warning; rank 1 a
warning of its own and chatter on stdout.

    python -c "from hvdkit.launch.job import *; from hvdkit.launch.options import *;
        run_job(LaunchOptions(np=2), [python, console.py])"
"""

import sys
import warnings

from hvdkit.runtime.rank import rank_from_env

rank = rank_from_env()
print("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
      file=sys.stderr, flush=True)
print("I0000 00:00:1795676104.335217    9190 port.cc:153] oneDNN custom operations are on.",
      file=sys.stderr, flush=True)
warnings.warn("every rank says this", stacklevel=1)
if rank == 0:
    sys.stdout.write("first half, ")
    sys.stdout.flush()
    sys.stdout.write("second half\n")
    sys.stdout.flush()
else:
    warnings.warn(f"only rank {rank} says this", stacklevel=1)
    print(f"rank {rank} chatter", flush=True)

"""Before and around the ranks: the launch of a job and what watches it.

    hvdkit.cli → launch.train.run_training → mpirun | horovodrun | Ray → `python -m hvdkit.worker`

Command lines (mpirun, horovodrun, Ray), hosts and machines, machine defaults, the checks made
before any rank starts, run folders, the console filter, the interrupt guard, the watchdog's
monitor and the failure report. Nothing here imports a framework.
"""

"""Scaling studies: sweeps (`hvdkit scale`), allreduce microbenchmarks (`hvdkit bench
allreduce`), launch-setting trials (`hvdkit tune`), and their CSV/JSON/markdown/PNG reports.

Framework-free: every measurement runs as a real Horovod job in child processes.
"""

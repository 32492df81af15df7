"""Inside each rank, below the trainer: the world of ranks, devices, the heartbeat, stop
requests, the job folder shared with the launcher, and a rank's guarded run and quick exit.

Nothing here imports a framework, the trainer or the launcher.
"""

"""Parallel strategies beside Horovod data parallelism; one module each (see DESIGN.md)."""

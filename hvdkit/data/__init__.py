"""Data sets (numpy, framework-free), the per-rank sharded loader and the input pipeline."""

# Registered on import: npy, text, tokens (files); images; webdataset.
from hvdkit.data import files, images, webdataset  # noqa: F401
from hvdkit.data.builder import build_dataset, build_source
from hvdkit.data.datasets import DATASETS, Dataset, to_source
from hvdkit.data.loader import ShardedLoader, eval_shard
from hvdkit.data.memory import DiskArray, open_npy, peak_rss_mib
from hvdkit.data.samples import DataSource, Samples

__all__ = ["DATASETS", "DataSource", "Dataset", "DiskArray", "Samples", "ShardedLoader",
           "build_dataset", "build_source", "eval_shard", "open_npy", "peak_rss_mib", "to_source"]

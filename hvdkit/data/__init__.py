"""Data sets (numpy, framework-free) and the per-rank sharded loader."""

from hvdkit.data.datasets import DATASETS, Dataset, build_dataset
from hvdkit.data.loader import ShardedLoader, eval_shard

__all__ = ["DATASETS", "Dataset", "ShardedLoader", "build_dataset", "eval_shard"]

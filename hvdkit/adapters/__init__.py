"""Framework adapters. Only the modules below this folder import a framework."""

from hvdkit.adapters.base import FRAMEWORKS, Adapter, get_adapter

__all__ = ["FRAMEWORKS", "Adapter", "get_adapter"]

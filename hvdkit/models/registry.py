"""A name → builder table, so that adding a model or a data set is one registration."""

from collections.abc import Callable
from typing import Generic, TypeVar

from hvdkit.errors import UserError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Named builders of one kind ('model', 'data set'); unknown names list the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(builder: T) -> T:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        try:
            return self._builders[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

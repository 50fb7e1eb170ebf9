"""``Record``: the base of every frozen record the deciding core passes around.

A subclass is a frozen dataclass in every way a caller can see: :func:`dataclasses.fields`,
:func:`~dataclasses.replace`, :func:`~dataclasses.asdict` and :func:`~dataclasses.is_dataclass` work;
assigning or deleting a field raises :class:`dataclasses.FrozenInstanceError`; two records are equal
when they are of the same class with equal fields, hash as the tuple of their fields, and print as
``Tier(name='tier4', ...)``; type checkers treat them as frozen (:func:`typing.dataclass_transform`).

Why not ``@dataclass(frozen=True)``: on Python 3.11 it compiles six methods for every class
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``), about
0.4 ms a class on a CI machine, and ``acestep-core info`` creates over forty record classes before
it can answer: a quarter of its start-up (``benchmarks/bench_startup.py``). A ``Record`` subclass
compiles only its ``__init__``; the other five are written once, here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, field
from typing import Any, ClassVar, dataclass_transform


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    """Subclass it and annotate the fields, as with a dataclass; ``field(...)`` works as usual."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    _compared: ClassVar[tuple[str, ...]] = ()
    _hashed: ClassVar[tuple[str, ...]] = ()
    _shown: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls, eq=False, repr=False)
        own = dataclasses.fields(cls)
        cls._compared = tuple(f.name for f in own if f.compare)
        cls._hashed = tuple(f.name for f in own if (f.compare if f.hash is None else f.hash))
        cls._shown = tuple(f.name for f in own if f.repr)

    def __setattr__(self, name: str, value: Any) -> None:
        # The generated __init__ assigns each field once; any later assignment is refused.
        if name in self.__dict__ or name not in self.__dataclass_fields__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values(self._compared) == other._values(self._compared)

    def __hash__(self) -> int:
        return hash(self._values(self._hashed))

    def _values(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in names)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{self.__class__.__qualname__}({shown})"

"""``Record``: the base of every frozen record the deciding core passes around.

A subclass is a frozen dataclass in every way a caller can see: :func:`dataclasses.fields`,
:func:`~dataclasses.replace`, :func:`~dataclasses.asdict` and :func:`~dataclasses.is_dataclass` work;
it is built with the fields' names, positionally or by keyword, defaults and ``default_factory``
filled in and ``__post_init__`` called; assigning or deleting an attribute raises
:class:`dataclasses.FrozenInstanceError`; two records are equal when they are of the same class with
equal fields, hash as the tuple of their fields, and print as ``Tier(name='tier4', ...)``; type
checkers see the generated signature and treat the fields as read-only
(:func:`typing.dataclass_transform`), and so does :func:`inspect.signature`.

Why not ``@dataclass(frozen=True)``: on Python 3.11 it compiles six methods for every class
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``) with
:func:`exec`, about 0.4 ms a class on a CI machine, and ``acestep-core info`` creates some forty
record classes before it can answer: a third of its own start-up (``benchmarks/bench_startup.py``).
Here :func:`dataclasses.dataclass` only collects the fields; the six methods are written once, below.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError, field
from typing import Any, ClassVar, dataclass_transform


class _InitSignature:
    """``Record.__signature__``: the signature dataclasses would generate, built when asked for."""

    def __get__(self, instance: object, owner: type[Record]) -> Any:
        import inspect

        def default(f: dataclasses.Field[Any]) -> Any:
            if f.default is not MISSING:
                return f.default
            return _FACTORY if f.default_factory is not MISSING else inspect.Parameter.empty

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters = [
            inspect.Parameter(f.name, kind, default=default(f), annotation=f.type) for f in owner._fields if f.init
        ]
        return inspect.Signature(parameters, return_annotation=None)


def _values_of(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function from a record to the tuple of its ``names`` fields (what dataclasses compares and hashes)."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        only = operator.attrgetter(names[0])
        return lambda record: (only(record),)
    return lambda record: ()


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    """Subclass it and annotate the fields, as with a dataclass; ``field(...)`` works as usual."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    _fields: ClassVar[tuple[dataclasses.Field[Any], ...]] = ()
    _init_names: ClassVar[tuple[str, ...]] = ()
    _accepted: ClassVar[frozenset[str]] = frozenset()
    _required: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}
    _factories: ClassVar[tuple[tuple[str, Callable[[], Any]], ...]] = ()
    _compared: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _hashed: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _shown: ClassVar[tuple[str, ...]] = ()
    _post_init: ClassVar[Callable[[Any], None] | None] = None
    __signature__: ClassVar[Any] = _InitSignature()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls, init=False, eq=False, repr=False)
        fields = dataclasses.fields(cls)
        cls._fields = fields
        cls._init_names = tuple(f.name for f in fields if f.init)
        cls._accepted = frozenset(cls._init_names)
        cls._defaults = {f.name: f.default for f in fields if f.default is not MISSING}
        cls._factories = tuple(
            (f.name, f.default_factory) for f in fields if f.default is MISSING and f.default_factory is not MISSING
        )
        cls._required = frozenset(
            f.name for f in fields if f.init and f.default is MISSING and f.default_factory is MISSING
        )
        cls._compared = _values_of(tuple(f.name for f in fields if f.compare))
        cls._hashed = _values_of(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
        cls._shown = tuple(f.name for f in fields if f.repr)
        cls._post_init = getattr(cls, "__post_init__", None)
        seen_default = ""
        for f in fields:
            if not f.init:
                continue
            if f.default is not MISSING or f.default_factory is not MISSING:
                seen_default = f.name
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument {seen_default!r}")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if args:
            names = cls._init_names
            if len(args) > len(names):
                raise TypeError(f"{cls.__qualname__}() takes {len(names)} arguments but {len(args)} were given")
            positional = dict(zip(names, args, strict=False))
            twice = kwargs.keys() & positional.keys()
            if twice:
                raise TypeError(f"{cls.__qualname__}() got multiple values for argument {sorted(twice)[0]!r}")
            kwargs = positional | kwargs
        if not cls._accepted.issuperset(kwargs):
            unexpected = sorted(kwargs.keys() - cls._accepted)[0]
            raise TypeError(f"{cls.__qualname__}() got an unexpected keyword argument {unexpected!r}")
        if not kwargs.keys() >= cls._required:
            missing = sorted(cls._required - kwargs.keys())[0]
            raise TypeError(f"{cls.__qualname__}() missing required argument {missing!r}")
        values = self.__dict__
        values.update(cls._defaults)
        values.update(kwargs)
        for name, factory in cls._factories:
            if name not in kwargs:
                values[name] = factory()
        if cls._post_init is not None:
            cls._post_init(self)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        compared = type(self)._compared
        return compared(self) == compared(other)

    def __hash__(self) -> int:
        return hash(type(self)._hashed(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{self.__class__.__qualname__}({shown})"

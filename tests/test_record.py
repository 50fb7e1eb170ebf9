"""``Record`` behaves as ``@dataclass(frozen=True)`` does: each check runs on a Record and on the
standard-library dataclass with the same fields, and both must agree."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import pickle
from dataclasses import FrozenInstanceError, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from acestep_core.record import Record

CORE = Path(__file__).resolve().parents[1] / "acestep_core"


class Point(Record):
    x: float
    y: float = 0.0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False, repr=False)
    extra: dict[str, int] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class StdPoint:
    x: float
    y: float = 0.0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False, repr=False)
    extra: dict[str, int] = field(default_factory=dict, hash=False, compare=False)


class Labelled(Point):
    label: str = "a"


class Derived(Record):
    values: tuple[int, ...]
    total: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(self.values))


@pytest.fixture(params=[Point, StdPoint], ids=["Record", "dataclass"])
def kind(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_it_is_a_dataclass_with_the_same_fields(kind: Any) -> None:
    point = kind(1.0, tags=("a",))
    assert dataclasses.is_dataclass(point)
    assert [f.name for f in dataclasses.fields(point)] == ["x", "y", "tags", "note", "extra"]
    assert dataclasses.asdict(point) == {"x": 1.0, "y": 0.0, "tags": ("a",), "note": "", "extra": {}}
    moved = dataclasses.replace(point, y=2.0)
    assert (moved.x, moved.y, point.y) == (1.0, 2.0, 0.0)
    assert kind.__match_args__ == ("x", "y", "tags", "note", "extra")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1.0,), {}), ((1.0, 2.0, ("t",)), {}), ((), {"x": 1.0, "extra": {"k": 2}}), ((1.0,), {"note": "n", "y": 3.0})],
)
def test_construction_agrees_with_the_standard_library(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ours, theirs = Point(*args, **kwargs), StdPoint(*args, **kwargs)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert Point(1.0).extra is not Point(1.0).extra, "default_factory runs for every instance"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1.0, 2.0, (), "", {}, "extra"), {}), ((1.0,), {"x": 2.0}), ((1.0,), {"z": 0})],
    ids=["missing", "too-many", "twice", "unknown"],
)
def test_bad_arguments_raise_type_error_as_with_dataclasses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        StdPoint(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_the_signature_is_the_one_dataclasses_would_generate() -> None:
    ours, theirs = inspect.signature(Point), inspect.signature(StdPoint)
    assert str(ours) == str(theirs)
    assert list(ours.parameters) == ["x", "y", "tags", "note", "extra"]


def test_a_field_without_default_after_one_with_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument 'a'"):
        type("Bad", (Record,), {"__annotations__": {"a": "int", "b": "int"}, "a": 1})


def test_fields_cannot_be_assigned_deleted_or_added(kind: Any) -> None:
    point = kind(1.0)
    with pytest.raises(FrozenInstanceError):
        point.x = 2.0
    with pytest.raises(FrozenInstanceError):
        del point.x
    with pytest.raises(FrozenInstanceError):
        point.new_attribute = 1
    assert point.x == 1.0


def test_equality_hash_and_repr_agree_with_the_standard_library() -> None:
    pairs = [((1.0,), {}), ((1.0, 2.0), {"tags": ("a", "b")}), ((1.0,), {"note": "ignored", "extra": {"k": 1}})]
    for args, kwargs in pairs:
        ours, theirs = Point(*args, **kwargs), StdPoint(*args, **kwargs)
        assert repr(ours) == repr(theirs).replace("StdPoint", "Point")
        assert hash(ours) == hash(theirs)
        assert (ours == Point(*args, **kwargs)) is (theirs == StdPoint(*args, **kwargs)) is True
    assert Point(1.0, note="a") == Point(1.0, note="b"), "compare=False fields are left out"
    assert Point(1.0) != Point(2.0) and Point(1.0) != StdPoint(1.0)
    assert Point(1.0) != Labelled(1.0), "another class is never equal, as with dataclasses"
    nan = math.nan
    assert (Point(nan) == Point(nan)) is (StdPoint(nan) == StdPoint(nan)), "fields compare as tuples do"


def test_unhashable_fields_fail_to_hash_as_with_dataclasses(kind: Any) -> None:
    class_name = "Unhashable" + kind.__name__
    if kind is Point:
        cls: Any = type(class_name, (Record,), {"__annotations__": {"items": "list[int]"}})
    else:
        cls = dataclass(frozen=True)(type(class_name, (), {"__annotations__": {"items": "list[int]"}}))
    with pytest.raises(TypeError, match="unhashable"):
        hash(cls([1]))


def test_copies_and_pickles_round_trip(kind: Any) -> None:
    point = kind(1.0, 2.0, ("a",), "n", {"k": 1})
    for twin in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point))):
        assert twin == point and twin.note == "n" and twin.extra == {"k": 1}


def test_subclasses_and_post_init() -> None:
    labelled = Labelled(1.0, label="b")
    assert repr(labelled) == "Labelled(x=1.0, y=0.0, tags=(), extra={}, label='b')"
    derived = Derived((1, 2, 3))
    assert derived.total == 6 and derived == Derived((1, 2, 3))
    with pytest.raises(FrozenInstanceError):
        derived.total = 0


def test_the_deciding_core_declares_its_records_one_way() -> None:
    """Deciding modules subclass Record; a ``@dataclass(frozen=True)`` there would cost start-up again."""
    offenders = [
        str(path.relative_to(CORE.parent))
        for path in CORE.rglob("*.py")
        if "runtime" not in path.parts and path.name != "record.py"
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith(("@dataclass(frozen=True)", "@dataclasses.dataclass(frozen=True)"))
    ]
    assert offenders == []

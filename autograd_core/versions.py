"""A tensor's version counter: an int that every in-place change sets anew, shared (as one
small object) by a tensor and its views and aliases once one exists, since they share memory.
A rule that reads a value checks, before it runs, that its version is the one recorded."""
from operator import attrgetter


class _SharedVersion:
    """The version counter of a tensor and its views / aliases (they share memory, so an
    in-place change through any of them changes them all)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def version_of(t):
    v = t._version
    return v if type(v) is int else v.value


def versions_of(tensors):
    """[version_of(t) for t in tensors], without a Python call per tensor (a replayed call
    reads every tensor's version twice)."""
    return [v if type(v) is int else v.value for v in map(_version_attr, tensors)]


_version_attr = attrgetter("_version")


def share_version(view, base):
    """Make `view` (which shares `base`'s memory) share its version counter."""
    v = base._version
    if type(v) is int:
        v = base._version = _SharedVersion(v)
    view._version = v

"""What a forked child renews: locks held by the parent's threads, reads in flight.

``os.fork`` copies the memory of the process but only the thread that forked. A
lock another thread held at that moment (a read waiting on the network inside a
cache's lock, say) stays held forever in the child, whose first read of the same
file then hangs; a read in flight in a thread of the parent never completes there.
PyTorch's ``DataLoader`` workers on Linux are such children.

Objects that own locks or threads register here. In each child, right after the
fork and before any other code runs (:func:`os.register_at_fork`), every live one
has its ``_after_fork()`` called: it replaces its locks and drops the work of
threads the child does not have. Pure: no I/O.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol

__all__ = ["held_elsewhere", "renew_after_fork"]


class _Renewable(Protocol):
    def _after_fork(self) -> None: ...


_owners: weakref.WeakValueDictionary[int, _Renewable] = weakref.WeakValueDictionary()
"""By ``id``: owners are told apart by identity (equal filesystems are two owners)."""


def renew_after_fork(owner: _Renewable) -> None:
    """Have ``owner._after_fork()`` called in every child forked from now on.

    The registration is weak: it does not keep ``owner`` alive.
    """
    _owners[id(owner)] = owner


def held_elsewhere(lock: Any) -> bool:
    """Whether a thread other than this one holds ``lock`` (in a child: a parent's thread)."""
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def _in_child() -> None:
    for owner in list(_owners.values()):
        owner._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_in_child)

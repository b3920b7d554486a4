"""Class-incremental task splits: which classes each task brings, in which order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TaskSplitError(ValueError):
    """A task split that cannot be made (bad counts or a bad class order)."""


# Tasks a data set is split into when the user does not say (--tasks).
DEFAULT_TASKS = 5


def default_task_count(num_classes: int) -> int:
    """DEFAULT_TASKS, or fewer where the classes do not split into it: the most tasks, up to
    DEFAULT_TASKS, that split the classes equally with at least two classes each (10 classes: 5,
    6: 3, 4: 2), so that every task teaches a decision between classes; 1 when none does."""
    for n in range(DEFAULT_TASKS, 1, -1):
        if num_classes % n == 0 and num_classes // n >= 2:
            return n
    return 1


def make_tasks(num_classes: int, n_tasks: int | None, seed: int = 0,
               order: Sequence[int] | None = None) -> list[list[int]]:
    """Split ``num_classes`` classes into ``n_tasks`` tasks of equal size (None: the data set's
    default_task_count).

    The class order is ``order`` when given (a permutation of 0..num_classes-1), otherwise the
    identity for seed 0 and a seeded permutation for any other seed, so that seed 0 gives the
    familiar split [[0, 1], [2, 3], ...] and other seeds vary the order reproducibly.
    """
    if num_classes < 1:
        raise TaskSplitError(f"a data set needs at least one class, got {num_classes}")
    if n_tasks is None:
        n_tasks = default_task_count(num_classes)
    if not 1 <= n_tasks <= num_classes:
        raise TaskSplitError(
            f"--tasks must be between 1 and the number of classes ({num_classes}), got {n_tasks}")
    if num_classes % n_tasks:
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        raise TaskSplitError(
            f"{num_classes} classes do not split into {n_tasks} equal tasks; "
            f"choose --tasks from {divisors}")
    if order is not None:
        order = [int(c) for c in order]
        if sorted(order) != list(range(num_classes)):
            raise TaskSplitError(
                f"a class order must list every class 0..{num_classes - 1} exactly once, got {order}")
    elif seed == 0:
        order = list(range(num_classes))
    else:
        order = [int(c) for c in np.random.default_rng(seed).permutation(num_classes)]
    per_task = num_classes // n_tasks
    return [order[i * per_task:(i + 1) * per_task] for i in range(n_tasks)]


def task_subset(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``x, y`` whose label is one of ``classes`` (original order kept)."""
    keep = np.isin(y, np.asarray(list(classes), dtype=y.dtype))
    return x[keep], y[keep]


def classes_seen(tasks: Sequence[Sequence[int]], upto: int) -> list[int]:
    """All classes of tasks 0..upto (inclusive), in task order."""
    return [c for task in tasks[:upto + 1] for c in task]

import numpy as np
import pytest

from tinycil.learn.tasks import TaskSplitError, classes_seen, default_task_count, make_tasks, task_subset


def test_default_split_is_in_class_order():
    assert make_tasks(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_seeded_order_is_a_reproducible_permutation():
    a, b, c = make_tasks(10, 5, seed=3), make_tasks(10, 5, seed=3), make_tasks(10, 5, seed=4)
    assert a == b and a != c
    assert sorted(x for t in a for x in t) == list(range(10))
    assert all(len(t) == 2 for t in a)


def test_explicit_order():
    assert make_tasks(4, 2, order=[3, 1, 0, 2]) == [[3, 1], [0, 2]]
    with pytest.raises(TaskSplitError, match="exactly once"):
        make_tasks(4, 2, order=[0, 0, 1, 2])


@pytest.mark.parametrize("n_tasks", [0, 3, 11])
def test_bad_task_counts_are_refused_with_the_valid_choices(n_tasks):
    with pytest.raises(TaskSplitError) as info:
        make_tasks(10, n_tasks)
    assert "--tasks" in str(info.value) or "choose" in str(info.value)


def test_non_dividing_count_lists_divisors():
    with pytest.raises(TaskSplitError, match=r"\[1, 2, 5, 10\]"):
        make_tasks(10, 3)


def test_task_subset_and_classes_seen():
    x = np.arange(12).reshape(6, 2)
    y = np.array([0, 1, 2, 1, 0, 3])
    xs, ys = task_subset(x, y, [1, 3])
    assert ys.tolist() == [1, 1, 3] and xs[:, 0].tolist() == [2, 6, 10]
    assert classes_seen([[2, 0], [1, 3]], 1) == [2, 0, 1, 3]


@pytest.mark.parametrize("classes,expected", [(10, 5), (4, 2), (6, 3), (12, 4), (35, 5), (3, 1)])
def test_default_task_count_gives_every_task_two_classes_or_more(classes, expected):
    # basic-motions has 4 classes: the default must not be 5 tasks, which it cannot split into.
    assert default_task_count(classes) == expected
    tasks = make_tasks(classes, None)
    assert len(tasks) == expected and {len(t) for t in tasks} == {classes // expected}

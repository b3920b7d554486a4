import pytest

from tinycil.learn.metrics import (RESULT_KEYS, avg_accuracy_after_each_task, backward_transfer, check_matrix,
                             final_avg_accuracy, forgetting, make_result)

# A hand-made 3-task matrix: task 0 drops then partly recovers, task 1 drops.
R = [[0.9, None, None],
     [0.5, 0.8, None],
     [0.7, 0.6, 1.0]]


def test_final_average_accuracy():
    assert final_avg_accuracy(R) == pytest.approx((0.7 + 0.6 + 1.0) / 3)


def test_backward_transfer():
    # ((0.7 - 0.9) + (0.6 - 0.8)) / 2
    assert backward_transfer(R) == pytest.approx(-0.2)


def test_forgetting_uses_the_best_earlier_accuracy():
    # task 0: max(0.9, 0.5) - 0.7 = 0.2; task 1: 0.8 - 0.6 = 0.2
    assert forgetting(R) == pytest.approx(0.2)
    # a task that improved later: best is the later value, forgetting is measured from it
    R2 = [[0.5, None, None], [0.9, 0.8, None], [0.6, 0.8, 0.7]]
    assert forgetting(R2) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)
    assert backward_transfer(R2) == pytest.approx(((0.6 - 0.5) + (0.8 - 0.8)) / 2)


def test_average_after_each_task():
    assert avg_accuracy_after_each_task(R) == pytest.approx([0.9, 0.65, 2.3 / 3])


def test_single_task():
    assert backward_transfer([[0.7]]) == 0.0 and forgetting([[0.7]]) == 0.0


@pytest.mark.parametrize("bad", [[[0.5, 0.1], [0.4, 0.3]], [[0.5, None], [None, 0.3]], [[1.5]], [[0.5, None]]])
def test_malformed_matrices_are_refused(bad):
    with pytest.raises(ValueError):
        check_matrix(bad)


def test_result_record_has_every_contract_key():
    r = make_result(R, train_flops=1e6, buffer_samples=3, buffer_bytes=195, buffer_fraction=0.01)
    assert tuple(r) == RESULT_KEYS
    assert set(r["buffer"]) == {"samples", "bytes", "fraction"}
    assert r["accuracy_matrix"][0][1] is None
    assert r["instructions_per_train_sample"] is None and r["ram_bytes"] is None and r["flash_bytes"] is None

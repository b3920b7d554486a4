"""Continual-learning metrics over an accuracy matrix, and the RESULT record every run reports.

R[i][j] is the accuracy on task j's test data after learning task i (i, j = 0..T-1); entries with
j > i are None (a task not yet learned is not evaluated: in class-incremental learning its classes
are masked out, so its accuracy would be 0 by construction).
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def check_matrix(R: Matrix) -> int:
    T = len(R)
    if T == 0:
        raise ValueError("an accuracy matrix needs at least one task")
    for i, row in enumerate(R):
        if len(row) != T:
            raise ValueError(f"accuracy matrix row {i} has {len(row)} entries, expected {T}")
        for j, a in enumerate(row):
            if j <= i and (a is None or not 0.0 <= a <= 1.0):
                raise ValueError(f"R[{i}][{j}] must be an accuracy in [0, 1], got {a}")
            if j > i and a is not None:
                raise ValueError(f"R[{i}][{j}] must be None (task {j} is learned after task {i})")
    return T


def final_avg_accuracy(R: Matrix) -> float:
    """ACC = (1/T) * sum_j R[T-1][j]: mean accuracy over all tasks after the last one."""
    T = check_matrix(R)
    return sum(R[T - 1]) / T


def avg_accuracy_after_each_task(R: Matrix) -> list[float]:
    """A_i = (1/(i+1)) * sum_{j<=i} R[i][j], for every i (the curve the plots show)."""
    check_matrix(R)
    return [sum(row[:i + 1]) / (i + 1) for i, row in enumerate(R)]


def backward_transfer(R: Matrix) -> float:
    """BWT = (1/(T-1)) * sum_{j<T-1} (R[T-1][j] - R[j][j]) (Lopez-Paz & Ranzato 2017; what
    Avalanche reports as StreamBWT). Negative when learning later tasks hurt earlier ones. 0 for T = 1."""
    T = check_matrix(R)
    if T == 1:
        return 0.0
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forgetting(R: Matrix) -> float:
    """F = (1/(T-1)) * sum_{j<T-1} (max_{l in [j, T-2]} R[l][j] - R[T-1][j]) (Chaudhry et al. 2018).

    The drop from the best accuracy a task ever had to its final accuracy. Avalanche's stream
    forgetting takes R[j][j] (the accuracy right after learning the task) in place of the maximum,
    which makes it exactly -BWT; the maximum form is reported here because it also counts drops
    that a later recovery hides, and it equals Avalanche's whenever a task's accuracy only falls.
    0 for T = 1.
    """
    T = check_matrix(R)
    if T == 1:
        return 0.0
    return sum(max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def make_result(R: Matrix, *, train_flops: float, buffer_samples: int, buffer_bytes: int,
                buffer_fraction: float, instructions_per_train_sample: float | None = None,
                ram_bytes: int | None = None, flash_bytes: int | None = None) -> dict:
    """The RESULT record (DESIGN.md, "Contracts"): every key always present."""
    check_matrix(R)
    matrix = [[None if a is None else float(a) for a in row] for row in R]
    return {
        "accuracy_matrix": matrix,
        "final_avg_accuracy": float(final_avg_accuracy(matrix)),
        "bwt": float(backward_transfer(matrix)),
        "forgetting": float(forgetting(matrix)),
        "train_flops": float(train_flops),
        "buffer": {"samples": int(buffer_samples), "bytes": int(buffer_bytes),
                   "fraction": float(buffer_fraction)},
        "instructions_per_train_sample": instructions_per_train_sample,
        "ram_bytes": ram_bytes,
        "flash_bytes": flash_bytes,
    }


RESULT_KEYS = ("accuracy_matrix", "final_avg_accuracy", "bwt", "forgetting", "train_flops", "buffer",
               "instructions_per_train_sample", "ram_bytes", "flash_bytes")

"""MAX_MINUTES and the epochs it leaves: a limit too short for a model that can hold up is said
at the end of the first epoch, with the limit that would do (plugin.learning.time_budget)."""
import time

import numpy as np

from plugin.learning.time_budget import ADVISED_EPOCHS, MIN_TRAIN_SECONDS, TimeBudget
from plugin.learning.user_training import MAX_EPOCHS, end_of_epoch, window_cells


def test_a_short_limit_is_said_with_the_limit_that_would_do():
    # 4 min, 200 s of it before and after the epochs, epochs of 38 s: one epoch
    budget = TimeBudget(limit=240.0, before=20.0, after=180.0)
    assert budget.seconds == 40.0 and budget.overhead == 200.0
    assert budget.epochs(38.0, MAX_EPOCHS) == 1
    words = budget.advice(1, 38.0)
    assert words.startswith("Warning: MAX_MINUTES=4 leaves time for 1 epoch of 0.6 min")
    assert f"For {ADVISED_EPOCHS} epochs give MAX_MINUTES=9 or more" in words  # (200+8*38)/60
    assert "past the limit" not in words
    # a limit the fixed part alone exceeds: the run's real length is said
    late = TimeBudget(limit=60.0, before=10.0, after=120.0)
    assert late.seconds == MIN_TRAIN_SECONDS
    late = late.advice(1, 38.0)
    assert "about 2.8 min, past the limit" in late
    assert budget.advice(ADVISED_EPOCHS, 38.0) == ""


def test_time_budget_left_keeps_what_follows_the_epochs():
    t0 = time.perf_counter() - 20.0             # 20 s already spent
    b = TimeBudget.left(10, t0, after=240.0)
    assert abs(b.seconds - (600 - 20 - 240)) < 2 and abs(b.overhead - 260) < 2
    assert TimeBudget.left(1, t0, after=240.0).seconds == MIN_TRAIN_SECONDS
    # the first epoch's measurement replaces the guess: the epochs get what it frees
    assert abs(b.with_after(60.0).seconds - (600 - 20 - 60)) < 2


def test_window_cells_counts_the_tiles_a_pass_reads():
    where = np.zeros((300, 300), bool)
    assert window_cells(300, 300, where, 128, 16) == 0
    where[10, 10] = True                     # one corner tile, context on two sides only
    assert window_cells(300, 300, where, 128, 16) == 144 * 144
    whole = window_cells(300, 300, None, 128, 16)
    assert whole > 300 * 300 and whole == sum(
        (min(300, r + 128 + 16) - max(0, r - 16)) * (min(300, c + 128 + 16) - max(0, c - 16))
        for r in (0, 128, 256) for c in (0, 128, 256))


def test_end_of_epoch_says_it_in_the_log_only_when_the_limit_decides():
    score = {"overall_accuracy": 0.7, "macro_f1": 0.6}
    budget = TimeBudget(limit=240.0, before=20.0, after=180.0)
    logs = []
    t0 = time.perf_counter() - 38.0             # the first epoch took 38 s
    epochs = end_of_epoch([], 1, MAX_EPOCHS, 0, budget, [1.0], score, t0, MAX_EPOCHS,
                          logs.append, lambda f, m="": None)
    assert epochs == 1 and any(m.startswith("Warning: MAX_MINUTES=4") for m in logs)
    logs.clear()   # EPOCHS given: the user chose the count, no advice
    end_of_epoch([], 1, 1, 1, budget, [1.0], score, t0, MAX_EPOCHS, logs.append,
                 lambda f, m="": None)
    assert not any(m.startswith("Warning") for m in logs)

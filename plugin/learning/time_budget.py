"""MAX_MINUTES, split between the epochs and what the epochs cannot shorten.

A training run reads its inputs and fits the RandomForest before the first epoch, and exports
the model and runs it through classify on the held-out blocks after the last. Those take the
same time whatever the limit, so a short limit leaves few epochs, or one. A model from one or
two epochs rarely beats the RandomForest; the user is told at the end of the first epoch
(when its length is known) with the limit that would do.

What follows the epochs is first a fixed guess; the fusion network's run replaces it at the end
of the first epoch with an estimate from that epoch's own held-out scoring (the same network
over the same tiles), so the epochs get the time the limit really leaves.
"""
import math
import time
from dataclasses import dataclass, replace

MIN_TRAIN_SECONDS = 30.0   # the epochs get at least this, even past the limit
ADVISED_EPOCHS = 8         # fewer: a warning (why: the README's Havelland table, EPOCHS_SEEN)
EPOCHS_SEEN = "2 to 11"    # epochs after which its runs first beat the RandomForest


@dataclass(frozen=True)
class TimeBudget:
    limit: float       # MAX_MINUTES, in seconds
    before: float      # spent before the epochs
    after: float       # kept for what follows them

    @classmethod
    def left(cls, max_minutes, t_start, after):
        """The budget at this moment (``t_start``: the run's start), keeping ``after`` seconds
        for what follows the epochs."""
        return cls(max_minutes * 60.0, time.perf_counter() - t_start, after)

    @property
    def seconds(self):
        """For the epochs."""
        return max(MIN_TRAIN_SECONDS, self.limit - self.before - self.after)

    @property
    def overhead(self):
        return self.before + self.after

    def with_after(self, after):
        return replace(self, after=after)

    def epochs(self, per_epoch, max_epochs):
        return int(max(1, min(max_epochs, self.seconds // max(per_epoch, 1e-3))))

    def advice(self, epochs, per_epoch):
        """A warning when ``epochs`` is too few to trust, with the limit for ADVISED_EPOCHS;
        '' otherwise."""
        if epochs >= ADVISED_EPOCHS:
            return ""
        total = self.overhead + epochs * per_epoch
        late = (f" The run will take about {total / 60:.1f} min, past the limit."
                if total > self.limit + 30 else "")
        need = math.ceil((self.overhead + ADVISED_EPOCHS * per_epoch) / 60.0)
        return (f"Warning: MAX_MINUTES={self.limit / 60:g} leaves time for {epochs} "
                f"epoch{'s' if epochs != 1 else ''} of {per_epoch / 60:.1f} min here; reading "
                f"the inputs, the RandomForest, the export and the checks through classify "
                f"take about {self.overhead / 60:.1f} min besides.{late} In the runs measured "
                f"in the README the trained model first beat the RandomForest after "
                f"{EPOCHS_SEEN} epochs. For {ADVISED_EPOCHS} epochs give MAX_MINUTES={need} "
                f"or more (or EPOCHS={ADVISED_EPOCHS}); a cancelled run writes nothing.")


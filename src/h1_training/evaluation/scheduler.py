"""Which model the next trial of a comparison should use: balanced, randomized order with a fixed seed.

Why not let the operator pick: trials run in the order the operator likes drift with time of day, battery,
object wear and the operator's own expectations; alternating A, B, A, B lines one model up with every other
reset. Permuted blocks (a fresh random order of all models in each block) keep the counts balanced at every
moment, so the paired sequential test in :func:`~h1_training.evaluation.stats.sequential_test` always has partners, and
nobody chooses which model gets the next (easy or hard) set-up. The order is a pure function of the seed and the
model ids, so a comparison can be replayed, and the operator can run it blind (ask for the next model, start it
by id, never look at which one it is).

The next model is derived from the trial **counts**, not from a cursor: a trial recorded for another model (an
operator who ignored the suggestion, a retry) cannot desynchronize it. Block ``b`` is the smallest count; the next
model is the first one in block ``b``'s permutation that has not yet had its ``b + 1``-th trial.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


class TrialScheduler:
    """Permuted-block order of trials over 2 or more models.

    ``planned_per_model`` 0 = open-ended; otherwise :meth:`next_model` gives None once every model has its
    planned trials.
    """

    def __init__(self, model_ids: Sequence[str], seed: int = 0, planned_per_model: int = 0) -> None:
        ids = [str(m) for m in model_ids]
        if len(ids) < 2:
            raise ValueError(f"a schedule needs at least 2 models, got {len(ids)}")
        if any(not m for m in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be non-empty and distinct, got {ids}")
        if planned_per_model < 0:
            raise ValueError(f"planned_per_model must be >= 0 (0 = open-ended), got {planned_per_model}")
        self.model_ids = tuple(ids)
        self.seed = int(seed)
        self.planned_per_model = int(planned_per_model)
        # A str seed is hashed with SHA-512 by random.Random: same seed + ids -> same order on every machine
        # and Python version (unlike hash()).
        self._rng = random.Random(f"{self.seed}:" + "\x1f".join(ids))
        self._blocks: list[tuple[str, ...]] = []

    def block(self, index: int) -> tuple[str, ...]:
        """The order of the models in block ``index`` (0-based); blocks are drawn in sequence, so block ``i``
        is the same whatever was asked before."""
        if index < 0:
            raise ValueError(f"block index must be >= 0, got {index}")
        while len(self._blocks) <= index:
            order = list(self.model_ids)
            self._rng.shuffle(order)
            self._blocks.append(tuple(order))
        return self._blocks[index]

    def next_model(self, counts: Mapping[str, int]) -> str | None:
        """The model for the next trial given the trials recorded so far per model (missing = 0); None when
        every model has its planned trials. ``ValueError`` for a count of a model not in the schedule."""
        unknown = set(counts) - set(self.model_ids)
        if unknown:
            raise ValueError(f"counts for models not in the schedule: {sorted(unknown)}")
        n = {m: int(counts.get(m, 0)) for m in self.model_ids}
        if any(v < 0 for v in n.values()):
            raise ValueError(f"trial counts must be >= 0, got {n}")
        least = min(n.values())
        if self.planned_per_model and least >= self.planned_per_model:
            return None
        for model in self.block(least):
            if n[model] == least:
                return model
        raise AssertionError("unreachable: some model has the least count")  # pragma: no cover

    def sequence(self, trials_per_model: int) -> list[str]:
        """The whole order when every trial follows the schedule (what an operator's sheet would list)."""
        counts = dict.fromkeys(self.model_ids, 0)
        out = []
        for _ in range(trials_per_model * len(self.model_ids)):
            model = self.next_model(counts)
            if model is None:
                break
            out.append(model)
            counts[model] += 1
        return out

"""The one place where a task's labels meet a model's logits: loss, accuracy, exact match.

With labels y (B, T), IGNORE_INDEX (-100) where nothing is scored, and S = {(b, t): y_bt != -100}:

    loss        = mean over S of -log softmax(logits_bt)[y_bt]        (cross-entropy, ignore -100)
    accuracy    = |{(b, t) in S : argmax logits_bt = y_bt}| / |S|      (per scored token)
    exact match = |{b : every scored position of row b is right}| / B  (per example)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssmbench.tasks.base import IGNORE_INDEX


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against labels (B, T), ignoring -100."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


@dataclass(frozen=True)
class Score:
    """Counts that add up over batches: right and scored tokens, exact and total examples."""

    correct: int = 0
    scored: int = 0
    exact: int = 0
    examples: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.correct + other.correct,
            self.scored + other.scored,
            self.exact + other.exact,
            self.examples + other.examples,
        )

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else float("nan")

    @property
    def exact_match(self) -> float:
        return self.exact / self.examples if self.examples else float("nan")


def score(logits: torch.Tensor, labels: torch.Tensor) -> Score:
    """Score logits (B, T, V) against labels (B, T) at the scored positions."""
    return score_predictions(logits.argmax(-1), labels)


def score_predictions(predictions: torch.Tensor, labels: torch.Tensor) -> Score:
    """Score predicted tokens (B, T) against labels (B, T) at the scored positions."""
    scored = labels != IGNORE_INDEX  # (B, T)
    hits = (predictions == labels) & scored  # (B, T)
    misses = scored & ~hits  # (B, T)
    return Score(
        correct=int(hits.sum()),
        scored=int(scored.sum()),
        exact=int((~misses.any(dim=1)).sum()),
        examples=labels.shape[0],
    )

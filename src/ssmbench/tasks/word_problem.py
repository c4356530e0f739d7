"""Group word problems: a sequence of group elements, labelled at every position with the product
of the elements so far.

Merrill, Petty & Sabharwal 2024 ("The Illusion of State in State-Space Models") §5, after
jopetty/word-problem (`generate_data.py`: elements uniform, the target the product reduced left to
right; `main.py`: token classification, a label at every position). With G the group, an example
of length n is

    positions 0 .. n-1   element ids x_t uniform in {0, .., |G|-1}
    labels               at position t, the id of the prefix product x_0 · x_1 · .. · x_t
    positions n .. T-1   pad (|G|), labelled -100

Each group is built here as permutations: the closure of a few generators, its elements sorted
(the identity, id 0, first), a · b the composition (a · b)(i) = a(b(i)) and its |G| x |G| table
read once from the permutations:

    Z60     the cyclic group (abelian): a 4-, a 3- and a 5-cycle on 12 points, one generator
    A4xZ5   A4 on points 0-3 times Z5 on points 4-8 (solvable, not abelian)
    A5      even permutations of 5 points (the smallest non-solvable group; NC1-complete)
    S3, S5  all permutations of 3 and 5 points (S5 is not solvable either)

Worked example, group S3 (ids: 0 = identity 012, 1 = 021, 2 = 102, 3 = 120, 4 = 201, 5 = 210,
each the permutation's images of 0 1 2), T = 5, an example of length 4: 1 · 3 = 021 ∘ 120 = 210
(5), then 5 · 3 = 102 (2), then 2 · 0 = 102 (2):

    inputs   1    3    3    0    6
    labels   1    5    2    2 -100

Defaults follow the source's generate_data.py (group S5, k = seq_len = 10); vocab_size is the
group's order plus the pad. The source prepends a BOS token; here the first element stands at
position 0. The source trains on every length 2 .. k; a label at every position of a length-k
example already scores every prefix, so examples have length seq_len unless `train_lengths` /
`test_lengths` ask for a range.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import VariableLengthTask

Permutation = tuple[int, ...]  # images of 0 .. n-1
GroupName = Literal["Z60", "A4xZ5", "A5", "S3", "S5"]


def cycle(points: list[int], n: int) -> Permutation:
    """The permutation of range(n) sending points[i] to points[i+1] (cyclically)."""
    image = list(range(n))
    for a, b in zip(points, points[1:] + points[:1], strict=True):
        image[a] = b
    return tuple(image)


def compose(a: Permutation, b: Permutation) -> Permutation:
    """a · b: first b, then a, so (a · b)(i) = a(b(i))."""
    return tuple(a[i] for i in b)


GENERATORS: dict[str, list[Permutation]] = {
    "Z60": [
        compose(
            cycle([0, 1, 2, 3], 12), compose(cycle([4, 5, 6], 12), cycle([7, 8, 9, 10, 11], 12))
        )
    ],
    "A4xZ5": [cycle([0, 1, 2], 9), cycle([1, 2, 3], 9), cycle([4, 5, 6, 7, 8], 9)],
    "A5": [cycle([0, 1, 2], 5), cycle([0, 1, 2, 3, 4], 5)],
    "S3": [cycle([0, 1], 3), cycle([0, 1, 2], 3)],
    "S5": [cycle([0, 1], 5), cycle([0, 1, 2, 3, 4], 5)],
}


@cache
def elements(group: str) -> list[Permutation]:
    """The group's elements as permutations, sorted: the closure of its generators."""
    generators = GENERATORS[group]
    found = {tuple(range(len(generators[0])))}
    frontier = list(found)
    while frontier:
        products = {compose(g, s) for g in frontier for s in generators}
        frontier = list(products - found)
        found |= products
    return sorted(found)


def order(group: str) -> int:
    return len(elements(group))


@cache
def multiplication_table(group: str) -> torch.Tensor:
    """(|G|, |G|) int64: table[i, j] is the id of elements[i] · elements[j]."""
    members = elements(group)
    index = {p: i for i, p in enumerate(members)}
    return torch.tensor([[index[compose(a, b)] for b in members] for a in members])


class WordProblem(VariableLengthTask):
    name: ClassVar[str] = "word-problem"
    summary: ClassVar[str] = "the running product of group elements, at every position"
    source: ClassVar[str] = "Merrill, Petty & Sabharwal 2024; jopetty/word-problem"
    key_fields: ClassVar[dict[str, str]] = {
        "group": "",
        "train_lengths": "tr",
        "test_lengths": "te",
    }

    seq_len: int = Field(10, gt=0, description="sequence length k")
    group: GroupName = Field("S5", description="Z60, A4xZ5, A5, S3 or S5")
    vocab_size: int | None = Field(None, description="the group's order + 1 (None: that)")

    @model_validator(mode="before")
    @classmethod
    def _group_vocabulary(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("vocab_size") is None:
            group = data.get("group", "S5")
            if group in GENERATORS:
                return {**data, "vocab_size": order(group) + 1}
        return data

    @model_validator(mode="after")
    def _check(self) -> WordProblem:
        n = order(self.group)
        if self.vocab_size != n + 1:
            raise ValueError(
                f"vocab_size must be {n + 1} for {self.group} (its {n} elements and the pad), "
                f"got {self.vocab_size}"
            )
        return self

    @property
    def pad_token(self) -> int:
        return order(self.group)

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.example_lengths(batch_size, generator, train)  # (B,)
        shape = (batch_size, self.seq_len)
        words = torch.randint(0, order(self.group), shape, generator=generator)  # (B, T)
        table = multiplication_table(self.group)  # (|G|, |G|)
        products = torch.empty_like(words)  # (B, T)
        products[:, 0] = words[:, 0]
        for t in range(1, self.seq_len):
            products[:, t] = table[products[:, t - 1], words[:, t]]
        return self.pad_beyond(words, products, lengths)

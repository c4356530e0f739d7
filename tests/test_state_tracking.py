"""The state-tracking tasks (parity, modular arithmetic, group word problems, zoology's cumulative
parity and majority) against their definitions, checked by rules written here independently of
the tasks; variable-length examples; and an LSTM learning cumulative parity short and keeping it
long."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from small_runs import scores_by_length

from ssmbench import tasks
from ssmbench.experiment.config import load_config
from ssmbench.models import get
from ssmbench.tasks import IGNORE_INDEX
from ssmbench.tasks.metrics import score_predictions
from ssmbench.tasks.word_problem import elements, multiplication_table

VARIABLE = {  # every state-tracking task with a training and a test range
    "parity": {"seq_len": 24, "train_lengths": "3-24", "test_lengths": "24-96"},
    "modular-arithmetic": {"seq_len": 24, "train_lengths": "3-24", "test_lengths": "24-96"},
    "modular-arithmetic-brackets": {
        "seq_len": 24, "brackets": True, "train_lengths": "3-24", "test_lengths": "24-96"
    },
    "word-problem": {"seq_len": 24, "group": "A5", "train_lengths": "1-24"},
    "cumulative-parity": {"seq_len": 24, "train_lengths": "1-24"},
    "majority": {"seq_len": 24, "train_lengths": "2-24"},
}  # fmt: skip


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(kind: str, **update) -> tasks.Task:
    return tasks.build(kind.removesuffix("-brackets"), **{**VARIABLE[kind], **update})


def lengths_of(task: tasks.Task, x: torch.Tensor) -> torch.Tensor:
    """(B,) each example's length: where the pad run at its end starts."""
    real = x != task.pad_token  # (B, T)
    return torch.where(real.any(1), real.long().cumsum(1).argmax(1) + 1, 0)


# ---- variable length ----


@pytest.mark.parametrize("kind", VARIABLE)
@pytest.mark.parametrize("train", [False, True])
def test_padding_is_the_pad_token_labelled_ignore_and_only_after_the_end(kind, train):
    task = build(kind)
    x, y = task.sample(500, gen(), train=train)
    n = lengths_of(task, x)
    beyond = torch.arange(task.seq_len) >= n[:, None]  # (B, T)
    assert (x[beyond] == task.pad_token).all() and (y[beyond] == IGNORE_INDEX).all()
    assert (x[~beyond] != task.pad_token).all(), "no pad inside an example"
    assert len(n.unique()) > 5, "one batch holds many lengths"


def test_lengths_follow_the_training_and_test_ranges():
    task = tasks.build("parity", seq_len=40, train_lengths="3-40", test_lengths="40-256")
    for at, training, expected in [
        (task, True, range(3, 41)),  # training
        (task, False, range(3, 41)),  # held out at the training length: the training range
        (task.at_length(128), False, range(40, 129)),  # a test length: the range cut there
        (task.at_length(256), False, range(40, 257)),  # the whole test range
        (task.at_length(300), False, range(300, 301)),  # outside it: that exact length
    ]:
        x, _ = at.sample(6000, gen(1), train=training)
        seen = set(lengths_of(at, x).tolist())
        assert seen == set(expected), (at.seq_len, training)


def test_without_ranges_every_example_has_the_sequence_length():
    task = tasks.build("parity", seq_len=12, train_lengths=None, test_lengths=None)
    for training in (False, True):
        x, y = task.sample(200, gen(), train=training)
        assert (x != 0).all() and (y[:, :-1] == IGNORE_INDEX).all() and (y[:, -1] > 0).all()
    assert task.key == "parity-V3"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"train_lengths": "40-3"}, "lo <= hi"),
        ({"train_lengths": "3-41"}, "ends past seq_len 40"),
        ({"train_lengths": "1-40"}, "2 <= lo"),  # "d =" is the shortest
        ({"test_lengths": "3..40"}, "test_lengths"),
        ({"train_lengths": [3, 40]}, "train_lengths"),
        ({"seq_len": 1, "train_lengths": None}, "seq_len must be >= 2"),
    ],
)
def test_bad_ranges_are_one_line_errors(params, message):
    with pytest.raises(ValueError, match=message) as info:
        tasks.build("modular-arithmetic", **params)
    assert "\n" not in str(info.value)


def test_keys_carry_the_ranges_and_the_group():
    assert tasks.build("parity").key == "parity-V3-tr3-40-te40-256"
    assert tasks.build("word-problem", group="A5").key == "word-problem-A5"
    arith = tasks.build("modular-arithmetic", brackets=True)
    assert arith.key == "modular-arithmetic-V12-br1-tr3-40-te40-256"
    assert tasks.build("cumulative-parity", seq_len=8).key == "cumulative-parity"


def test_defaults_follow_the_sources():
    parity = tasks.build("parity")
    assert (parity.seq_len, parity.vocab_size) == (40, 3)
    assert (parity.train_lengths, parity.test_lengths) == ("3-40", "40-256")
    arith = tasks.build("modular-arithmetic")
    assert (arith.modulus, arith.brackets, arith.train_lengths) == (5, False, "3-40")
    words = tasks.build("word-problem")
    assert (words.group, words.seq_len, words.vocab_size) == ("S5", 10, 121)
    assert tasks.build("word-problem", group="A5").vocab_size == 61
    assert tasks.build("cumulative-parity", seq_len=8).vocab_size == 3
    assert tasks.build("majority", seq_len=8).vocab_size == 4
    with pytest.raises(ValueError, match="vocab_size must be 61 for A5"):
        tasks.build("word-problem", group="A5", vocab_size=121)
    with pytest.raises(ValueError, match="group"):
        tasks.build("word-problem", group="A6")


# ---- definitions, by rules written here ----


def test_parity_label_is_the_parity_of_the_bits_at_the_last_one():
    task = build("parity")
    x, y = task.sample(1000, gen(2))
    for row, labels, n in zip(x.tolist(), y.tolist(), lengths_of(task, x).tolist(), strict=True):
        assert set(row[:n]) <= {1, 2}
        assert labels[: n - 1] == [IGNORE_INDEX] * (n - 1)
        assert labels[n - 1] == 1 + row[:n].count(2) % 2


def _expression_value(task, row: list[int]) -> int:
    """The value of the tokens before `=`, read by Python's own parser (precedence, brackets)."""
    text = {v: k for k, v in task.token_ids().items()}
    end = row.index(task.token_ids()["="])
    return eval("".join(text[t] for t in row[:end])) % task.modulus  # noqa: S307 - digits, ops


@pytest.mark.parametrize("kind", ["modular-arithmetic", "modular-arithmetic-brackets"])
def test_modular_arithmetic_label_is_the_value_of_the_expression(kind):
    task = build(kind)
    ids = task.token_ids()
    x, y = task.sample(1000, gen(3))
    for row, labels, n in zip(x.tolist(), y.tolist(), lengths_of(task, x).tolist(), strict=True):
        assert row[n - 1] == ids["="] and ids["="] not in row[: n - 1]
        assert [t for t in labels if t != IGNORE_INDEX] == [labels[n - 1]]
        assert labels[n - 1] == _expression_value(task, row)
        if not task.brackets:
            assert all(t < task.modulus for t in row[0 : n - 1 : 2]), "digits, then operators"
            assert all(ids["+"] <= t <= ids["*"] for t in row[1 : n - 1 : 2])
    operators = Counter(t for row in x.tolist() for t in row if ids["+"] <= t <= ids["*"])
    assert (ids["*"] in operators) != task.brackets, "* only without brackets (source: no mult)"


def test_flat_arithmetic_multiplies_first():
    task = build("modular-arithmetic")
    ids = task.token_ids()
    x, y = task.sample(4000, gen(4))
    pattern = (x[:, 1] == ids["+"]) & (x[:, 3] == ids["*"]) & (x[:, 5] == ids["="])  # a+b*c=
    a, b, c = x[pattern, 0], x[pattern, 2], x[pattern, 4]
    assert pattern.sum() > 20
    assert torch.equal(y[pattern, 5], (a + b * c) % 5)
    assert not torch.equal(y[pattern, 5], ((a + b) * c) % 5)


def _independent_group(name: str) -> set[tuple[int, ...]]:
    """The group's permutations enumerated directly, not as a closure of generators."""

    def even(p: tuple[int, ...]) -> bool:
        return sum(a > b for a, b in itertools.combinations(p, 2)) % 2 == 0

    def rotation(k: int, points: range) -> dict[int, int]:
        return {p: points[(i + k) % len(points)] for i, p in enumerate(points)}

    if name in ("S3", "S5"):
        return set(itertools.permutations(range(int(name[1]))))
    if name == "A5":
        return {p for p in itertools.permutations(range(5)) if even(p)}
    if name == "A4xZ5":
        a4 = [p for p in itertools.permutations(range(4)) if even(p)]
        return {a + tuple(rotation(k, range(4, 9)).values()) for a in a4 for k in range(5)}
    # Z60 as Z4 x Z3 x Z5: rotations of points 0-3, 4-6 and 7-11 by k mod each
    blocks = (range(0, 4), range(4, 7), range(7, 12))
    return {tuple(v for b in blocks for v in rotation(k, b).values()) for k in range(60)}


def _orders(table: list[list[int]]) -> Counter:
    """How many elements have each order, from the table alone (id 0 the identity)."""
    counts = Counter()
    for g in range(len(table)):
        power, order = g, 1
        while power != 0:
            power, order = table[power][g], order + 1
        counts[order] += 1
    return counts


def _derived_sizes(table: list[list[int]]) -> list[int]:
    """Sizes of the derived series G > [G, G] > ... until it stops shrinking."""
    inverse = [row.index(0) for row in table]  # g^-1
    current, sizes = set(range(len(table))), [len(table)]
    while True:
        commutators = {
            table[table[a][b]][table[inverse[a]][inverse[b]]] for a in current for b in current
        }  # a b a^-1 b^-1
        closure = {0}
        while True:
            more = closure | {table[c][g] for c in closure for g in commutators}
            if more == closure:
                break
            closure = more
        if len(closure) == len(current):
            return sizes
        current = closure
        sizes.append(len(closure))


PHI = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 2, 10: 4, 12: 4, 15: 8, 20: 8, 30: 8, 60: 16}
GROUPS = {  # order statistics and derived series, from group theory
    "Z60": (PHI, [60, 1]),  # cyclic: phi(d) elements of each order d dividing 60
    "A4xZ5": ({1: 1, 2: 3, 3: 8, 5: 4, 10: 12, 15: 32}, [60, 4, 1]),
    "A5": ({1: 1, 2: 15, 3: 20, 5: 24}, [60]),  # perfect: not solvable
    "S3": ({1: 1, 2: 3, 3: 2}, [6, 3, 1]),
    "S5": ({1: 1, 2: 25, 3: 20, 4: 30, 5: 24, 6: 20}, [120, 60]),
}  # fmt: skip


@pytest.mark.parametrize("group", GROUPS)
def test_groups_match_an_independent_construction(group):
    members = elements(group)
    assert set(members) == _independent_group(group) and members == sorted(members)
    table = multiplication_table(group)
    n = len(members)
    assert table.shape == (n, n) and members[0] == tuple(range(len(members[0])))
    index = {p: i for i, p in enumerate(members)}
    for i, j in torch.randint(0, n, (300, 2), generator=gen()).tolist():
        assert int(table[i, j]) == index[tuple(members[i][k] for k in members[j])]
    assert all(sorted(row.tolist()) == list(range(n)) for row in table), "a Latin square"
    i, j, k = torch.randint(0, n, (3, 2000), generator=gen(1))
    assert torch.equal(table[table[i, j], k], table[i, table[j, k]]), "associative"
    orders, derived = GROUPS[group]
    assert _orders(table.tolist()) == Counter(orders)
    assert _derived_sizes(table.tolist()) == derived
    assert torch.equal(table, table.T) == (group == "Z60"), "only Z60 is abelian"


@pytest.mark.parametrize("group", GROUPS)
def test_word_problem_labels_are_prefix_products(group):
    task = build("word-problem", group=group)
    members = elements(group)
    index = {p: i for i, p in enumerate(members)}
    x, y = task.sample(100, gen(5))
    for row, labels, n in zip(x.tolist(), y.tolist(), lengths_of(task, x).tolist(), strict=True):
        product = members[0]
        for t in range(n):
            product = tuple(product[k] for k in members[row[t]])  # product · x_t
            assert labels[t] == index[product]


def test_word_problem_docstring_example():
    table = multiplication_table("S3")
    assert [int(table[1, 3]), int(table[5, 3]), int(table[2, 0])] == [5, 2, 2]


def test_cumulative_parity_and_majority_labels():
    cumulative = build("cumulative-parity")
    x, y = cumulative.sample(500, gen(6))
    for row, labels, n in zip(
        x.tolist(), y.tolist(), lengths_of(cumulative, x).tolist(), strict=True
    ):
        assert labels[:n] == [sum(row[: t + 1]) % 2 for t in range(n)]
    majority = build("majority")
    x, y = majority.sample(2000, gen(7))
    ties = 0
    for row, labels, n in zip(
        x.tolist(), y.tolist(), lengths_of(majority, x).tolist(), strict=True
    ):
        bits = row[: n - 1]
        assert set(bits) <= {0, 1} and row[n - 1] == 2
        assert labels[n - 1] == int(bits.count(1) > bits.count(0))
        assert labels[: n - 1] == [IGNORE_INDEX] * (n - 1)
        ties += bits.count(1) == bits.count(0)
    assert ties > 0, "ties occur (even bit counts) and are labelled 0"


def _oracle(task, x: torch.Tensor) -> torch.Tensor:
    """Predictions read off the inputs by the rules above."""
    pred = torch.zeros_like(x)
    for b, (row, n) in enumerate(zip(x.tolist(), lengths_of(task, x).tolist(), strict=True)):
        if task.name == "parity":
            pred[b, n - 1] = 1 + row[:n].count(2) % 2
        elif task.name == "modular-arithmetic":
            pred[b, n - 1] = _expression_value(task, row)
        elif task.name == "majority":
            pred[b, n - 1] = int(row[: n - 1].count(1) > row[: n - 1].count(0))
        elif task.name == "cumulative-parity":
            pred[b, :n] = torch.tensor(row[:n]).cumsum(0) % 2
    return pred


@pytest.mark.parametrize("kind", [k for k in VARIABLE if k != "word-problem"])
def test_rule_based_oracle_scores_one_at_every_range(kind):
    task = build(kind)
    for at in (task, task.at_length(96)):
        x, y = at.sample(300, gen(8))
        result = score_predictions(_oracle(at, x), y)
        assert result.accuracy == 1.0 and result.exact_match == 1.0


# ---- learning: a recurrent state tracks parity at lengths it never saw ----


def _trained_on_cumulative_parity(model: str, steps: int) -> dict[int, dict]:
    """Trained on lengths 1-16, scored on 1-16 (L 16) and on 16-64 (L 64)."""
    return scores_by_length(
        model,
        {"name": "cumulative-parity", "train_lengths": "1-16", "test_lengths": "16-64"},
        16,
        64,
        steps,
    )


def test_lstm_learns_cumulative_parity_short_and_keeps_it_long():
    """An LSTM's state holds the parity bit at lengths it never saw; the gated MLP, which mixes
    no tokens, stays at chance."""
    lstm = _trained_on_cumulative_parity("lstm", 300)
    assert lstm[16]["accuracy"] >= 0.99 and lstm[64]["accuracy"] >= 0.95, lstm
    mlp = _trained_on_cumulative_parity("gated-mlp", 100)
    assert mlp[16]["accuracy"] <= 0.6 and mlp[64]["accuracy"] <= 0.6, mlp


# ---- presets ----


def test_state_tracking_cpu_trains_short_and_tests_long():
    config = load_config("state-tracking-cpu")
    assert {t.name for t in config.settings()} == {"cumulative-parity"}
    for task, lengths in config.setting_lengths():
        assert (task.params["train_lengths"], task.params["test_lengths"]) == ("3-40", "40-256")
        assert lengths == [40], "trained at the top of train_lengths"
    assert config.eval_lengths == [64, 128, 256] and config.seeds == [0, 1, 2]
    for base in ("mamba-s6", "mamba2", "deltanet", "gated-deltanet"):  # each side of the range
        assert {base, f"{base}-neg"} <= set(config.models)
        assert get(f"{base}-neg").options()["negative_eigenvalues"] is True
        assert get(base).options()["negative_eigenvalues"] is False
        assert get(f"{base}-neg").title == f"{get(base).title} [-1, 1]", "tables pair them"
    assert {"lstm", "transformer", "slstm", "mamba3"} <= set(config.models)
    assert config.arch.options == {}  # the variants are models, not options of one sweep
    built = config.settings()[0].build(256)
    assert built.length_range(train=False) == (40, 256)


def test_grazzi_parity_is_the_papers_protocol():
    """Grazzi et al. 2025: parity 20k steps, modular arithmetic without and with brackets 100k,
    trained 3-40, tested 40-256, d_model 128, 2 layers, batch 256, lr 1e-3 with 2,000 warm-up
    steps, test sets of 8,192, 3 seeds, both eigenvalue ranges, on a GPU."""
    config = load_config("grazzi-parity")
    found = {(t.name, t.params.get("brackets")): t for t in config.settings()}
    assert set(found) == {("parity", None), ("modular-arithmetic", False),
                          ("modular-arithmetic", True)}  # fmt: skip
    steps = {(c.task.name, c.task.model_dump().get("brackets")): c.train.max_steps
             for c in config.cells()}  # fmt: skip
    assert steps == {("parity", None): 20000, ("modular-arithmetic", False): 100000,
                     ("modular-arithmetic", True): 100000}  # fmt: skip
    assert (config.arch.d_model, config.arch.n_layers) == (128, 2) and config.device == "cuda"
    train = config.train
    assert (train.batch_size, train.lr, train.warmup_steps) == (256, 1e-3, 2000)
    assert train.test_size == train.length_test_size == 8192 and config.seeds == [0, 1, 2]
    assert {"mamba-s6", "mamba-s6-neg", "deltanet", "deltanet-neg"} <= set(config.models)


def test_word_problems_cpu_is_a5_and_z60_up_to_k_12():
    config = load_config("word-problems-cpu")
    assert {t.params["group"] for t in config.settings()} == {"A5", "Z60"}
    assert max(config.all_lengths()) == 12 and config.arch.n_layers == 1
    assert {"lstm", "transformer", "mamba-s6"} <= set(config.models)


def householder_configurations(config, n_heads: int) -> set[tuple[int, bool]]:
    """(Householder steps, negative eigenvalues) of each model of an S3 preset, heads checked."""
    configurations = set()
    for name in config.models:
        options = get(name).check_options(config.arch.options[name])
        assert options["n_heads"] == n_heads and config.arch.d_model // n_heads == 16, name
        configurations.add((options.get("householder", 1), options["negative_eigenvalues"]))
    assert len(configurations) == len(config.models)
    return configurations


@pytest.mark.parametrize("preset", ["deltaproduct-s3", "deltaproduct-s3-cpu"])
def test_deltaproduct_s3_presets_are_the_sources_four_configurations(preset):
    """Siems et al. 2025: S3 trained at k 128 and tested at 512, one layer of heads of 16
    channels, lr 1e-3 cosine; one or two Householder steps, each with eigenvalues in [-1, 1] and
    [0, 1]."""
    config = load_config(preset)
    assert [t.params["group"] for t in config.settings()] == ["S3"]
    assert config.all_lengths() == [128] and config.eval_lengths == [512]
    train = config.train
    assert (config.arch.n_layers, train.lr, train.schedule) == (1, 1e-3, "cosine")
    heads = 8 if config.device == "cuda" else 4
    both = {(2, True), (2, False), (1, True), (1, False)}
    assert householder_configurations(config, heads) == both


def test_the_gpu_s3_preset_has_the_sources_budget():
    config = load_config("deltaproduct-s3")
    train = config.train
    assert (train.batch_size, train.max_steps) == (2048, 4900)  # 100 epochs of 100,000
    assert config.device == "cuda" and load_config("deltaproduct-s3-cpu").device == "cpu"


def test_merrill_word_problems_is_the_sources_protocol():
    """Merrill et al. 2024 (jopetty/word-problem): Z60, A4xZ5, A5 at k 2 .. 20, LSTM, Transformer,
    S4, Mamba, d_model 512, AdamW lr 1e-4, weight decay 0.01, batch 32, stop at 99%."""
    config = load_config("merrill-word-problems")
    assert [t.params["group"] for t in config.settings()] == ["Z60", "A4xZ5", "A5"]
    assert config.all_lengths() == list(range(2, 21, 2)) and config.arch.n_layers == 1
    assert config.models == ["lstm", "transformer", "s4", "mamba-s6"]
    train = config.train
    assert (train.optimizer, train.lr, train.weight_decay) == ("adamw", 1e-4, 0.01)
    assert train.batch_size == 32
    assert train.target_accuracy == 0.99 and train.patience is None
    assert (config.arch.d_model, config.device) == (512, "cuda")

"""The task suite against its definitions: layout, distributions, determinism, held-out sets,
an oracle that scores 1.0 and a constant predictor at chance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest, chisquare

from ssmbench import tasks
from ssmbench.tasks import IGNORE_INDEX, Score, loss, score
from ssmbench.tasks.data import TrainingStream, draw_disjoint, held_out, row_digests
from ssmbench.tasks.metrics import score_predictions

SMALL = {
    "selective-copy": {"seq_len": 20, "n_tokens": 4, "vocab_size": 8},
    "copy": {"seq_len": 20, "n_tokens": 4, "vocab_size": 8},
    "induction-heads": {"seq_len": 32},
    "mqar": {"seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64},
    "in-context-recall": {"seq_len": 32},
    "fuzzy-in-context-recall": {"seq_len": 48},
    "noisy-in-context-recall": {"seq_len": 32},
    "memorization": {"seq_len": 16, "vocab_size": 32, "train_examples": 64},
    "compression": {"seq_len": 16, "vocab_size": 8},
    "parity": {"seq_len": 16, "train_lengths": "3-16", "test_lengths": "16-32"},
    "modular-arithmetic": {"seq_len": 16, "brackets": True, "train_lengths": "3-16"},
    "word-problem": {"seq_len": 16, "group": "S3"},
    "cumulative-parity": {"seq_len": 16},
    "majority": {"seq_len": 16},  # 15 bits: no ties
    "forgetting-mqar": {"seq_len": 32, "num_kv_pairs": 4, "num_updates": 2, "vocab_size": 64},
    "compositional-mqar": {"seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64},
    "string-copy": {"seq_len": 16, "vocab_size": 8, "train_lengths": "5-16"},
    "ngram-lookup": {"seq_len": 24, "n_gram": 2, "length_answer": 2, "train_lengths": "15-24"},
    "flip-flop": {"seq_len": 16},
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(name: str, **update) -> tasks.Task:
    return tasks.build(name, **{**SMALL[name], **update})


def test_every_registered_task_has_a_small_size():
    assert set(SMALL) == set(tasks.names())
    assert len(tasks.names()) >= 14


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("train", [False, True])
def test_shapes_vocabulary_and_at_least_one_label(name, train):
    task = small(name)
    x, y = task.sample(64, gen(), train=train)
    assert x.shape == y.shape == (64, task.input_len)
    assert x.dtype == y.dtype == torch.int64
    assert ((x >= 0) & (x < task.vocab_size)).all()
    assert ((y == IGNORE_INDEX) | ((y >= 0) & (y < task.vocab_size))).all()
    assert ((y != IGNORE_INDEX).sum(1) >= 1).all(), "every example has a label"


@pytest.mark.parametrize("name", SMALL)
def test_deterministic_per_seed(name):
    task = small(name)
    a, b, c = task.sample(16, gen(1)), task.sample(16, gen(1)), task.sample(16, gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", SMALL)
def test_held_out_sets_fixed_and_disjoint_from_each_other_and_training(name):
    task = small(name, train_examples=None) if name != "memorization" else small(name)
    sets = held_out(task, 128, 128)
    again = held_out(task, 128, 128)
    assert torch.equal(sets.test[0], again.test[0]) and torch.equal(sets.test[1], again.test[1])
    assert not set(row_digests(sets.validation[0])) & set(row_digests(sets.test[0]))
    stream = TrainingStream(task, seed=0, batch_size=32, exclude=sets.digests)
    for _ in range(20):
        x, y = stream.next()
        assert x.shape == (32, task.input_len) and y.shape == x.shape
        assert not set(row_digests(x)) & sets.digests


def test_copy_at_quick_sizes_shares_nothing_with_training():
    """The quick preset's copy task: raw sampling repeats test examples; the stream never does."""
    task = tasks.build("copy", seq_len=32, n_tokens=4, vocab_size=16)
    sets = held_out(task, 512, 1024)
    g = gen(0)
    raw = sum(len(set(row_digests(task.sample(32, g)[0])) & sets.digests) for _ in range(1000))
    assert raw > 0, "the control: unfiltered training batches do hit held-out examples"
    stream = TrainingStream(task, seed=0, batch_size=32, exclude=sets.digests)
    hits = sum(len(set(row_digests(stream.next()[0])) & sets.digests) for _ in range(1000))
    assert hits == 0


def test_fixed_training_set_is_disjoint_and_served_in_epochs():
    task = small("memorization", train_examples=64)
    sets = held_out(task, 64, 64)
    stream = TrainingStream(task, seed=3, batch_size=16, exclude=sets.digests)
    assert stream.fixed is not None and not set(row_digests(stream.fixed[0])) & sets.digests
    epoch = torch.cat([stream.next()[0] for _ in range(4)])  # 4 x 16 = one epoch
    assert sorted(row_digests(epoch)) == sorted(row_digests(stream.fixed[0]))
    state = stream.state_dict()
    after = [stream.next()[0] for _ in range(6)]
    resumed = TrainingStream(task, seed=3, batch_size=16, exclude=sets.digests)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next()[0]) for a in after)


def test_too_small_example_space_is_an_error():
    task = tasks.build("copy", seq_len=4, n_tokens=1, vocab_size=3)  # one possible example
    with pytest.raises(ValueError, match="too few distinct examples"):
        held_out(task, 4, 4)
    with pytest.raises(ValueError, match="too few"):
        draw_disjoint(task, 1, gen(), set(row_digests(task.sample(1, gen())[0])))


# ---- oracles: rules that read the answer off the inputs, per the definitions ----


def _oracle_copy(task, x):
    S, M = task.seq_len, task.n_tokens
    pred = torch.zeros_like(x)
    pred[:, S + M :] = torch.stack([row[: S + M][row[: S + M] != 0] for row in x])
    return pred


def _oracle_induction(task, x):
    pred = torch.zeros_like(x)
    first = (x == task.trigger).int().argmax(1)  # (B,) first trigger
    pred[:, -1] = x[torch.arange(len(x)), first + 1]
    return pred


def _oracle_recall_pairs(task, x, context_end=None):
    """Predict, at each key position, the value that followed the same key most recently."""
    pred = torch.zeros_like(x)
    for b, row in enumerate(x.tolist()):
        bound = {}
        stop = context_end if context_end is not None else len(row)
        for t in range(0, stop, 2):
            if row[t] in bound:
                pred[b, t] = bound[row[t]]
            if context_end is None or t < context_end:
                bound[row[t]] = row[t + 1]
        for t in range(stop, len(row)):
            pred[b, t] = bound.get(row[t], 0)
    return pred


def _oracle_mqar(task, x):
    return _oracle_recall_pairs(task, x, context_end=2 * task.num_kv_pairs)


def _oracle_memorization(task, x):
    pred = torch.zeros_like(x)
    pred[:, 1::2] = task.value_map()[x[:, 0::2]]
    return pred


ORACLES = {
    "selective-copy": _oracle_copy,
    "copy": _oracle_copy,
    "induction-heads": _oracle_induction,
    "mqar": _oracle_mqar,
    "in-context-recall": _oracle_recall_pairs,
    "noisy-in-context-recall": _oracle_recall_pairs,
    "memorization": _oracle_memorization,
    "compression": lambda task, x: x.clone(),
}


@pytest.mark.parametrize("name", ORACLES)
def test_rule_based_oracle_scores_one(name):
    task = small(name)
    x, y = task.sample(256, gen(5))
    result = score_predictions(ORACLES[name](task, x), y)
    assert result.accuracy == 1.0 and result.exact_match == 1.0


@pytest.mark.parametrize("name", SMALL)
def test_model_that_sees_the_labels_scores_one_and_zero_loss_limit(name):
    task = small(name)
    x, y = task.sample(64, gen(6))
    logits = 50.0 * F.one_hot(y.clamp(min=0), task.vocab_size).float()  # (B, T, V)
    result = score(logits, y)
    assert result.accuracy == 1.0 and result.exact_match == 1.0
    assert loss(logits, y) < 1e-6


CHANCE = {  # accuracy of a constant prediction of an answer token: 1 / answer alphabet
    "selective-copy": 1 / 6,
    "copy": 1 / 6,
    "induction-heads": 1 / 15,
    "mqar": 1 / 32,
    "in-context-recall": 1 / 8,
    "fuzzy-in-context-recall": 1 / 8,
    "noisy-in-context-recall": 1 / 8,
    "memorization": 1 / 15,
    "compression": 15 / 16 / 7,
    "parity": 1 / 2,
    "modular-arithmetic": 1 / 5,
    "word-problem": 1 / 6,
    "cumulative-parity": 1 / 2,
    "majority": 1 / 2,
    "forgetting-mqar": 1 / 32,
    "compositional-mqar": 1 / 22,
    "string-copy": 1 / 4,
    "ngram-lookup": 1 / 26,
    "flip-flop": 1 / 2,
}


@pytest.mark.parametrize("name", SMALL)
def test_constant_predictor_scores_at_chance(name):
    task = small(name)
    x, y = task.sample(4000, gen(7))
    answers = y[y != IGNORE_INDEX]
    constant = int(answers.min())  # an answer token, not chosen by looking at its frequency
    result = score_predictions(torch.full_like(y, constant), y)
    assert result.accuracy == pytest.approx(CHANCE[name], rel=0.15)
    assert result.exact_match <= result.accuracy + 1e-9


ALPHABETS = {  # scored labels are uniform over these tokens
    "selective-copy": range(1, 7),
    "copy": range(1, 7),
    "induction-heads": range(0, 15),
    "mqar": range(32, 64),
    "in-context-recall": range(8, 16),
    "fuzzy-in-context-recall": range(7, 15),
    "noisy-in-context-recall": range(8, 16),
    "memorization": None,  # the image of the fixed map: 15 of the 16 value tokens
    "parity": range(1, 3),
    "modular-arithmetic": range(0, 5),
    "word-problem": range(0, 6),
    "cumulative-parity": range(0, 2),
    "majority": range(0, 2),
    "forgetting-mqar": range(32, 64),
    "compositional-mqar": range(42, 64),
    "string-copy": range(0, 4),
    "flip-flop": range(3, 5),
}


@pytest.mark.parametrize("name", ALPHABETS)
def test_scored_labels_uniform_over_the_answer_alphabet(name):
    task = small(name)
    _, y = task.sample(3000, gen(8))
    answers = y[y != IGNORE_INDEX]
    alphabet = ALPHABETS[name] or sorted(task.value_map().tolist())
    assert set(answers.unique().tolist()) <= set(alphabet)
    counts = [int((answers == token).sum()) for token in alphabet]
    assert chisquare(counts).pvalue > 1e-4


# ---- per-task definitions ----


@pytest.mark.parametrize("name", ["selective-copy", "copy"])
def test_copy_layout(name):
    S, M, V = 50, 6, 10
    task = tasks.build(name, seq_len=S, n_tokens=M, vocab_size=V)
    x, y = task.sample(256, gen())
    assert x.shape == (256, S + 2 * M)
    assert (x[:, S + M :] == V - 1).all(), "the last M tokens are markers"
    body = x[:, : S + M]
    assert ((body >= 0) & (body <= V - 2)).all()
    assert ((body != 0).sum(1) == M).all()
    assert (y[:, : S + M] == IGNORE_INDEX).all()
    assert torch.equal(torch.stack([row[row != 0] for row in body]), y[:, S + M :])
    if name == "copy":
        assert torch.equal(x[:, :M], y[:, S + M :])


def test_selective_copy_positions_uniform_over_all_slots():
    S, M = 30, 3
    x, _ = tasks.build("selective-copy", seq_len=S, n_tokens=M).sample(6000, gen())
    used = (x[:, : S + M] != 0).sum(0).numpy()  # (S+M,) how often each slot holds data
    assert chisquare(used).pvalue > 1e-4


def test_induction_heads_definition():
    T, V = 24, 6
    task = tasks.build("induction-heads", seq_len=T, vocab_size=V)
    x, y = task.sample(6000, gen())
    trigger = V - 1
    assert ((x == trigger).sum(1) == 2).all(), "the trigger appears once, plus at the end"
    assert (x[:, -1] == trigger).all()
    first = (x == trigger).int().argmax(1)
    assert first.max() <= T - 3
    assert chisquare(torch.bincount(first, minlength=T - 2).numpy()).pvalue > 1e-4
    assert (y[:, :-1] == IGNORE_INDEX).all()
    assert torch.equal(y[:, -1], x[torch.arange(len(x)), first + 1])
    _, y_train = task.sample(64, gen(), train=True)
    assert (y_train[:, :-1] == IGNORE_INDEX).all(), "trained on the last position only"


def test_mqar_definition():
    T, V, K = 64, 128, 6
    task = tasks.build("mqar", seq_len=T, vocab_size=V, num_kv_pairs=K, random_non_queries=False)
    x, y = task.sample(3000, gen())
    keys, values = x[:, 0 : 2 * K : 2], x[:, 1 : 2 * K : 2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert all(len(set(r)) == K for r in keys.tolist()), "keys distinct"
    assert all(len(set(r)) == K for r in values.tolist()), "values distinct"
    queries = x[:, 2 * K :]
    assert ((queries != 0).sum(1) == K).all(), "each key queried once, zeros elsewhere"
    at = (queries != 0).nonzero()[:, 1]
    assert (at % 2 == 0).all(), "queries on the even slots"
    assert (y[:, : 2 * K] == IGNORE_INDEX).all() and ((y != IGNORE_INDEX).sum(1) == K).all()
    # The gap of the first pair's key follows the power law P(g) ∝ (g+1)^(a-1).
    first_at = (queries == keys[:, :1]).int().argmax(1) // 2  # (B,)
    slots = (T - 2 * K) // 2
    p = torch.arange(1, slots + 1, dtype=torch.float64) ** (0.01 - 1)
    observed = torch.bincount(first_at, minlength=slots).numpy()
    assert chisquare(observed, (p / p.sum() * len(first_at)).numpy()).pvalue > 1e-4


def test_mqar_random_non_queries_fill_the_gaps():
    task = small("mqar")
    x, y = task.sample(500, gen())
    region = x[:, 2 * task.num_kv_pairs :][y[:, 2 * task.num_kv_pairs :] == IGNORE_INDEX]
    assert chisquare(torch.bincount(region, minlength=64).numpy()).pvalue > 1e-4


@pytest.mark.parametrize("name", ["in-context-recall", "noisy-in-context-recall"])
def test_in_context_recall_definition(name):
    task = small(name)
    clean = task.vocab_size - task.noise_vocab_size
    x, y = task.sample(500, gen())
    _, y_train = task.sample(500, gen(), train=True)
    assert torch.equal(y_train[:, :-1], x[:, 1:]) and (y_train[:, -1] == IGNORE_INDEX).all()
    for row, labels in zip(x.tolist(), y.tolist(), strict=True):
        bound = {}
        for t in range(0, len(row), 2):
            k, v = row[t], row[t + 1]
            if k >= clean:  # a noise pair
                assert v >= clean and labels[t] == IGNORE_INDEX
                continue
            assert k < clean // 2 <= v < clean
            assert bound.setdefault(k, v) == v, "a key keeps its value"
            assert labels[t] == (v if (k, v) in seen_pairs(row[:t]) else IGNORE_INDEX)
        assert row[-2] in row[:-2:2], "the final key was shown before"
        assert all(labels[t] == IGNORE_INDEX for t in range(1, len(row), 2))


def seen_pairs(prefix: list[int]) -> set[tuple[int, int]]:
    return {(prefix[t], prefix[t + 1]) for t in range(0, len(prefix) - 1, 2)}


def test_noisy_recall_noise_fraction():
    task = small("noisy-in-context-recall", seq_len=64)
    x, _ = task.sample(2000, gen())
    pairs = x[:, :-2:2]  # keys (or noise) of the first T/2 - 1 pairs
    noise = int((pairs >= task.vocab_size - task.noise_vocab_size).sum())
    n, P = pairs.numel(), pairs.shape[1]
    expected = task.frac_noise * (P - 1) / P  # one pair per example is forced clean
    assert binomtest(noise, n, expected).pvalue > 1e-4


@pytest.mark.parametrize("train", [False, True])
def test_fuzzy_recall_definition(train):
    task = small("fuzzy-in-context-recall")
    n_keys, pad = (task.vocab_size - 1) // 2, task.vocab_size - 1
    x, y = task.sample(300, gen(), train=train)
    for row, labels in zip(x.tolist(), y.tolist(), strict=True):
        body = [t for t in row if t != pad]
        assert row[: len(row) - len(body)] == [pad] * (len(row) - len(body)), "pads in front"
        if train:
            assert labels[:-1] == row[1:]
            continue
        run = 0
        while labels[len(labels) - 1 - run] != IGNORE_INDEX:
            run += 1
        assert 1 <= run <= task.v_motif_size
        value = labels[-run:]
        assert all(n_keys <= t < pad for t in value)
        T, k = len(row), task.k_motif_size
        key, shown = row[T + 1 - run - k : T + 1 - run], row[: T + 1 - run - k]
        assert all(t < n_keys for t in key), "evaluation keys have the longest motif"
        assert shown[-1] >= n_keys, "and no longer: a value or pad precedes the key"
        probe = key + value
        assert any(shown[i : i + len(probe)] == probe for i in range(len(shown))), "shown before"


def test_memorization_definition():
    task = small("memorization")
    x, y = task.sample(500, gen())
    value_of = task.value_map()
    assert len(set(value_of.tolist())) == task.n_keys, "one to one"
    assert ((value_of >= task.n_keys) & (value_of < task.vocab_size - 1)).all()
    assert (x[:, 1::2] == task.vocab_size - 1).all() and (y[:, 0::2] == IGNORE_INDEX).all()
    assert torch.equal(y[:, 1::2], value_of[x[:, 0::2]])
    assert torch.equal(value_of, small("memorization", train_examples=8).value_map())
    assert not torch.equal(value_of, small("memorization", map_seed=1).value_map())


def test_compression_definition():
    task = small("compression")
    x, y = task.sample(2000, gen())
    assert torch.equal(x, y) and (x[:, -1] == task.vocab_size - 1).all()
    assert task.readout == "autoencoder"
    counts = torch.bincount(x[:, :-1].flatten(), minlength=task.vocab_size - 1).numpy()
    assert chisquare(counts).pvalue > 1e-4


def test_mad_recall_trains_on_every_next_token_but_scores_values_only():
    task = small("in-context-recall")
    _, scored = task.sample(8, gen())
    _, trained = task.sample(8, gen(), train=True)
    assert (trained != IGNORE_INDEX).sum() > (scored != IGNORE_INDEX).sum()


# ---- metrics ----


def test_loss_ignores_unscored_positions():
    logits = torch.randn(3, 5, 7)
    labels = torch.full((3, 5), IGNORE_INDEX)
    labels[:, 2] = torch.tensor([1, 4, 6])
    manual = F.cross_entropy(logits[:, 2], labels[:, 2])
    assert torch.allclose(loss(logits, labels), manual)


def test_score_counts_tokens_and_examples():
    labels = torch.tensor([[IGNORE_INDEX, 1, 2], [3, IGNORE_INDEX, 4]])
    predictions = torch.tensor([[0, 1, 2], [3, 0, 0]])
    result = score_predictions(predictions, labels)
    assert (result.correct, result.scored, result.exact, result.examples) == (3, 4, 1, 2)
    total = result + Score(1, 1, 1, 1)
    assert total.accuracy == 4 / 5 and total.exact_match == 2 / 3


# ---- parameters, registry, keys ----


def test_keys_name_task_and_parameters_without_length():
    assert tasks.build("selective-copy", seq_len=256).key == "selective-copy-M16-V16"
    assert tasks.build("mqar").key == "mqar-KV8-V8192-a0.01-rnq1"
    assert tasks.build("memorization").key == "memorization-V256-N256"
    assert small("mqar").key == small("mqar", seq_len=64).key


def test_defaults_follow_the_sources():
    assert tasks.build("induction-heads").seq_len == 256
    assert tasks.build("induction-heads").vocab_size == 16
    mqar = tasks.build("mqar")
    assert (mqar.vocab_size, mqar.power_a, mqar.random_non_queries) == (8192, 0.01, True)
    noisy = tasks.build("noisy-in-context-recall")
    assert (noisy.vocab_size, noisy.noise_vocab_size, noisy.frac_noise) == (32, 16, 0.2)
    fuzzy = tasks.build("fuzzy-in-context-recall")
    assert (fuzzy.k_motif_size, fuzzy.v_motif_size, fuzzy.train_examples) == (3, 3, 12_800)
    memo = tasks.build("memorization")
    assert (memo.vocab_size, memo.seq_len, memo.train_examples) == (256, 32, 256)
    comp = tasks.build("compression")
    assert (comp.vocab_size, comp.seq_len, comp.train_examples) == (16, 32, 12_800)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mqar", {"num_kv_pairs": 0}, "num_kv_pairs"),
        ("mqar", {"seq_len": 31}, "even"),
        ("mqar", {"seq_len": 16, "num_kv_pairs": 8}, "num_kv_pairs"),
        ("mqar", {"colour": 3}, "colour: unknown parameter"),
        ("selective-copy", {"seq_len": 10, "n_tokens": True}, "n_tokens"),
        ("selective-copy", {"seq_len": 10.5}, "seq_len"),
        ("copy", {"seq_len": 10, "vocab_size": 2}, "vocab_size"),
        ("noisy-in-context-recall", {"frac_noise": 1.0}, "frac_noise"),
        ("in-context-recall", {"frac_noise": 0.3}, "noise_vocab_size"),
        ("induction-heads", {"seq_len": 2}, "seq_len"),
        ("memorization", {"train_examples": 0}, "train_examples"),
        ("nope", {}, "unknown task 'nope'"),
    ],
)
def test_bad_parameters_are_one_line_errors(name, params, message):
    with pytest.raises(ValueError, match=message) as info:
        tasks.build(name, **params)
    assert "\n" not in str(info.value)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        small("mqar").sample(0, gen())


def test_tasks_are_frozen_and_move_to_other_lengths():
    task = small("induction-heads")
    with pytest.raises(ValueError):
        task.seq_len = 8  # type: ignore[misc]
    longer = task.at_length(128)
    assert longer.seq_len == 128 and longer.vocab_size == task.vocab_size
    with pytest.raises(ValueError):
        task.at_length(2)


def test_register_adds_a_task_and_refuses_clashes(monkeypatch):
    monkeypatch.setattr(tasks.registry, "REGISTRY", dict(tasks.registry.REGISTRY))

    class Constant(tasks.Task):
        name = "constant"
        summary = "always the same token"
        source = "a test"

        def _draw(self, batch_size, generator, train):
            x = torch.zeros(batch_size, self.seq_len, dtype=torch.long)
            return x, x.clone()

    tasks.register("constant", Constant)
    assert "constant" in tasks.names() and tasks.build("constant", seq_len=4).key == "constant-V16"
    with pytest.raises(ValueError, match="already registered"):
        tasks.register("constant", Constant)
    with pytest.raises(ValueError, match="Task subclass"):
        tasks.register("other", Constant)


def test_parameters_listing_has_defaults_and_descriptions():
    params = tasks.parameters("mqar")
    assert params["num_kv_pairs"][0] == 8 and params["num_kv_pairs"][1]
    assert "seq_len" not in params and "train_examples" in params

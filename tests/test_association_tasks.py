"""The association and copying tasks (zoology's forgetting and compositional MQAR, Jelassi et
al.'s string copy and n-gram lookup, Liu et al.'s flip-flop language) against their
definitions: every label recomputed here from the inputs alone, by rules written independently
of the tasks (a scan for the latest binding, a parser of the layout, an interpreter of the
instruction stream); held-out sets at the test lengths; bad parameters; an LSTM learning
flip-flop and keeping it longer; the associations-cpu preset."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from small_runs import scores_by_length

from ssmbench import tasks
from ssmbench.experiment.config import load_config
from ssmbench.models.registry import get
from ssmbench.tasks import IGNORE_INDEX
from ssmbench.tasks.data import TrainingStream, held_out, row_digests
from ssmbench.tasks.metrics import score_predictions

SIZES = {  # small enough for a fast test, large enough to exercise every rule
    "forgetting-mqar": {"seq_len": 48, "num_kv_pairs": 6, "num_updates": 3, "vocab_size": 40},
    "compositional-mqar": {"seq_len": 60, "num_kv_pairs": 9, "vocab_size": 60},
    "string-copy": {"seq_len": 24, "vocab_size": 9, "train_lengths": "5-24",
                    "test_lengths": "24-64"},
    "ngram-lookup": {"seq_len": 28, "vocab_size": 12, "n_gram": 2, "length_answer": 2,
                     "train_lengths": "15-28", "test_lengths": "28-64"},
    "ngram-lookup-rest": {"seq_len": 28, "vocab_size": 12, "n_gram": 2,
                          "train_lengths": "14-28", "test_lengths": "28-64"},
    "flip-flop": {"seq_len": 32, "p_ignore": 0.5},
}  # fmt: skip
BOS, BAR, EOS = 0, 1, 2  # offsets after the letters: `$`, `|`, `.`; the pad is the 4th


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(kind: str, **update) -> tasks.Task:
    return tasks.build(kind.removesuffix("-rest"), **{**SIZES[kind], **update})


# ---- oracles: the labels, recomputed from the inputs by the published rules ----


def latest_binding(task, x: torch.Tensor) -> torch.Tensor:
    """Forgetting MQAR: scan the context pair by pair keeping each key's latest value, and
    answer it at every even slot of the query region that holds a bound key (-100 elsewhere)."""
    context = 2 * (task.num_kv_pairs + task.num_updates)
    answers = torch.full_like(x, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        bound = {}
        for t in range(0, context, 2):
            bound[row[t]] = row[t + 1]
        for t in range(context, len(row), 2):
            answers[b, t] = bound.get(row[t], IGNORE_INDEX)
    return answers


def pair_binding(task, x: torch.Tensor) -> torch.Tensor:
    """Compositional MQAR: the triples' (K1, K2) -> value, answered at the K2 of every slot of
    the query region that holds a bound pair (-100 elsewhere)."""
    context = 3 * task.num_kv_pairs
    answers = torch.full_like(x, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        bound = {(row[t], row[t + 1]): row[t + 2] for t in range(0, context, 3)}
        for t in range(context, len(row) - 1, 3):
            answers[b, t + 1] = bound.get((row[t], row[t + 1]), IGNORE_INDEX)
    return answers


def queried_keys(task, x: torch.Tensor, y: torch.Tensor) -> list[list]:
    """The key (or key pair) at each scored position, row by row, and the context's keys."""
    rows = []
    for row, labels in zip(x.tolist(), y.tolist(), strict=True):
        at = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
        if task.name == "forgetting-mqar":
            asked, known = [row[t] for t in at], row[0 : 2 * task.num_kv_pairs : 2]
        else:
            K = task.num_kv_pairs
            asked = [(row[t - 1], row[t]) for t in at]
            known = list(zip(row[0 : 3 * K : 3], row[1 : 3 * K : 3], strict=True))
        rows.append([sorted(asked), sorted(known)])
    return rows


def parse_strings(task, row: list[int]) -> tuple[list[int], list[list[int]]]:
    """Split a Jelassi row at its `$`, `|` and `.`: (the tokens up to `.`, the letter runs)."""
    letters = task.vocab_size - 4
    assert row[0] == letters + BOS and row.count(letters + EOS) == 1
    end = row.index(letters + EOS)
    assert all(t == task.pad_token for t in row[end + 1 :]), "pad after the end only"
    runs, run = [], []
    for t in row[1:end]:
        if t == letters + BAR:
            runs.append(run)
            run = []
        else:
            assert 0 <= t < letters
            run.append(t)
    return row[: end + 1], [*runs, run]


def copy_oracle(task, x: torch.Tensor, train: bool) -> torch.Tensor:
    """String copy: `$ s | s .`; the second s scored from the `|` on (and the `.` trained)."""
    expected = torch.full_like(x, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        tokens, (string, copy) = parse_strings(task, row)
        assert copy == string and len(string) >= 1
        bar = len(string) + 1
        answer = [*string, tokens[-1]] if train else string
        expected[b, bar : bar + len(answer)] = torch.tensor(answer)
    return expected


def lookup_oracle(task, x: torch.Tensor, train: bool) -> torch.Tensor:
    """N-gram lookup: `$ key | s | answer .`; the answer is the letters after the key's first
    occurrence in s (length_answer of them, or the rest), drawn among the source's candidates."""
    n, a = task.n_gram, task.length_answer
    expected = torch.full_like(x, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        tokens, (key, string, answer) = parse_strings(task, row)
        grams = [string[i : i + n] for i in range(len(string) - n + 1)]
        first = grams.index(key)
        candidates = len(string) - n - (a + 1 if a > 0 else 1)
        assert first <= candidates - 2, "the key starts where the source draws it"
        assert 1 in Counter(map(tuple, grams[:candidates])).values(), "one candidate is unique"
        assert answer == (string[first + n : first + n + a] if a else string[first + n :])
        bar = len(tokens) - len(answer) - 2
        scored = [*answer, tokens[-1]] if train else answer
        expected[b, bar : bar + len(scored)] = torch.tensor(scored)
    return expected


def flip_flop_interpreter(x: torch.Tensor) -> torch.Tensor:
    """Flip-flop: run the instructions on a one-bit register; a read must return the latest
    write, and is labelled with it at the `r`."""
    w, r, i, zero, one = range(5)
    expected = torch.full_like(x, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        ops, bits = row[0::2], row[1::2]
        assert ops[0] == w and ops[-1] == r and set(bits) <= {zero, one}
        register = None
        for step, (op, bit) in enumerate(zip(ops, bits, strict=True)):
            assert op in (w, r, i)
            if op == w:
                register = bit
            elif op == r:
                assert bit == register, "a read shows the register"
                expected[b, 2 * step] = register
    return expected


def oracle(task, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    if task.name == "forgetting-mqar":
        return latest_binding(task, x)
    if task.name == "compositional-mqar":
        return pair_binding(task, x)
    if task.name == "string-copy":
        return copy_oracle(task, x, train)
    if task.name == "ngram-lookup":
        return lookup_oracle(task, x, train)
    return flip_flop_interpreter(x)


@pytest.mark.parametrize("kind", SIZES)
def test_labels_are_the_published_answers_at_training_and_test_lengths(kind):
    task = build(kind)
    longer = 64 if isinstance(task, tasks.base.VariableLengthTask) else 2 * task.seq_len
    for at in (task, task.at_length(longer)):
        x, y = at.sample(300, gen(1))
        answers = oracle(at, x)
        if "mqar" in kind:  # random tokens may look like queries: the labels say which are
            scored = y != IGNORE_INDEX
            assert torch.equal(answers[scored], y[scored]), at.seq_len
            assert all(asked == known for asked, known in queried_keys(at, x, y)), "each once"
        else:  # the layout alone says where every answer goes
            assert torch.equal(answers, y), at.seq_len
        result = score_predictions(answers.clamp(min=0), y)
        assert result.accuracy == 1.0 and result.exact_match == 1.0
    if kind in ("string-copy", "ngram-lookup", "ngram-lookup-rest"):  # they train on the EOS
        x, y = task.sample(300, gen(2), train=True)
        assert torch.equal(y, oracle(task, x, train=True))


# ---- per-task rules beyond the labels ----


def _power_law_fit(gaps: torch.Tensor, slots: int, power_a: float) -> float:
    """p-value of gaps (N,) against zoology's P(g) ∝ (g+1)^(a-1) over range(slots)."""
    p = torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)
    observed = torch.bincount(gaps, minlength=slots).numpy()
    return chisquare(observed, (p / p.sum() * len(gaps)).numpy()).pvalue


def test_forgetting_mqar_rebinds_keys_to_new_values_and_queries_every_key():
    T, V, K, U = 64, 64, 8, 4
    task = tasks.build(
        "forgetting-mqar", seq_len=T, vocab_size=V, num_kv_pairs=K, num_updates=U,
        random_non_queries=False,
    )  # fmt: skip
    x, y = task.sample(2000, gen(3))
    C = 2 * (K + U)
    keys, values = x[:, 0 : 2 * K : 2], x[:, 1 : 2 * K : 2]
    again, new = x[:, 2 * K : C : 2], x[:, 2 * K + 1 : C : 2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert ((new >= V // 2) & (new < V)).all()
    for k, v, k2, v2 in zip(
        keys.tolist(), values.tolist(), again.tolist(), new.tolist(), strict=True
    ):
        assert len(set(k)) == K and len(set(v)) == K and len(set(k2)) == U
        assert set(k2) <= set(k), "re-bound keys are keys of the context"
        first_value = dict(zip(k, v, strict=True))
        assert all(first_value[a] != b for a, b in zip(k2, v2, strict=True)), "a new value"
    queries = x[:, C:]
    assert ((queries != 0).sum(1) == K).all() and ((y != IGNORE_INDEX).sum(1) == K).all()
    assert ((queries != 0).nonzero()[:, 1] % 2 == 0).all(), "queries on the even slots"
    assert torch.equal(torch.sort(queries[queries != 0].view(-1, K)).values, keys.sort().values)
    first_at = (queries == keys[:, :1]).int().argmax(1) // 2  # (B,) slot of the first key
    assert _power_law_fit(first_at, (T - C) // 2, 0.01) > 1e-4
    # Answering with the first binding is right exactly for the K - U keys never re-bound.
    first = torch.full_like(y, IGNORE_INDEX)
    for b, row in enumerate(x.tolist()):
        bound = dict(zip(row[0 : 2 * K : 2], row[1 : 2 * K : 2], strict=True))
        for t in range(C, T, 2):
            first[b, t] = bound.get(row[t], IGNORE_INDEX)
    assert score_predictions(first.clamp(min=0), y).accuracy == pytest.approx((K - U) / K)


def test_compositional_mqar_pairs_form_a_grid_and_no_key_alone_tells_the_value():
    T, V, K = 60, 90, 9
    task = tasks.build(
        "compositional-mqar", seq_len=T, vocab_size=V, num_kv_pairs=K, random_non_queries=False
    )
    x, y = task.sample(2000, gen(4))
    third, C = V // 3, 3 * K
    k1, k2, values = x[:, 0:C:3], x[:, 1:C:3], x[:, 2:C:3]
    assert ((k1 >= 1) & (k1 < third)).all() and ((k2 >= third) & (k2 < 2 * third)).all()
    assert ((values >= 2 * third) & (values < V)).all()
    for a, b, v in zip(k1.tolist(), k2.tolist(), values.tolist(), strict=True):
        assert len(set(a)) == 3 and len(set(b)) == 3, "g = 3 distinct K1 and K2"
        assert len(set(zip(a, b, strict=True))) == K, "every (K1, K2) of the grid once"
        assert len(set(v)) == K, "distinct values: K1 alone or K2 alone never tells the value"
    queries = x[:, C:]
    assert ((queries != 0).sum(1) == 2 * K).all() and ((y != IGNORE_INDEX).sum(1) == K).all()
    at = (y[:, C:] != IGNORE_INDEX).nonzero()[:, 1]
    assert (at % 3 == 1).all(), "the label at the query's K2"
    slots = (T - C) // 3
    first = (queries[:, 0 : 3 * slots : 3] == k1[:, :1]) & (queries[:, 1::3] == k2[:, :1])
    first_at = first.int().argmax(1)  # (B,) slot of the first triple's query
    assert _power_law_fit(first_at, slots, 0.01) > 1e-4


def test_mqar_variants_fill_the_query_region_with_random_tokens():
    for kind, start in [("forgetting-mqar", 2 * (6 + 3)), ("compositional-mqar", 27)]:
        task = build(kind)
        x, y = task.sample(800, gen(5))
        query = y != IGNORE_INDEX  # (B, T) a query's key; and for pairs, the K1 before it
        if kind == "compositional-mqar":
            query[:, :-1] |= query[:, 1:].clone()
        region = x[:, start:][~query[:, start:]]
        counts = torch.bincount(region, minlength=task.vocab_size).numpy()
        assert chisquare(counts).pvalue > 1e-6, kind


def _string_lengths(task, x: torch.Tensor) -> list[int]:
    return [len(parse_strings(task, row)[1][0 if task.name == "string-copy" else 1]) for row in
            x.tolist()]  # fmt: skip


def test_string_copy_lengths_follow_the_ranges_in_tokens():
    task = build("string-copy")  # train 5-24, test 24-64: strings of 1 .. 10 and 11 .. 30
    for at, training, expected in [
        (task, True, range(1, 11)),
        (task, False, range(1, 11)),  # held out at the training length: the training range
        (task.at_length(64), False, range(11, 31)),  # 2m + 3 in 24 .. 64
        (task.at_length(80), False, range(38, 39)),  # outside both: the longest that fits
    ]:
        x, _ = at.sample(3000, gen(6), train=training)
        seen = Counter(_string_lengths(at, x))
        assert set(seen) == set(expected), (at.seq_len, training)
        if len(seen) > 1:
            assert chisquare(list(seen.values())).pvalue > 1e-4, "uniform over string lengths"
        tokens = 2 * torch.tensor(list(seen.elements())) + 3
        assert (tokens <= at.seq_len).all()


@pytest.mark.parametrize("kind", ["ngram-lookup", "ngram-lookup-rest"])
def test_ngram_lookup_lengths_follow_the_ranges_in_tokens(kind):
    task = build(kind)
    n, a = task.n_gram, task.length_answer
    for at in (task, task.at_length(64)):
        x, _ = at.sample(2000, gen(7))
        lo, hi = at.length_range(train=False)
        m = torch.tensor(_string_lengths(at, x))
        used = (x != at.pad_token).sum(1)  # (B,) tokens of each example
        if a:  # m + n + a + 4 tokens exactly, m uniform over what fits
            assert torch.equal(used, m + n + a + 4) and (used >= lo).all() and (used <= hi).all()
            assert set(m.tolist()) == set(range(lo - n - a - 4, hi - n - a - 4 + 1))
        else:  # at most 2m + 4 tokens: the answer runs to the end of the string
            assert (2 * m + 4 <= hi).all() and (2 * m + 4 >= lo).all() and (used <= 2 * m + 4).all()


def test_ngram_lookup_can_key_a_repeated_ngram_and_answers_after_its_first_occurrence():
    """As the source: the key is any candidate n-gram; a repeated one is answered after its
    first occurrence (the oracle above checks it on every row)."""
    task = build("ngram-lookup", vocab_size=7)  # 3 letters: repeated bigrams are common
    x, y = task.sample(400, gen(8))
    repeated = 0
    for row in x.tolist():
        _, (key, string, _) = parse_strings(task, row)
        grams = [string[i : i + 2] for i in range(len(string) - 1)]
        repeated += grams.count(key) > 1
    assert repeated > 20
    assert torch.equal(y, oracle(task, x))
    with pytest.raises(ValueError, match="no string of .* found once"):
        tasks.build("ngram-lookup", vocab_size=6, n_gram=1).sample(50, gen())


def test_flip_flop_instruction_frequencies_follow_p_and_the_test_distribution():
    task = tasks.build("flip-flop", seq_len=256, p_ignore=0.8, test_p_ignore=0.98)
    for training, p in [(True, 0.8), (False, 0.98)]:
        x, _ = task.sample(400, gen(9), train=training)
        middle = x[:, 2:-2:2]  # (B, N-2) the i.i.d. instructions
        counts = torch.bincount(middle.reshape(-1), minlength=3).double()
        assert counts[2] / counts.sum() == pytest.approx(p, abs=0.01)
        assert counts[0] / counts[:2].sum() == pytest.approx(0.5, abs=0.03), "P(w) = P(r)"
        written = x[:, 1::2][x[:, 0::2] != 1]  # bits after w and i: uniform
        assert (written == 4).double().mean() == pytest.approx(0.5, abs=0.02)
    dense = tasks.build("flip-flop", seq_len=256, test_p_ignore=0.1).sample(400, gen(10))[0]
    assert (dense[:, 2:-2:2] == 2).double().mean() == pytest.approx(0.1, abs=0.01)


def test_flip_flop_trains_on_every_next_token_or_the_reads():
    task = build("flip-flop")
    x, y = task.sample(200, gen(11), train=True)
    assert torch.equal(y[:, :-1], x[:, 1:]) and (y[:, -1] == IGNORE_INDEX).all()
    reads_only = build("flip-flop", lm_loss=False)
    x, y = reads_only.sample(200, gen(11), train=True)
    assert torch.equal(y, flip_flop_interpreter(x))


# ---- held-out sets at every length, determinism ----


@pytest.mark.parametrize("kind", SIZES)
def test_deterministic_and_held_out_disjoint_at_the_test_lengths(kind):
    task = build(kind)
    longer = task.at_length(64 if isinstance(task, tasks.base.VariableLengthTask) else 96)
    for at in (task, longer):
        a, b, c = at.sample(32, gen(12)), at.sample(32, gen(12)), at.sample(32, gen(13))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
        assert a[0].shape == (32, at.seq_len) and ((a[0] >= 0) & (a[0] < at.vocab_size)).all()
    sets = held_out(task, 128, 128)
    assert not set(row_digests(sets.validation[0])) & set(row_digests(sets.test[0]))
    stream = TrainingStream(task, seed=0, batch_size=64, exclude=sets.digests)
    for _ in range(10):
        assert not set(row_digests(stream.next()[0])) & sets.digests


# ---- parameters ----


def test_defaults_follow_the_sources():
    forgetting = tasks.build("forgetting-mqar")
    assert (forgetting.num_kv_pairs, forgetting.num_updates, forgetting.power_a) == (8, 4, 0.01)
    assert (forgetting.vocab_size, forgetting.seq_len, forgetting.random_non_queries) == (
        8192, 64, True,
    )  # fmt: skip
    composed = tasks.build("compositional-mqar")
    assert (composed.num_kv_pairs, composed.vocab_size, composed.seq_len) == (4, 8192, 64)
    copy = tasks.build("string-copy")
    assert (copy.letters, copy.train_lengths, copy.test_lengths) == (26, "19-103", "83-403")
    lookup = tasks.build("ngram-lookup")
    assert (lookup.n_gram, lookup.length_answer, lookup.vocab_size) == (3, 0, 30)
    assert (lookup.train_lengths, lookup.test_lengths) == ("20-104", "84-404")
    flip = tasks.build("flip-flop")
    assert (flip.seq_len, flip.vocab_size, flip.p_ignore, flip.test_p_ignore) == (
        512, 5, 0.8, None,
    )  # fmt: skip
    assert flip.key == "flip-flop-pi0.8-lm1"
    assert tasks.build("flip-flop", test_p_ignore=0.98).key == "flip-flop-pi0.8-te0.98-lm1"
    assert forgetting.key == "forgetting-mqar-KV8-U4-V8192-a0.01-rnq1"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("forgetting-mqar", {"num_updates": 9}, "num_updates must be <= num_kv_pairs = 8"),
        ("forgetting-mqar", {"seq_len": 63}, "even"),
        ("forgetting-mqar", {"seq_len": 38}, r"seq_len must be >= 2 \(num_kv_pairs"),
        ("forgetting-mqar", {"vocab_size": 16}, "vocab_size must be >= 18"),
        ("compositional-mqar", {"num_kv_pairs": 5}, "perfect square"),
        ("compositional-mqar", {"seq_len": 20}, r"seq_len must be >= 6 \* num_kv_pairs = 24"),
        ("compositional-mqar", {"vocab_size": 8}, "vocab_size must be >= 10 for 4 pairs"),
        ("string-copy", {"vocab_size": 5}, "vocab_size"),
        ("string-copy", {"train_lengths": "3-40"}, "5 <= lo"),
        ("string-copy", {"train_lengths": "5-200"}, "ends past seq_len 103"),
        ("ngram-lookup", {"train_lengths": "10-104"}, "10-104 is shorter .* example: 16 tokens"),
        ("ngram-lookup", {"seq_len": 12, "train_lengths": None}, "seq_len 12 is shorter"),
        ("ngram-lookup", {"length_answer": 2, "train_lengths": "16-104"}, "example: 17 tokens"),
        ("ngram-lookup", {"n_gram": 0}, "n_gram"),
        ("flip-flop", {"seq_len": 15}, "even"),
        ("flip-flop", {"vocab_size": 6}, "vocab_size must be 5"),
        ("flip-flop", {"p_ignore": 1.5}, "p_ignore"),
        ("flip-flop", {"test_p_ignore": -0.1}, "test_p_ignore"),
    ],
)
def test_bad_parameters_are_one_line_errors(name, params, message):
    with pytest.raises(ValueError, match=message) as info:
        tasks.build(name, **params)
    assert "\n" not in str(info.value)


# ---- learning: a recurrent state holds the register at lengths it never saw ----


def _trained_on_flip_flop(model: str, steps: int) -> dict[int, dict]:
    return scores_by_length(model, {"name": "flip-flop", "p_ignore": 0.5}, 32, 128, steps)


def test_lstm_learns_flip_flop_and_keeps_it_four_times_longer():
    """The LSTM's cell holds the written bit (the paper: recurrent models extrapolate); the
    gated MLP, which mixes no tokens, cannot see the last write and stays near chance."""
    lstm = _trained_on_flip_flop("lstm", 300)
    assert lstm[32]["accuracy"] >= 0.99 and lstm[128]["accuracy"] >= 0.95, lstm
    mlp = _trained_on_flip_flop("gated-mlp", 100)
    assert mlp[32]["accuracy"] <= 0.75 and mlp[128]["accuracy"] <= 0.75, mlp


# ---- preset ----


def test_associations_cpu_has_the_tasks_and_scores_them_longer():
    config = load_config("associations-cpu")
    names = Counter(t.name for t in config.settings())
    assert set(names) == {"forgetting-mqar", "compositional-mqar", "flip-flop", "string-copy"}
    flips = {t.params.get("test_p_ignore") for t in config.settings() if t.name == "flip-flop"}
    assert flips == {0.98, 0.1}, "the paper's sparse and dense tests"
    assert {
        "transformer",
        "gla",
        "mamba2",
        "mamba-s6",
        "lstm",
        "deltanet",
        "gated-deltanet",
    } <= set(config.models)
    assert config.eval_lengths and min(config.eval_lengths) > max(config.all_lengths() or [0])
    for task, lengths in config.setting_lengths():
        for length in [*lengths, *config.eval_lengths]:
            task.build(length)


def test_forgetting_mqar_cpu_compares_the_issues_mixers_over_a_range_of_state_sizes():
    config = load_config("forgetting-mqar-cpu")
    assert {t.name for t in config.settings()} == {"forgetting-mqar"}
    delta, others = {"deltanet", "gated-deltanet"}, {"gla", "retnet", "based", "mamba2"}
    assert delta | others | {"transformer"} == set(config.models)
    states: dict[str, list[int]] = {}
    for cell in config.cells():
        sizes = cell.arch.build_kwargs(cell.model)
        d_model, d_state = sizes.pop("d_model"), sizes.pop("d_state")
        sizes.pop("n_layers")
        states.setdefault(cell.model, []).append(
            get(cell.model).state(d_model, d_state, cell.seq_len, **sizes)
        )
    fixed = [states[m] for m in delta | others]
    # every fixed-state model has a width whose state lies within 4x of a delta-rule width's
    for sizes in fixed:
        assert any(a / 4 <= b <= 4 * a for a in sizes for b in states["deltanet"]), states
    assert config.arch.options["based"]["window"] == 0, "a window of 64 would hold the context"

import pytest
import torch

from ssmbench.tasks import Copy, SelectiveCopy, make_task


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("task_class", [SelectiveCopy, Copy])
def test_layout(task_class):
    S, M, V = 50, 6, 10
    task = task_class(S, M, V)
    x, y = task.sample(256, gen())
    assert x.shape == (256, S + 2 * M) and x.dtype == torch.int64
    assert y.shape == (256, M) and y.dtype == torch.int64
    assert (x[:, S + M :] == V - 1).all(), "the last M tokens are markers"
    body = x[:, : S + M]
    assert ((body >= 0) & (body <= V - 2)).all(), "no marker before the marker block"
    assert ((y >= 1) & (y <= V - 2)).all(), "data tokens exclude blank and marker"
    # Exactly M data tokens, and in order of position they are the targets.
    assert ((body != 0).sum(1) == M).all()
    recovered = torch.stack([row[row != 0] for row in body])
    assert torch.equal(recovered, y)


def test_copy_puts_data_first():
    x, y = Copy(20, 4, 8).sample(16, gen())
    assert torch.equal(x[:, :4], y)
    assert (x[:, 4:24] == 0).all()


def test_selective_positions_spread_over_all_slots():
    S, M = 30, 3
    x, _ = SelectiveCopy(S, M, 16).sample(4000, gen())
    used = (x[:, : S + M] != 0).float().mean(0)  # (S+M,) frequency each slot holds data
    assert used.min() > 0.5 * M / (S + M) and used.max() < 1.5 * M / (S + M)
    assert (x[:, : S + M] != 0).any(0).all(), "every slot can hold a data token"


def test_tokens_uniform_over_data_vocabulary():
    _, y = SelectiveCopy(10, 8, 6).sample(5000, gen())
    counts = torch.bincount(y.flatten(), minlength=6).float()
    assert counts[0] == 0 and counts[5] == 0
    share = counts[1:5] / counts.sum()
    assert (share - 0.25).abs().max() < 0.02


def test_reproducible_and_seed_dependent():
    task = SelectiveCopy(40, 4)
    a, b, c = task.sample(8, gen(1)), task.sample(8, gen(1)), task.sample(8, gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_fixed_sets_are_fixed_and_disjoint_from_training_stream():
    task = SelectiveCopy(40, 4)
    v1, v2 = task.fixed_set("validation", 64), task.fixed_set("validation", 64)
    t, train = task.fixed_set("test", 64), task.sample(64, gen(0))
    assert torch.equal(v1[0], v2[0])
    assert not torch.equal(v1[0], t[0])
    assert not torch.equal(v1[0], train[0])
    with pytest.raises(ValueError, match="split"):
        task.fixed_set("train", 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 0, 16), "n_tokens"),
        ((10, -1, 16), "n_tokens"),
        ((10, 4, 2), "vocab_size"),
        ((0, 4, 16), "seq_len"),
        ((10.5, 4, 16), "seq_len"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        SelectiveCopy(*args)


def test_bad_batch_and_task_name():
    with pytest.raises(ValueError, match="batch_size"):
        SelectiveCopy(10, 2).sample(0, gen())
    with pytest.raises(ValueError, match="unknown task"):
        make_task("copy-paste", 10, 2)

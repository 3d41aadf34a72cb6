import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprune.tasks.partitioners import PARTITIONERS, PartitionError, partition


def settings_for(kind: str, **settings):
    """The `kind`'s registered settings, from those of `settings` it has."""
    params = PARTITIONERS[kind].params
    return params(**{k: v for k, v in settings.items() if k in params.model_fields})


KINDS = ["iid", "dirichlet", "shards", "quantity_skew"]


def labels_for(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    clients=st.integers(1, 12),
    n=st.integers(400, 2000),
    seed=st.integers(0, 2**16),
    alpha=st.floats(0.3, 10.0),
)
def test_disjoint_covering_deterministic(kind, clients, n, seed, alpha):
    labels = labels_for(n, 10, seed)
    cfg = settings_for(kind=kind, alpha=alpha, shards_per_client=2, min_samples=5)
    first = partition(labels, clients, cfg, seed=seed)
    again = partition(labels, clients, cfg, seed=seed)
    assert len(first) == clients
    joined = np.concatenate(first)
    assert len(joined) == n, "every sample is assigned exactly once"
    assert np.array_equal(np.sort(joined), np.arange(n))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    if kind in ("dirichlet", "quantity_skew"):
        assert min(len(c) for c in first) >= 5


def mean_label_distance(labels: np.ndarray, clients: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    classes = labels.max() + 1
    overall = np.bincount(labels, minlength=classes) / len(labels)
    tv = [
        0.5 * np.abs(np.bincount(labels[c], minlength=classes) / len(c) - overall).sum()
        for c in clients
    ]
    return float(np.mean(tv))


def test_dirichlet_skew_grows_as_alpha_falls():
    labels = labels_for(20000, 10, 1)
    distance = {
        alpha: np.mean(
            [
                mean_label_distance(
                    labels,
                    partition(labels, 20, settings_for(kind="dirichlet", alpha=alpha), seed=s),
                )
                for s in range(3)
            ]
        )
        for alpha in (0.1, 0.5, 1.0, 10.0, 100.0)
    }
    values = list(distance.values())
    assert values == sorted(values, reverse=True), distance
    assert distance[0.1] > 0.5 and distance[100.0] < 0.05


def test_shards_give_few_classes_per_client():
    labels = np.repeat(np.arange(10), 200)
    clients = partition(labels, 10, settings_for(kind="shards", shards_per_client=2), seed=0)
    assert max(len(np.unique(labels[c])) for c in clients) <= 2


def test_quantity_skew_varies_sizes_not_labels():
    labels = labels_for(10000, 10, 2)
    clients = partition(labels, 10, settings_for(kind="quantity_skew", alpha=0.5), seed=0)
    sizes = [len(c) for c in clients]
    assert max(sizes) > 3 * min(sizes)


def test_different_seeds_differ():
    labels = labels_for(1000, 10, 0)
    cfg = settings_for(kind="iid")
    assert not np.array_equal(
        partition(labels, 4, cfg, seed=0)[0], partition(labels, 4, cfg, seed=1)[0]
    )


def test_impossible_dirichlet_fails_clearly():
    labels = labels_for(100, 10, 0)
    with pytest.raises(PartitionError, match="min_samples"):
        partition(labels, 10, settings_for(kind="dirichlet", alpha=0.01, min_samples=10), seed=0)

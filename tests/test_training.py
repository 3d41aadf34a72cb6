import torch

from fedprune.pruning.masks import apply_mask_, full_mask, magnitude_mask, prunable_names
from fedprune.tasks.models import MODELS, build_model
from fedprune.tasks.objectives import build_task
from fedprune.training.local import ClientConfig, evaluate, local_train

TASK = build_task()


def synthetic(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def pruned_model(name: str, sparsity: float):
    model = build_model(MODELS[name].params(), (1, 28, 28), 10, seed=0)
    weights = dict(model.named_parameters())
    mask = magnitude_mask(
        weights, full_mask(weights, prunable_names(weights)), sparsity, scope="layerwise"
    )
    apply_mask_(weights, mask)
    return model, mask


def test_pruned_weights_stay_exactly_zero_during_training():
    x, y = synthetic()
    for name in ("mlp", "lenet5", "cnn"):
        model, mask = pruned_model(name, 0.7)
        cfg = ClientConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-3, prox_mu=0.1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        local_train(
            model,
            mask,
            x=x[:64],
            y=y[:64],
            cfg=cfg,
            generator=torch.Generator().manual_seed(0),
            task=TASK,
        )
        for param_name, param in model.named_parameters():
            if param_name in mask:
                assert (param[~mask[param_name]] == 0).all(), f"{name}.{param_name} revived"
                assert not torch.equal(
                    param[mask[param_name]], before[param_name][mask[param_name]]
                )


def test_training_lowers_loss_and_is_seeded():
    x, y = synthetic()
    results = []
    for _ in range(2):
        model, mask = pruned_model("mlp", 0.5)
        start = evaluate(model, x, y, batch_size=128, task=TASK).loss
        cfg = ClientConfig(epochs=5, lr=0.05)
        local_train(
            model, mask, x=x, y=y, cfg=cfg, generator=torch.Generator().manual_seed(3), task=TASK
        )
        results.append(evaluate(model, x, y, batch_size=128, task=TASK).loss)
        assert results[-1] < start
    assert results[0] == results[1]


def test_fedprox_pulls_towards_the_global_model():
    x, y = synthetic()
    drift = {}
    for mu in (0.0, 1.0):
        model, mask = pruned_model("mlp", 0.0)
        anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        local_train(
            model,
            mask,
            x=x,
            y=y,
            cfg=ClientConfig(epochs=3, lr=0.05, prox_mu=mu),
            generator=torch.Generator().manual_seed(1),
            task=TASK,
        )
        drift[mu] = sum(
            float((p.detach() - anchor[n]).norm() ** 2) for n, p in model.named_parameters()
        )
    assert drift[1.0] < drift[0.0]


def test_models_have_the_documented_shapes():
    cnn = build_model(MODELS["cnn"].params(), (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in cnn.parameters()) == 1_663_370  # FedAvg paper's CNN
    mlp = build_model(MODELS["mlp"].params(), (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in mlp.parameters()) == 199_210  # FedAvg paper's 2NN
    lenet = build_model(MODELS["lenet5"].params(), (1, 28, 28), 10, seed=0)
    assert lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

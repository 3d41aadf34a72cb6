import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedprune.cli import main
from fedprune.config import ConfigError, ExperimentConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_config_is_valid():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.pruning.schedule.target >= 0.8
    assert cfg.data.dataset == "mnist"


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"client\.learning_rate: unknown key"):
        parse_config({"client": {"learning_rate": 0.1}})


def test_bad_choice_names_field_and_allowed_values():
    with pytest.raises(ConfigError) as error:
        parse_config({"pruning": {"scope": "everywhere"}})
    message = str(error.value)
    assert "pruning.scope" in message
    assert "'global'" in message and "'layerwise'" in message


def test_out_of_range_sparsity_names_field():
    with pytest.raises(ConfigError, match=r"pruning\.schedule\.target"):
        parse_config({"pruning": {"schedule": {"kind": "oneshot", "target": 1.5}}})


def test_sampling_count_cannot_exceed_clients():
    with pytest.raises(ConfigError, match="sampling.count"):
        parse_config({"data": {"num_clients": 5}, "sampling": {"count": 6}})


def test_client_placement_requires_mask_aware_aggregation():
    with pytest.raises(ConfigError, match="mask-aware"):
        parse_config({"pruning": {"placement": "client"}, "aggregation": {"method": "fedavg"}})


def test_unknown_method_lists_the_methods():
    with pytest.raises(ConfigError) as error:
        parse_config({"pruning": {"method": "snip"}})
    message = str(error.value)
    assert "pruning.method" in message
    assert all(f"'{m}'" in message for m in ("magnitude", "structured", "feddst", "prunefl"))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"pruning": {"method": "structured", "placement": "client"}}, "pruning.placement"),
        ({"pruning": {"method": "feddst"}, "client": {"vectorize": True}}, "client.vectorize"),
        ({"pruning": {"method": "prunefl"}, "aggregation": {"method": "fedavg"}}, "mask-aware"),
        ({"pruning": {"method": "prunefl", "initial_client": 10}}, "initial_client"),
        (
            {"pruning": {"personal": True}},
            "pruning.personal: unknown key (for method 'magnitude', the default: set `method`)",
        ),
        (
            {"pruning": {"method": "lottery", "personal": True}, "client": {"vectorize": True}},
            "client.vectorize",
        ),
        (
            {
                "pruning": {"method": "lottery", "personal": True},
                "aggregation": {"method": "fedavg"},
            },
            "aggregation.method must be mask-aware",
        ),
        (
            {"pruning": {"method": "lottery", "validation_share": 1.0}},
            "pruning.validation_share",
        ),
        ({"pruning": {"schedule": {"target": 0.9}}}, "pruning.schedule.target: unknown key"),
        (
            {
                "rounds": 10,
                "pruning": {"schedule": {"kind": "gradual", "target": 0.9, "end_round": 12}},
            },
            "reaches 89% by round 10, the last, not its target 90% (it gets there after round 12)",
        ),
        (
            {
                "rounds": 10,
                "pruning": {"schedule": {"kind": "oneshot", "target": 0.9, "at_round": 11}},
            },
            "(oneshot) reaches 0% by round 10",
        ),
    ],
)
def test_method_combinations_that_cannot_work_are_refused(raw, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        parse_config(raw)


def test_clients_per_round():
    assert (
        parse_config(
            {"data": {"num_clients": 20}, "sampling": {"fraction": 0.25}}
        ).clients_per_round()
        == 5
    )
    assert (
        parse_config({"data": {"num_clients": 20}, "sampling": {"count": 3}}).clients_per_round()
        == 3
    )
    assert parse_config({"data": {"num_clients": 20}}).clients_per_round() == 20


def test_validate_command_reports_errors_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 0\nmodel:\n  name: resnet\n")
    assert main(["validate", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "rounds" in out and "model.name" in out and "'mlp'" in out


def test_validate_command_accepts_quickstart(capsys):
    assert main(["validate", str(ROOT / "configs" / "quickstart.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_missing_config_file_is_clear():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _settings(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every dotted key a config may set, through every registered entry's settings."""
    for name, field in model.model_fields.items():
        nested = typing.get_origin(field.annotation) not in (dict, list)
        models = _models_in(field.annotation) if nested else []
        if not models:
            yield f"{prefix}{name}"
        for inner in models:
            yield from _settings(inner, f"{prefix}{name}.")


def test_docs_config_md_documents_every_setting_and_no_other():
    """docs/config.md is checked against the schema: a row's first cell names keys in
    backticks, later ones relative to the first's section (`a.b.c`, `d` → `a.b.d`)."""
    documented = set()
    for row in Path("docs/config.md").read_text().splitlines():
        if row.startswith("| `"):
            names = re.findall(r"`([^`]+)`", row.split("|")[1])
            section = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
            documented |= {n if "." in n or n == names[0] else section + n for n in names}
    schema = set(_settings(ExperimentConfig))
    assert sorted(schema - documented) == [], "settings missing from docs/config.md"
    assert sorted(documented - schema) == [], "docs/config.md rows of no setting"

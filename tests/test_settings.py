"""Tests for streams.settings: the typed settings object read from environment variables."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from model.config import ModelConfig
from streams.records import EVENT_TYPES
from streams.settings import PREFIX, Settings, SettingsError

README = Path(__file__).resolve().parents[1] / "README.md"


def env_of(name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == name)


# ---- defaults --------------------------------------------------------------------------


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.input_topic == "interactions"
    assert s.window_size == 2048
    assert s.flush_seconds == 5.0
    assert s.exclude_purchased is False
    assert s.use_generator is True
    assert s.aggregator == "attn"
    assert s.device == "auto"
    assert s.data_dir == Path(".mbnmrn")
    assert s.checkpoint_dir == Path(".mbnmrn") / "checkpoint"
    assert s.train_event_types == EVENT_TYPES


def test_unrelated_environment_variables_are_ignored() -> None:
    s = Settings.from_env({"PATH": "/usr/bin", "HOME": "/root", "MBNMRNX": "1", "KAFKA_X": "y"})
    assert s == Settings()


def test_every_setting_reads_an_environment_variable() -> None:
    envs = [f.metadata["env"] for f in fields(Settings)]
    assert len(set(envs)) == len(envs)
    assert all(e.startswith((PREFIX, "KAFKA_")) for e in envs)
    assert all(f.metadata["help"] for f in fields(Settings))


# ---- parsing each type -----------------------------------------------------------------


def test_each_type_parsed_from_strings() -> None:
    s = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "broker-a:9092,broker-b:9092",
        "MBNMRN_INPUT_TOPIC": " orders ",
        "MBNMRN_WINDOW_SIZE": " 512 ",
        "MBNMRN_FLUSH_SECONDS": "0.25",
        "MBNMRN_LR": "3e-4",
        "MBNMRN_EXCLUDE_PURCHASED": "true",
        "MBNMRN_GENERATOR": "off",
        "MBNMRN_DATA_DIR": "/var/lib/mbnmrn",
        "MBNMRN_AGGREGATOR": "CONV",
        "MBNMRN_DEVICE": "Cpu",
        "MBNMRN_LOG_LEVEL": " WARNING ",
        "MBNMRN_EVENT_TYPES": "purchase, Cart",
    })
    assert s.kafka_bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert s.input_topic == "orders"
    assert s.window_size == 512 and type(s.window_size) is int
    assert s.flush_seconds == 0.25 and type(s.flush_seconds) is float
    assert s.lr == 3e-4
    assert s.exclude_purchased is True
    assert s.use_generator is False
    assert s.data_dir == Path("/var/lib/mbnmrn") and isinstance(s.data_dir, Path)
    assert s.checkpoint_dir == Path("/var/lib/mbnmrn/checkpoint")
    assert s.aggregator == "conv"
    assert s.device == "cpu"
    assert s.log_level == "warning"
    assert s.train_event_types == frozenset({"purchase", "cart"})


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "On", " true "])
def test_bool_true_forms(text: str) -> None:
    assert Settings.from_env({"MBNMRN_EXCLUDE_PURCHASED": text}).exclude_purchased is True


@pytest.mark.parametrize("text", ["0", "false", "False", "no", "OFF"])
def test_bool_false_forms(text: str) -> None:
    assert Settings.from_env({"MBNMRN_GENERATOR": text}).use_generator is False


def test_an_integral_float_setting_accepts_an_integer_string() -> None:
    assert Settings.from_env({"MBNMRN_MARGIN": "3"}).margin == 3.0


# ---- bad values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("MBNMRN_WINDOW_SIZE", "abc"),
        ("MBNMRN_WINDOW_SIZE", "2.5"),
        ("MBNMRN_WINDOW_SIZE", "0"),
        ("MBNMRN_WINDOW_SIZE", ""),
        ("MBNMRN_FLUSH_SECONDS", "0"),
        ("MBNMRN_FLUSH_SECONDS", "-1"),
        ("MBNMRN_FLUSH_SECONDS", "soon"),
        ("MBNMRN_LR", "nan"),
        ("MBNMRN_LR", "inf"),
        ("MBNMRN_AGGREGATOR", "gru"),
        ("MBNMRN_DEVICE", "tpu"),
        ("MBNMRN_LOG_LEVEL", "verbose"),
        ("MBNMRN_EVENT_TYPES", "purchase,refund"),
        ("MBNMRN_EVENT_TYPES", " , "),
        ("MBNMRN_EXCLUDE_PURCHASED", "maybe"),
        ("MBNMRN_DATA_DIR", "  "),
        ("MBNMRN_INPUT_TOPIC", ""),
        ("MBNMRN_EVAL_CANDIDATES", "1"),
        ("MBNMRN_CHECKPOINT_KEEP", "0"),
        ("MBNMRN_INPUT_PARTITIONS", "-2"),
    ],
)
def test_bad_value_names_the_environment_variable(env: str, value: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({env: value})
    assert env in str(excinfo.value)


def test_bad_choice_lists_the_choices() -> None:
    with pytest.raises(SettingsError, match="attn, conv"):
        Settings.from_env({"MBNMRN_AGGREGATOR": "gru"})


def test_bad_event_type_lists_the_known_ones() -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({"MBNMRN_EVENT_TYPES": "purchase,refund"})
    assert "purchase,refund" in str(excinfo.value)
    assert all(t in str(excinfo.value) for t in EVENT_TYPES)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_bad_override_names_the_environment_variable_too() -> None:
    with pytest.raises(SettingsError, match="MBNMRN_TOP_K"):
        Settings.from_env({}, top_k=0)


# ---- unknown variables and overrides ----------------------------------------------------


def test_unknown_mbnmrn_variable_is_an_error_listing_it() -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({"MBNMRN_WINDOWSIZE": "64", "MBNMRN_WINDOW_SIZE": "64",
                           "MBNMRN_TOPK": "5"})
    message = str(excinfo.value)
    assert "MBNMRN_WINDOWSIZE" in message and "MBNMRN_TOPK" in message
    assert "MBNMRN_WINDOW_SIZE" in message  # the known names help to spot the typo


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env(
        {"MBNMRN_WINDOW_SIZE": "64", "MBNMRN_TOP_K": "7"}, window_size=128, device="cpu"
    )
    assert s.window_size == 128
    assert s.top_k == 7
    assert s.device == "cpu"


def test_override_wins_over_an_unparseable_environment_value() -> None:
    assert Settings.from_env({"MBNMRN_WINDOW_SIZE": "abc"}, window_size=8).window_size == 8


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MBNMRN_TOP_K", "3")
    assert Settings.from_env().top_k == 3


# ---- derived objects -------------------------------------------------------------------


def test_model_config_maps_the_fields() -> None:
    s = Settings.from_env({
        "MBNMRN_DIM": "16", "MBNMRN_SLOTS": "8", "MBNMRN_CANDIDATES": "20",
        "MBNMRN_MARGIN": "2.5", "MBNMRN_WINDOW_SIZE": "64", "MBNMRN_LR": "0.01",
        "MBNMRN_AGGREGATOR": "conv", "MBNMRN_GENERATOR": "false",
        "MBNMRN_REWARD_BASELINE": "true", "MBNMRN_USER_RESIDUAL": "false",
        "MBNMRN_READ_TEMPERATURE": "0.5", "MBNMRN_STEPS_PER_WINDOW": "3",
        "MBNMRN_LAZY_ADAM": "false",
    })
    assert s.model_config() == ModelConfig(
        dim=16, slots=8, candidates=20, margin=2.5, window=64, lr=0.01,
        aggregator="conv", use_generator=False, reward_baseline=True, user_residual=False,
        read_temperature=0.5, steps_per_window=3, lazy_adam=False,
    )


def test_model_config_of_the_defaults_is_the_paper_config_but_for_the_measured_read() -> None:
    # The stream job's defaults read the memory as measured best (bench/stream_quality.py):
    # a user residual and a sharp read temperature; and lazy Adam, measured better and far
    # cheaper with a 3x learning rate. Everything else is the paper's.
    assert Settings().model_config() == ModelConfig(user_residual=True, read_temperature=0.01,
                                                    lazy_adam=True, lr=3e-3)
    paper = Settings(user_residual=False, read_temperature=1.0, lazy_adam=False,
                     lr=1e-3).model_config()
    assert paper == ModelConfig()


def test_torch_device_cpu_and_auto() -> None:
    import torch

    assert Settings(device="cpu").torch_device() == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Settings().torch_device() == expected


# ---- documentation ---------------------------------------------------------------------


def test_documentation_has_one_row_per_field() -> None:
    rows = Settings.documentation()
    assert [env for env, _, _ in rows] == [f.metadata["env"] for f in fields(Settings)]
    docs = {env: (default, help) for env, default, help in rows}
    assert docs["MBNMRN_WINDOW_SIZE"] == ("2048", "H: interactions per window")
    assert docs["MBNMRN_GENERATOR"][0] == "true"
    assert docs["MBNMRN_EXCLUDE_PURCHASED"][0] == "false"
    assert docs["MBNMRN_DATA_DIR"][0] == ".mbnmrn"
    assert docs["MBNMRN_AGGREGATOR"] == ("attn", "market aggregator (attn or conv)")


def test_documented_defaults_parse_back_to_the_defaults() -> None:
    environ = {env: default for env, default, _ in Settings.documentation()}
    assert Settings.from_env(environ) == Settings()


def test_readme_mentions_every_environment_variable() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [env for env, _, _ in Settings.documentation() if env not in text]
    assert missing == []


def test_project_variables_outside_the_settings_are_not_typos():
    env = {"MBNMRN_SHARED_DATA": "/data", "MBNMRN_TEST_BOOTSTRAP": "localhost:9092"}
    assert Settings.from_env(env) == Settings()

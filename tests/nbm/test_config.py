"""The typed configuration: defaults, nbm.toml, NBM_HOME, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pydantic
import pytest

from nbm.config import DEFAULT_CHANNELS, NbmConfig, load_config
from nbm.errors import UsageError


def test_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.home == Path(".nbm")
    assert config.channels == DEFAULT_CHANNELS
    assert config.mlflow_tracking_uri == "sqlite:///.nbm/mlflow.db"
    assert config.state_url == "sqlite:///.nbm/state.db"
    assert config.attribution.open_click_hours == 72 and config.attribution.convert_days == 7


def test_nbm_toml_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nbm.toml").write_text('channels = ["email", "sms"]\n[contact_policy]\nweekly_cap_total = 2\n')
    config = load_config(environ={})
    assert config.channels == ("email", "sms")
    assert config.contact_policy.weekly_cap_total == 2
    assert config.contact_policy.daily_cap_per_channel == 1  # untouched keys keep their defaults


def test_nbm_home_overrides_home_and_moves_the_derived_urls(tmp_path: Path) -> None:
    config = load_config(environ={"NBM_HOME": str(tmp_path / "h")})
    assert config.home == tmp_path / "h"
    assert config.mlflow_tracking_uri == f"sqlite:///{tmp_path}/h/mlflow.db"
    assert config.state_url == f"sqlite:///{tmp_path}/h/state.db"


def test_explicit_urls_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('mlflow_tracking_uri = "http://127.0.0.1:5000"\nstate_url = "redis://127.0.0.1:6379/0"\n')
    config = load_config(path, environ={})
    assert config.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert config.state_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[contact_policy]\nweekly_cap = 3\n", "`contact_policy.weekly_cap`"),
        ("[attribution]\nopen_click_hours = -1\n", "`attribution.open_click_hours`"),
        ('channels = ["email", "email"]\n', "`channels`"),
        ("[lifecycle]\nat_risk_after_days = 90\n", "`dormant_after_days`"),
        ('[lifecycle]\nactivity_events = ["send"]\n', "`lifecycle.activity_events.0`"),
        ("[lifecycle]\nactivity_events = []\n", "`lifecycle.activity_events`"),
        ("[lifecycle]\nloyal_min_conversions = -1\n", "`lifecycle.loyal_min_conversions`"),
        ('log_level = "LOUD"\n', "`log_level`"),
        ('state_url = "postgres://db/state"\n', "`state_url`"),
        ("channels = [\n", "not valid TOML"),
    ],
)
def test_bad_configuration_is_a_usage_error_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "nbm.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=fragment.replace("`", "`").replace(".", r"\.")):
        load_config(path, environ={})


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(UsageError, match="does not exist"):
        load_config(environ={"NBM_CONFIG": str(tmp_path / "missing.toml")})


def test_configuration_is_frozen_and_round_trips_through_toml() -> None:
    config = load_config(environ={})
    with pytest.raises(pydantic.ValidationError):
        config.channels = ("email",)  # type: ignore[misc]
    import tomli_w

    again = NbmConfig.model_validate(tomllib.loads(tomli_w.dumps(config.to_toml_dict())))
    assert again == config


# -- NBM_… environment overrides ------------------------------------------------------------------


def test_environment_variables_override_any_key_over_the_file(tmp_path) -> None:
    file = tmp_path / "nbm.toml"
    file.write_text('state_url = "sqlite:///from-file.db"\n[contact_policy]\ndaily_cap_per_channel = 5\n'
                    'weekly_cap_total = 9\n')
    env = {"NBM_STATE_URL": "redis://cache:6379/0", "NBM_CONTACT_POLICY__DAILY_CAP_PER_CHANNEL": "2",
           "nbm_features__slot_hours": "[9, 18]", "NBM_CHANNELS": '["email", "sms"]',
           "NBM_DATA": "/srv/data", "NBM_WORKERS": "4", "OTHER": "x",          # the service's own: not configuration
           "NBM_EXPLORER": "epsilon_greedy", "NBM_EXPLORER__EPSILON": "0.25"}  # a section only key by key
    config = load_config(file, environ=env)
    assert config.state_url == "redis://cache:6379/0"
    assert config.contact_policy.daily_cap_per_channel == 2
    assert config.contact_policy.weekly_cap_total == 9                    # the file's keys beside it stay
    assert config.features.slot_hours == (9, 18)
    assert config.channels == ("email", "sms")
    assert config.explorer.epsilon == 0.25
    assert config.explorer.epsilon == 0.25
    assert load_config(file, environ={}).contact_policy.daily_cap_per_channel == 5


@pytest.mark.parametrize("name, value, named", [
    ("NBM_CONTACT_POLICY__DAILY_CAP_PER_CHANNEL", "lots", "contact_policy.daily_cap_per_channel"),
    ("NBM_CONTACT_POLICY__DAILY_CAPS", "1", "contact_policy.daily_caps"),
    ("NBM_STATE_URL", "postgres://db", "state_url"),
])
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable_and_key(name, value, named) -> None:
    with pytest.raises(UsageError) as caught:
        load_config(environ={name: value})
    assert name in str(caught.value) and f"`{named}`" in str(caught.value)

import math

import pytest

from spti.config import Config
from spti.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    c = Config()
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    assert Config.from_yaml(p) == c


def test_unknown_keys_are_errors_not_silently_ignored():
    with pytest.raises(ConfigError, match="privacy.epsilom"):
        Config.from_dict({"privacy": {"epsilom": 1}})
    with pytest.raises(ConfigError, match="unknown"):
        Config.from_dict({"iterations": 3})


@pytest.mark.parametrize(
    "d,match",
    [
        ({"pe": {"iterations": 0}}, "iterations"),
        ({"pe": {"iterations": 2.5}}, "integer"),
        ({"pe": {"selection": "best"}}, "selection"),
        ({"pe": {"voting": "audio"}}, "voting"),
        ({"pe": {"threshold": -1}}, "threshold"),
        ({"generation": {"mask_prob": 1.5}}, "mask_prob"),
        ({"generation": {"domain": "  "}}, "domain"),
        ({"privacy": {"unit": "user"}}, "user_column"),
        ({"privacy": {"epsilon": 1, "sigma": 3}}, "exactly one"),
        ({"privacy": {"epsilon": "one"}}, "number"),
        ({"pe": {"keep_selected": "yes"}}, "true/false"),
        ({"llm": {"model": "x"}}, "backend"),
    ],
)
def test_invalid_values_name_the_key(d, match):
    d.setdefault("data", {})["private"] = "x"
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(d).validate()


def test_private_data_is_required_when_running():
    with pytest.raises(ConfigError, match="data.private"):
        Config().validate()


def test_merged_applies_dotted_overrides_and_skips_none():
    c = Config().merged({"pe.iterations": 3, "privacy.epsilon": None, "generation.domain": "a bedroom"})
    assert c.pe.iterations == 3 and c.privacy.epsilon == 1.0 and c.generation.domain == "a bedroom"
    assert Config.from_dict({"privacy": {"epsilon": "inf"}}).privacy.epsilon == math.inf

import pytest

from ingestion_factory.errors import ConfigError
from ingestion_factory.model.graph import parents_first

FOREST = {"base": None, "base-datahub": None, "a": "base", "b": "a", "c": "base", "d": "base-datahub"}


def test_everything_parents_first_in_a_stable_order():
    assert parents_first(FOREST) == ["base", "base-datahub", "a", "c", "d", "b"]


def test_named_images_bring_their_ancestors_once():
    assert parents_first(FOREST, ["b", "a", "b"]) == ["base", "a", "b"]
    assert parents_first(FOREST, ["d"]) == ["base-datahub", "d"]
    assert parents_first(FOREST, []) == []


def test_a_cycle_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        parents_first({"a": "b", "b": "a"}, ["a"])
    with pytest.raises(ConfigError, match="cycle: x -> x"):
        parents_first({"x": "x"})

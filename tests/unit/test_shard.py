"""Shard maths and the CI matrix, without Docker."""

import random

import pytest
from project_tree import add_connector

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.model.shard import Shard, matrix, parse_count, parse_shard, select, shard_of

NAMES = [f"connector-{i}" for i in range(200)]


@pytest.mark.parametrize("text, shard", [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 3 / 3 ", Shard(3, 3))])
def test_good_shards_parse(text, shard):
    assert parse_shard(text) == shard
    assert str(shard) == text.replace(" ", "")


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "-1/3", "1/", "/3", "1.5/3", "1/257", ""])
def test_bad_shards_are_exit_2(text):
    with pytest.raises(ConfigError) as refused:
        parse_shard(text)
    assert refused.value.exit_code == 2 and "--shard" in refused.value.message


def test_shards_cover_every_name_once():
    for count in (1, 2, 3, 7):
        parts = [select(NAMES, Shard(k, count)) for k in range(1, count + 1)]
        flat = [name for part in parts for name in part]
        assert sorted(flat) == sorted(NAMES)


def test_a_names_shard_does_not_depend_on_the_other_names():
    before = {name: shard_of(name, 4) for name in NAMES}
    more = NAMES + [f"new-{i}" for i in range(50)]
    random.Random(1).shuffle(more)
    assert {name: shard_of(name, 4) for name in more if name in before} == before


def test_shares_are_roughly_even():
    sizes = [len(select(NAMES, Shard(k, 4))) for k in range(1, 5)]
    assert min(sizes) >= 30 and max(sizes) <= 70  # 50 each on average


def test_the_shard_is_the_same_everywhere():
    # sha256-based, not Python's salted hash(): fixed values keep CI fan-out stable across runners.
    assert [shard_of(name, 3) for name in ("datahub-sqlite", "mysql", "postgres")] == [2, 1, 3]


@pytest.mark.parametrize("text", ["0", "x", "257"])
def test_bad_matrix_counts_are_exit_2(text):
    with pytest.raises(ConfigError):
        parse_count(text)


def test_the_matrix_lists_stages_parents_first_and_each_shard(project):
    add_connector(project, "a")
    add_connector(project, "b")
    add_connector(project, "child", "x\n", 'parent = "a"\n')
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    result = matrix(found, ["a", "b", "child"], 2)
    assert result["stages"] == [["base"], ["a", "b"], ["child"]]
    assert result["bases"] == ["base"]
    assert result["shards"] == ["1/2", "2/2"]
    assert sorted(n for entry in result["include"] for n in entry["connectors"]) == ["a", "b", "child"]

"""The Python image carries the recipe it was built from; an image this tool built from another is rebuilt."""

import pytest
from fake_engine import FakeEngine

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import python_image
from ingestion_factory.model.plan import ImageInfo

IMAGE_ID = "sha256:" + "1" * 64


@pytest.fixture
def settings(project):
    return settings_mod.load(settings_mod.pyproject_defaults(project), project)


def built_here(settings, recipe=None):
    return {python_image.LABEL_BUILT_BY: f"debootstrap-{settings.debian_suite}",
            **({python_image.LABEL_RECIPE: recipe} if recipe else {})}


def test_an_image_from_this_recipe_is_kept(settings):
    labels = built_here(settings, python_image.recipe(settings))
    assert python_image.stale_reason(labels, settings) is None
    assert python_image.status(settings, store=FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, labels, 1)})) == "ok"


def test_an_image_from_an_earlier_recipe_or_without_one_is_stale(settings):
    for labels in (built_here(settings), built_here(settings, "0" * 16)):
        assert "earlier recipe" in python_image.stale_reason(labels, settings)
        store = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, labels, 1)})
        assert python_image.status(settings, store=store).startswith("stale: ")


def test_an_image_this_tool_did_not_build_is_never_replaced(settings):
    assert python_image.stale_reason({}, settings) is None
    assert python_image.stale_reason({"org.opencontainers.image.title": "python"}, settings) is None


def test_a_missing_image_is_missing(settings):
    assert python_image.status(settings, store=FakeEngine.holding({})) == "missing"


def test_the_recipe_follows_the_package_list(settings, monkeypatch):
    before = python_image.recipe(settings)
    monkeypatch.setattr(python_image, "PACKAGES", (*python_image.PACKAGES, "python3-pip"))
    assert python_image.recipe(settings) != before


def test_refresh_rebuilds_an_image_from_an_earlier_recipe_without_asking_the_archive(settings):
    store = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, built_here(settings, "0" * 16), 1)})
    rebuilt, lines = [], []

    def rebuild(settings, **kwargs):
        rebuilt.append(kwargs)
        return "sha256:new"

    def no_archive_query(api, image):
        raise AssertionError("the archive is not needed to know the image is stale")

    assert python_image.refresh_all(settings, archive=object(), store=store, installed=no_archive_query,
                                    rebuild=rebuild, echo=lines.append) == ["sha256:new"]
    assert rebuilt[0]["force"] is True and "earlier recipe" in lines[-1]


def test_refresh_without_an_echo_prints_nothing(settings, capsys):
    store = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, built_here(settings, "0" * 16), 1)})

    def rebuild(settings, **kwargs):
        kwargs["echo"]("said through the echo it was given")
        return "sha256:new"

    assert python_image.refresh_all(settings, archive=object(), store=store, rebuild=rebuild) == ["sha256:new"]
    assert capsys.readouterr() == ("", "")

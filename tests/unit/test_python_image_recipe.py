"""The Python image carries the recipe it was built from; an image this tool built from another is rebuilt."""

import pytest
from fake_engine import FakeEngine

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import python_image
from ingestion_factory.files import write_atomically
from ingestion_factory.model.debian_lock import DebianLock, LockedPackage, PackageSet
from ingestion_factory.model.plan import ImageInfo

IMAGE_ID = "sha256:" + "1" * 64
LOCKED = PackageSet("amd64", 1796525669, (LockedPackage("dpkg", "1.21.22", "amd64", "bookworm", "0" * 64),))


@pytest.fixture
def settings(project):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    write_atomically(python_image.lock_path(settings),
                     DebianLock(python_image.lock_inputs(settings), (LOCKED,)).render())
    return settings


def built_here(settings, recipe=None, package_set=LOCKED):
    return {python_image.LABEL_BUILT_BY: f"mmdebstrap-{settings.debian_suite}",
            **({python_image.LABEL_RECIPE: recipe} if recipe else {}),
            **({python_image.LABEL_DEBIAN_LOCK: package_set.digest} if package_set else {})}


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


def test_an_image_of_another_locked_set_is_stale(settings):
    other = PackageSet("amd64", 1796525669, (LockedPackage("dpkg", "1.21.23", "amd64", "bookworm", "0" * 64),))
    labels = built_here(settings, python_image.recipe(settings), other)
    assert "other packages than images/python/debian.lock holds for amd64" in python_image.stale_reason(
        labels, settings, LOCKED)
    store = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, labels, 1)})
    assert python_image.status(settings, store=store).startswith("stale: it was built from other packages")


def test_without_a_lock_an_image_built_here_is_stale_and_a_pulled_one_is_kept(settings):
    python_image.lock_path(settings).unlink()
    labels = built_here(settings, python_image.recipe(settings))
    store = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, labels, 1)})
    assert python_image.status(settings, store=store) == "stale: images/python/debian.lock is missing: " \
                                                         "the Python image's Debian packages are not locked"
    pulled = FakeEngine.holding({settings.python_image: ImageInfo(IMAGE_ID, {}, 1)})
    assert python_image.status(settings, store=pulled) == "ok"

"""The catalog table in docs/catalog.md lists exactly the catalog, per framework and version (rewritten by
`inv catalog`)."""

import json

from conftest import REPO
from testkit import OM_OTHER_VERSIONS, OM_VERSION, OM_VERSIONS

from ingestion_factory import settings as settings_mod
from ingestion_factory.model import catalog, catalog_table


def repo_catalogs():
    """The repository's catalog for each supported framework version (the defaults first), as `inv catalog`
    writes the table from."""
    settings = settings_mod.load(settings_mod.pyproject_defaults(REPO), REPO)
    return [catalog.discover(view) for view, _ in settings_mod.version_views(settings)]


def test_the_catalog_table_is_current():
    catalogs = repo_catalogs()
    page = (REPO / catalog_table.PAGE).read_text()
    assert catalog_table.is_current(page, catalogs), f"run `inv catalog` to refresh the table in {catalog_table.PAGE}"
    cells = catalog_table.previous(page)
    # A cell per connector and version of its framework.
    assert set(cells) == {(spec.name, spec.version) for found in catalogs for spec in found.connectors}
    assert {version for name, version in cells if name == "mysql"} == set(OM_VERSIONS)
    for found in catalogs:
        for spec in found.connectors:
            if spec.unavailable:
                assert cells[(spec.name, spec.version)] == f"unavailable: {spec.unavailable}"


def test_table_takes_sizes_and_status_from_a_build_report(tmp_path):
    catalogs = repo_catalogs()
    other = OM_OTHER_VERSIONS[0]
    report = tmp_path / "build-latest.json"

    def image(name, version, result, size):
        return {"name": name, "ref": f"openmetadata/ingestion-connector-{name}:{version}", "result": result,
                "size": size}

    report.write_text(json.dumps({"images": [
        image("base", OM_VERSION, "up to date", 1000000), image("mysql", OM_VERSION, "built", 3500000),
        image("postgres", OM_VERSION, "failed", 0),
        image("base", other, "built", 2000000), image("mysql", other, "up to date", 5000000)]}))
    cells = catalog_table.measured(report, catalogs)
    assert cells[("mysql", OM_VERSION)] == "2.5 MB, verified"
    assert cells[("postgres", OM_VERSION)] == "failed in the last build"
    assert cells[("mysql", other)] == "3.0 MB, verified"  # over that version's base
    table = catalog_table.render(catalogs, cells)
    [row] = [line for line in table.splitlines() if line.startswith("| `mysql` |")]
    assert row.startswith("| `mysql` | mysql | ")
    values = dict(zip(OM_VERSIONS, row.strip("| ").split(" | ")[2:], strict=True))
    assert values[OM_VERSION] == "2.5 MB, verified" and values[other] == "3.0 MB, verified"
    assert all(values[v] == catalog_table.NOT_BUILT or values[v].startswith("unavailable: ")
               for v in OM_OTHER_VERSIONS if v != other)  # the page keeps no cell the report does not give


def test_inv_catalog_rewrites_only_the_table_of_the_page(tmp_path):
    catalogs = repo_catalogs()
    page = tmp_path / "catalog.md"
    page.write_text(f"# The catalog\n\ntext before\n\n{catalog_table.START}\n| stale |\n{catalog_table.END}\n\ntext after\n")
    assert catalog_table.update_page(page, catalogs, tmp_path / "no-report.json")
    text = page.read_text()
    assert catalog_table.is_current(text, catalogs)
    assert text.startswith("# The catalog\n\ntext before\n") and text.endswith("\n\ntext after\n")
    assert not catalog_table.update_page(page, catalogs, tmp_path / "no-report.json")  # current: unchanged

"""The catalog table in docs/catalog.md lists exactly the catalog (rewritten by `inv catalog`)."""

from conftest import REPO
from ingestion_factory import settings as settings_mod
from ingestion_factory.model import catalog, catalog_table


def repo_catalog():
    return catalog.discover(settings_mod.load(settings_mod.pyproject_defaults(REPO), REPO))


def test_the_catalog_table_is_current():
    found = repo_catalog()
    page = (REPO / catalog_table.PAGE).read_text()
    assert catalog_table.is_current(page, found), f"run `inv catalog` to refresh the table in {catalog_table.PAGE}"
    rows = catalog_table.previous(page)
    assert set(rows) == {spec.name for spec in found.connectors}
    for spec in found.connectors:
        if spec.unavailable:
            assert rows[spec.name][1] == f"unavailable: {spec.unavailable}"


def test_table_takes_sizes_and_status_from_a_build_report(tmp_path):
    found = repo_catalog()
    report = tmp_path / "build-latest.json"
    report.write_text('{"images": [{"name": "base", "result": "up to date", "size": 1000000},'
                      ' {"name": "mysql", "result": "built", "size": 3500000},'
                      ' {"name": "postgres", "result": "failed", "size": 0}]}')
    cells = catalog_table.measured(report, found)
    assert cells["mysql"] == ("2.5 MB", "verified")
    assert cells["postgres"][1] == "failed in the last build"
    table = catalog_table.render(found, cells)
    assert "| `mysql` | openmetadata | mysql | 2.5 MB | verified |" in table


def test_inv_catalog_rewrites_only_the_table_of_the_page(tmp_path):
    found = repo_catalog()
    page = tmp_path / "catalog.md"
    page.write_text(f"# The catalog\n\ntext before\n\n{catalog_table.START}\n| stale |\n{catalog_table.END}\n\ntext after\n")
    assert catalog_table.update_page(page, found, tmp_path / "no-report.json")
    text = page.read_text()
    assert catalog_table.is_current(text, found)
    assert text.startswith("# The catalog\n\ntext before\n") and text.endswith("\n\ntext after\n")
    assert not catalog_table.update_page(page, found, tmp_path / "no-report.json")  # current: unchanged

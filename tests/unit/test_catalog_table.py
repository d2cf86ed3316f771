"""The README's catalog table lists exactly the catalog (rewritten by `inv catalog`)."""

from conftest import REPO
from ingestion_factory import settings as settings_mod
from ingestion_factory.model import catalog, catalog_table


def repo_catalog():
    return catalog.discover(settings_mod.load(settings_mod.pyproject_defaults(REPO), REPO))


def test_readme_catalog_table_is_current():
    found = repo_catalog()
    readme = (REPO / "README.md").read_text()
    assert catalog_table.is_current(readme, found), "run `inv catalog` to refresh the README's catalog table"
    rows = catalog_table.previous(readme)
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

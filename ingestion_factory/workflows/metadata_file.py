"""What a DataHub `file` sink wrote: datasets by kind, columns, records.

The file is a JSON list of metadata change events in two shapes: proposals
(`entityUrn` + `aspectName` + `aspect.json`) and snapshots
(`proposedSnapshot` holding a list of aspects keyed by their class).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FactoryError

DATASET_URN_PREFIX = "urn:li:dataset:("


@dataclass
class Dataset:
    urn: str
    kinds: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        """urn:li:dataset:(urn:li:dataPlatform:sqlite,main.orders,PROD) -> main.orders"""
        inner = self.urn[len(DATASET_URN_PREFIX):-1] if self.urn.startswith(DATASET_URN_PREFIX) else self.urn
        parts = inner.split(",")
        return parts[1] if len(parts) >= 3 else inner


@dataclass
class MetadataSummary:
    path: Path
    records: int
    datasets: dict[str, Dataset]
    aspects: Counter

    def names(self, kind: str) -> list[str]:
        return sorted(d.name for d in self.datasets.values() if kind in d.kinds)

    @property
    def tables(self) -> list[str]:
        return self.names("Table")

    @property
    def views(self) -> list[str]:
        return self.names("View")

    @property
    def columns(self) -> int:
        return sum(len(d.columns) for d in self.datasets.values())

    def columns_of(self, name: str) -> list[str]:
        return sorted(next((d.columns for d in self.datasets.values() if d.name == name), set()))

    def describe(self) -> str:
        tables, views = self.tables, self.views
        parts = [_counted(len(tables), "table", tables), _counted(len(views), "view", views),
                 f"{self.columns} columns", f"{self.records} records"]
        return ", ".join(parts)


def _counted(count: int, noun: str, names: list[str]) -> str:
    text = f"{count} {noun}{'' if count == 1 else 's'}"
    return f"{text} ({', '.join(names)})" if names else text


def summarize(path: Path) -> MetadataSummary:
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FactoryError(f"cannot read the metadata file {path}: {exc}") from None
    if not isinstance(records, list):
        raise FactoryError(f"{path} is not a DataHub metadata file (expected a JSON list)")
    datasets: dict[str, Dataset] = {}
    aspects: Counter = Counter()
    for record in records:
        for urn, aspect_name, aspect in _aspects(record):
            aspects[aspect_name] += 1
            if urn.startswith(DATASET_URN_PREFIX):
                _note(datasets.setdefault(urn, Dataset(urn)), aspect_name, aspect)
    return MetadataSummary(path=path, records=len(records), datasets=datasets, aspects=aspects)


def _aspects(record: Any):
    """(urn, aspectName, aspect) for each aspect a record carries, in either shape."""
    if not isinstance(record, dict):
        return
    if "proposedSnapshot" in record:
        for snapshot in record["proposedSnapshot"].values():
            for wrapped in snapshot.get("aspects", []):
                for class_name, aspect in wrapped.items():
                    # com.linkedin.pegasus2avro.schema.SchemaMetadata -> schemaMetadata
                    short = class_name.rsplit(".", 1)[-1]
                    yield snapshot.get("urn", ""), short[:1].lower() + short[1:], aspect
    elif "aspectName" in record:
        aspect = record.get("aspect") or {}
        yield record.get("entityUrn", ""), record["aspectName"], aspect.get("json", aspect)


def _note(dataset: Dataset, aspect_name: str, aspect: Any) -> None:
    if not isinstance(aspect, dict):
        return
    if aspect_name == "subTypes":
        dataset.kinds.update(aspect.get("typeNames", []))
    elif aspect_name == "schemaMetadata":
        dataset.columns.update(f.get("fieldPath", "") for f in aspect.get("fields", []))

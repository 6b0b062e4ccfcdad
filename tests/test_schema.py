"""The documented JSON Schema and the native reader agree."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import EXAMPLES
from test_ingest_recall import BAD_LINES

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "memp_cli/formats/trajectory.schema.json").read_text())


def test_examples_follow_the_schema() -> None:
    rows = [json.loads(line) for f in sorted(EXAMPLES.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(rows) >= 12
    for row in rows:
        jsonschema.validate(row, SCHEMA)
    assert {r["outcome"] for r in rows} == {"success", "failure"}
    assert len({r["metadata"]["env"] for r in rows}) >= 3


@pytest.mark.parametrize("bad,message", [b for b in BAD_LINES if b[0].startswith("{\"")])
def test_schema_rejects_what_the_reader_rejects(bad: str, message: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(bad), SCHEMA)

"""Workflows print to the console they are given (the CLI's, or a quiet one in the bench), never their own."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ingestion_factory"


def test_no_module_below_the_cli_builds_a_console_at_import():
    owners = []
    for layer in ("model", "engine", "workflows"):
        for path in sorted((PACKAGE / layer).glob("*.py")):
            for node in ast.parse(path.read_text()).body:
                value = getattr(node, "value", None)
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Console":
                    owners.append(f"{layer}/{path.name}:{node.lineno}")
    assert owners == []

"""The in-image runtime's modules whose rules the tool shares: what a secret is, how a config is read.

runtime/ is no package: its files are copied flat into every image, where they
import each other by their top-level names. The tool imports them the same way,
from the runtime/ beside this package, so there is one implementation of each
rule. The dependency goes one way only: the runtime never imports the tool.
"""

from __future__ import annotations

import sys
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"

if not (RUNTIME_DIR / "runtime_config.py").is_file():  # pragma: no cover - only an install without the checkout
    raise ImportError(f"the runtime's modules are not at {RUNTIME_DIR}; run the tool from its repository "
                      "(pip install -e .)")
# Appended, not prepended: these names must not shadow anything already importable.
if str(RUNTIME_DIR) not in sys.path:
    sys.path.append(str(RUNTIME_DIR))

import runtime_config  # noqa: E402
import runtime_redaction  # noqa: E402

__all__ = ["RUNTIME_DIR", "runtime_config", "runtime_redaction"]

"""Where the repository, its SIPp scenarios and the README are, and the external tools the tests need."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


SCENARIOS = REPO / "sipp-scenarios"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run the README's test command (bash scripts/test.sh)")
    return path


def readme_block(section: str, index: int = 0) -> str:
    """The *index*-th python code block of README's "### <section>" section (the docs the tests run)."""
    text = (REPO / "README.md").read_text()
    part = text.split(f"### {section}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.S)[index]

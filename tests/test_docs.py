"""The docs that are generated or quoted from code stay in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_cli.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_commands_match_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup = "pip install torch==2.13.0 -e '.[dev]'"
    assert setup in readme and setup in ci
    assert "\npytest\n" in readme and "\npytest\n" in ci


def test_design_doc_names_every_codec() -> None:
    from wvc.codecs import CodecId

    design = (ROOT / "docs" / "design.md").read_text()
    for codec in CodecId:
        name = codec.name.lower().replace("_", "-")
        assert f"| {int(codec)} | `{name}` |" in design

"""Regenerate the command reference in docs/cli.md from the real ``--help`` output.

    python docs/gen_cli.py          # rewrite docs/cli.md
    python docs/gen_cli.py --check  # exit 1 if docs/cli.md is out of date (run by the tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from wvc.cli import cli

DOC = Path(__file__).with_name("cli.md")
BEGIN = "<!-- BEGIN GENERATED: python docs/gen_cli.py -->"
END = "<!-- END GENERATED -->"


def reference() -> str:
    runner = CliRunner()
    parts = []
    for name in sorted(cli.commands):
        out = runner.invoke(cli, [name, "--help"], prog_name="wvc", terminal_width=88).output
        parts.append(f"## wvc {name}\n\n```\n{out.rstrip()}\n```\n")
    return "\n".join(parts)


def render(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def main() -> int:
    current = DOC.read_text()
    new = render(current)
    if "--check" in sys.argv:
        if new != current:
            print("docs/cli.md is out of date: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

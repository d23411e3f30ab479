"""The README's two commands stay true: CI runs command (b) verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_two_commands():
    demo, tests = readme_commands()
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("vessa demo")
    assert "torch==2.14.1 torchvision==0.29.1" in demo and "torch==2.14.1 torchvision==0.29.1" in tests
    assert tests.endswith("python -m pytest")


def test_ci_runs_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_the_command_list_names_every_subcommand():
    import argparse

    from vessa.cli import build_parser

    listing = re.search(r"## Command line\n\n```\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    listed = set(re.findall(r"^vessa ([a-z-]+)", listing, re.M))
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) <= listed

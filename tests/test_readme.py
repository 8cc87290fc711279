"""README.md stays true: its tokenizer table matches the registry, and CI calls its test command."""

from pathlib import Path

from scripts.readme_table import current, table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_matches_registry() -> None:
    assert current() == table(), "README's tokenizer table is stale: run `python scripts/readme_table.py --write`"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make demo" in readme

"""The command line itself: help, version, completion, choices as usage errors, exit statuses, and the README reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES

from memp_cli import __version__
from memp_cli.cli import COMMANDS, docs

NAMES = [name for name, _ in COMMANDS]
MEMP = [sys.executable, "-m", "memp_cli"]


def test_readme_reference_and_contract_are_what_the_code_says() -> None:
    current = docs.README.read_text()
    assert docs.render(current) == current, "README.md is out of date: run python -m memp_cli.cli.docs"
    for name in NAMES:
        assert f"### `memp {name}`" in current
    assert "--pending" not in current and "`get`," not in current


def test_version_and_help_on_every_command(memp) -> None:
    assert memp("--version").stdout == f"memp {__version__}\n"
    assert memp("-h").stdout == memp("--help").stdout
    for name in NAMES:
        short = memp(name, "-h").stdout
        assert short.startswith(f"Usage: memp {name} ") and short == memp(name, "--help").stdout


def test_prompt_is_offered_by_recall_only() -> None:
    offered = {name: docs._formats(command, ctx) for name, command, ctx in docs._commands() if name != "memp"}
    assert list(offered) == NAMES
    assert offered["recall"] == ["table", "json", "jsonl", "prompt"]
    assert {name for name, fmts in offered.items() if "prompt" in fmts} == {"recall"}
    # ingest's --format is its input; export prints a format of its own; the others print nothing on stdout.
    quiet = {"ingest", *docs.QUIET, *docs.STREAMS}
    assert {name for name, fmts in offered.items() if not fmts} == quiet
    assert all(fmts[:3] == ["table", "json", "jsonl"] for name, fmts in offered.items() if name not in quiet)


@pytest.mark.parametrize(
    "args",
    [
        ("ingest", str(EXAMPLES), "--build", "everything"),
        ("ingest", str(EXAMPLES), "--format", "yaml"),
        ("ingest", str(EXAMPLES), "--outcome", "meh"),
        ("recall", "x", "--policy", "psychic"),
        ("recall", "x", "--rank", "luck"),
        ("recall", "x", "--format", "yaml"),
        ("list", "--format", "prompt"),
        ("list", "--kind", "poem"),
        ("list", "--status", "asleep"),
        ("update", "--memory", "1", "--outcome", "meh"),
        ("update", "--memory", "1", "--outcome", "success", "--policy", "hope"),
        ("update", "--flush", "--build", "poem"),
        ("eval", str(EXAMPLES), "--policy", "psychic"),
        ("config", "colour"),
        ("config", "update_policy", "yolo"),
        ("config", "update_every", "0"),
        ("build", "--pending"),
    ],
)
def test_a_choice_not_offered_is_a_usage_error_and_stores_nothing(memp, isolated: Path, args: tuple[str, ...]) -> None:
    result = memp(*args, ok=False)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and f"Usage: memp {args[0]} " in result.stderr
    assert "Invalid value" in result.stderr or "No such option" in result.stderr
    assert not (isolated / "memp.db").exists()


def test_shell_completion_knows_commands_and_choices() -> None:
    script = subprocess.run([*MEMP, "--show-completion", "bash"], capture_output=True, text=True, check=True).stdout
    assert "_MEMP_COMPLETE=complete_bash" in script and "complete -o default -F _memp_completion memp" in script

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_MEMP_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        return subprocess.run(MEMP, env=env, capture_output=True, text=True, check=True).stdout.split()

    assert complete("memp rec") == ["recall"]
    assert complete("memp recall x --policy ") == ["procedural", "query", "avefact", "hybrid", "random"]


def test_statuses_of_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "MEMP_DB": str(tmp_path / "memp.db")}
    run = subprocess.run([*MEMP, "ingest", str(EXAMPLES), "-m", "offline", "--json"], env=env, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0 and json.loads(run.stdout)["added"] == 16
    missing = subprocess.run([*MEMP, "show", "999"], env=env, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "memp: error: no memory with id 999"
    bad = subprocess.run([*MEMP, "recall", "x", "--policy", "psychic"], env=env, capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and bad.stdout == ""


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "MEMP_DB": str(tmp_path / "memp.db")}
    subprocess.run([*MEMP, "ingest", str(EXAMPLES), "-m", "offline"], env=env, capture_output=True, check=True)
    tasks = "".join(f"clean a mug and put it in the coffee machine, take {i}\n" for i in range(400))
    # Far more than a pipe holds (~5 kB a line): the writes after the reader leaves fail with EPIPE.
    proc = subprocess.Popen([*MEMP, "recall", "-", "-k", "3"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(tasks.encode())
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()
    assert json.loads(first)["matches"]
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


def test_a_command_loads_and_builds_only_itself() -> None:
    code = (
        "import sys\nimport memp_cli.cli as cli\nsys.argv = ['memp', 'recall', '-h']\nbuilt = []\n"
        "build = cli.build_command\ncli.build_command = lambda name, target: built.append(name) or build(name, target)\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('memp_cli.cli.')), built)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['memp_cli.cli.common', 'memp_cli.cli.recall'] ['recall']"

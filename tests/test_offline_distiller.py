"""The offline distiller on real runs (step by step) and on generated ones (properties that must always hold)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import EXAMPLES, SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from memp_cli import formats
from memp_cli.distill import offline_script
from memp_cli.offline import FailureReport, contrast, offline_procedure, place_violations
from memp_cli.offline.household import place_of
from memp_cli.offline.judge import failure_of
from memp_cli.records import Step, Trajectory

real = pytest.mark.skipif(not SHARED.exists(), reason=f"real data folder {SHARED} is absent")
EXPERT = SHARED / "alfworld-expert/train"
MARSHMALLOW = (SHARED / "swe-agent/demonstrations/replay__marshmallow-code__marshmallow-1867__default__t-0.20__p-0.95"
               "__c-2.00__install-1___install_from_source/marshmallow-code__marshmallow-1867.traj")


def _read(path: Path) -> list[Trajectory]:
    return list(formats.read(formats.Source(path, str(path))))


def _steps(text: str) -> list[str]:
    return [re.sub(r"^\d+\. ", "", ln) for ln in text.split("\nSteps:\n", 1)[1].split("\nPitfalls:\n")[0].splitlines()]


@real
def test_expert_pick_two_run_step_by_step() -> None:
    (run,) = _read(EXPERT / "pick_two_obj_and_place-CreditCard-None-ArmChair-209/trial_T20190909_024857_897773/gt_traj.json")
    text = offline_procedure(run).render()
    assert text.splitlines()[:2] == [
        "When to use: Tasks like: put two creditcard in armchair",
        "Parameters: {object} (example: creditcard 1), {target} (example: armchair 1), {object_2} (example: creditcard 2)",
    ]
    # The second credit card took a search of four places: one find step that keeps where it was found.
    assert _steps(text) == [
        "go to sofa 1",
        "take {object} from sofa 1",
        "go to {target}",
        "put {object} in/on {target}",
        ("Find {object_2}: check places such as sofa 1, sidetable 1, sidetable 2, dresser 1 "
        "(found at dresser 1 in the example run)"),
        "take {object_2} from dresser 1",
        "go to {target}",
        "put {object_2} in/on {target}",
    ]
    assert place_violations(text) == []


@real
def test_pick_two_keeps_both_trips_to_the_same_shelf() -> None:
    (run,) = _read(EXPERT / "pick_two_obj_and_place-AlarmClock-None-Desk-304/trial_T20190907_215326_695860/gt_traj.json")
    steps = _steps(offline_procedure(run).render())
    assert steps == [
        "go to shelf 1", "take {object} from shelf 1", "go to {target}", "put {object} in/on {target}",
        "go to shelf 1", "take {object_2} from shelf 1", "go to {target}", "put {object_2} in/on {target}",
    ]


def test_checker_catches_a_put_where_the_run_never_went() -> None:
    script = ("When to use: x\nParameters: {alarmclock} (example: alarmclock)\nSteps:\n1. go to desk 1\n"
              "2. take {alarmclock} 1 from desk 1\n3. put {alarmclock} 1 in/on shelf 1\nPitfalls:\n- put it back")
    assert place_violations(script) == ["3. put {alarmclock} 1 in/on shelf 1 (at desk 1)"]


@real
def test_no_expert_script_acts_away_from_where_it_went() -> None:
    files = sorted(EXPERT.rglob("gt_traj.json"))
    assert len(files) == 3554
    wrong = {str(f): v for f in files for run in _read(f) if (v := place_violations(offline_procedure(run).render()))}
    assert wrong == {}


@real
def test_swe_agent_demonstration_step_by_step() -> None:
    (run,) = _read(MARSHMALLOW)
    procedure = offline_procedure(run)
    text = procedure.render()
    assert text.splitlines()[:2] == [
        "When to use: Tasks like: TimeDelta serialization precision",
        "Parameters: {file} (example: fields.py), {file_2} (example: src/marshmallow/fields.py)",
    ]
    # The second `ls -F` only showed the reproduce.py the run had just made: nothing learned, dropped.
    assert _steps(text) == [
        "ls -F",
        "open setup.py",
        "pip install -e .[dev]",
        "create reproduce.py",
        ('edit 1:1 ↵ from marshmallow.fields import TimeDelta ↵ from datetime import timedelta ↵ td_field = '
        'TimeDelta(precision="milliseconds") ↵ obj = dict() ↵ obj["td_field"] = timedelta(milliseconds=345) ↵ '
        'print(td_field.serialize("td_field", obj…'),
        "python reproduce.py",
        'find_file "{file}" src',
        "open {file_2} 1474",
        ("edit 1475:1475 ↵ return int(round(value.total_seconds() / base_unit.total_seconds())) # round to nearest int"
        " ↵ end_of_edit"),
        "python reproduce.py",
        "rm reproduce.py",
        "submit",
    ]
    # The edit the tool rejected for its indentation is a pitfall, with the reason the tool gave.
    assert procedure.pitfalls == [
        ("`edit 1475:1475 …` did not work: Your proposed edit has introduced new syntax error(s). Please understand "
        "the fi… — E999 IndentationError: unexpected indent")
    ]


@real
def test_failed_webshop_run_is_a_warning_without_steps() -> None:
    runs = _read(SHARED / "react-webshop/WebShop_ipynb_cell7_output.txt")
    run = runs[2]
    assert run.outcome == "failure" and run.score == 0.75
    procedure = offline_procedure(run)
    assert isinstance(procedure, FailureReport) and procedure.steps == []
    text = procedure.render()
    assert "Steps:" not in text and not re.search(r"^\d+\. ", text, re.MULTILINE)
    assert text.splitlines()[1] == "Outcome: this run FAILED (score 0.75). Do not follow it as a procedure."
    assert "- `click[Buy Now]` -> Your score (min 0.0, max 1.0): 0.75" in text
    assert "\nAvoid:\n- ending the way this run did (`click[B07MTPW3Z7]`" in text
    # No failed WebShop run keeps steps; every successful one has them.
    for other in runs:
        assert ("\nSteps:\n" in offline_procedure(other).render()) == (other.outcome == "success")


def test_failed_shell_run_says_what_went_wrong() -> None:
    run = next(r for r in _read(EXAMPLES / "coding.jsonl") if r.outcome == "failure")
    text = offline_script(run).text
    assert "Steps:" not in text
    assert "- `pytest tests/integration -n 8 -q` -> Error: database is locked — 2 failed, 1 passed [failed]" in text
    assert "- `pytest tests/integration -n 8 -q` did not work: Error: database is locked — 2 failed, 1 passed" in text


def test_household_failure_names_the_step_the_task_asked_for() -> None:
    run = next(r for r in _read(EXAMPLES / "household.jsonl") if r.task == "put a clean plate on the dining table")
    text = offline_procedure(run).render()
    assert "- The task asks for 'clean', but no `clean ...` action succeeded" in text
    assert "- skipping the `clean ...` step that 'clean' in the task asks for" in text


@real
def test_placeholders_are_consistent_across_real_runs() -> None:
    files = sorted(EXPERT.rglob("gt_traj.json"))[::25] + sorted((SHARED / "swe-agent").rglob("*.traj"))
    files += [SHARED / "react-alfworld/alfworld_3prompts.json", SHARED / "memp-alfworld/alfworld_examples.json"]
    checked = 0
    for path in files:
        for run in _read(path):
            procedure = offline_procedure(run)
            declared = dict(re.findall(r"^\{([^{}]+)\} \(example: (.+)\)$", "\n".join(procedure.parameters), re.MULTILINE))
            # Role placeholders in the steps are all declared (literal braces, as in a CTF flag, are not placeholders).
            roles = r"(?:object|target|file|query|option|host|value)(?:_\d+)?"
            used = set(re.findall(rf"\{{({roles})\}}", "\n".join(procedure.steps)))
            assert used <= set(declared), path
            assert len(set(declared.values())) == len(declared), path  # one name per value
            for value in declared.values():
                # A value with a placeholder is never left literal in a step's command line.
                if re.fullmatch(r"[a-z]+ \d+", value):
                    assert not any(re.search(rf"\b{value}\b", s.split(" ↵ ")[0]) for s in procedure.steps), (path, value)
            checked += bool(declared)
    assert checked > 100


def test_contrast_says_what_the_success_did_differently() -> None:
    success = next(r for r in _read(EXAMPLES / "household.jsonl") if r.task.startswith("put a clean mug"))
    skipped = [s for s in success.steps if not s.action.startswith(("go to sinkbasin", "clean"))]
    failure = Trajectory(success.task, [*skipped[:2], Step("go to toilet 1", observation="On the toilet 1, you see nothing."),
                                        *skipped[2:]], "failure")
    assert contrast(success, [failure]) == [
        "At step 3 the success did `go to sinkbasin 1` where the failed attempt did `go to toilet 1`",
        "Only the success did: `go to sinkbasin 1`, `clean mug 2 with sinkbasin 1`",
        "Only failed attempts did: `go to toilet 1`",
    ]
    assert contrast(success, []) == []


# -- properties on generated runs -----------------------------------------------------------------------------------

FAILING = ["Nothing happens.", "bash: foo: command not found", "<returncode>2</returncode>\n<output>\nboom\n</output>",
           "Invalid action!", "Traceback (most recent call last):\n  File x\nValueError: bad"]
WORKING = ["You pick up the mug 1 from the desk 1.", "On the desk 1, you see a mug 1.", "ok", "3 passed in 0.1s",
           "<returncode>0</returncode>\n<output>\ndone\n</output>", ""]
ACTIONS = ["go to desk 1", "go to shelf 2", "take mug 1 from desk 1", "put mug 1 in/on shelf 2", "open drawer 1",
           "ls -la", "pytest -q", "sed -i 's/a/b/' src/app.py", "search[red mug]", "click[Buy Now]", "think: where?"]

runs = st.builds(
    lambda steps, task, outcome: Trajectory(task, [Step(a, observation=o) for a, o in steps], outcome),
    st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from(FAILING + WORKING)), min_size=1, max_size=25),
    st.sampled_from(["put a mug in shelf", "fix app.py so that the tests pass", "i want a red mug"]),
    st.sampled_from(["success", "failure"]),
)


def _plain_steps(traj: Trajectory) -> list[str]:
    """Return the steps that are actions to perform as they are (not a find step, a reproduction or a pick)."""
    procedure = offline_procedure(traj)
    marks = ("Find ", "Reproduce first: ", "click the listed", "Read the code", "(no action", "... (")
    return [s for s in procedure.steps if not s.startswith(marks)]


def _unsubstituted(step: str, traj: Trajectory) -> str:
    for parameter in offline_procedure(traj).parameters:
        name, value = re.findall(r"^\{(.+?)\} \(example: (.+)\)$", parameter)[0]
        step = step.replace("{" + name + "}", value)
    return step


def _assert_in_order(traj: Trajectory, pool: list[str]) -> None:
    """Assert each plain step is, in order, one of `pool` (a run's actions), but for walks the procedure implies."""
    plain = [_unsubstituted(step, traj) for step in _plain_steps(traj)]
    position = 0
    for k, original in enumerate(plain):
        assert not original.startswith("think:")
        after = plain[k + 1] if k + 1 < len(plain) else ""
        implied = (original.startswith("go to ") and place_of(after) == original[6:] and after in pool[position:]
                   and original not in pool[position : pool.index(after, position)])
        if implied:
            continue  # the walk a household run implied by acting at a place it had not gone to
        assert original in pool[position:], (original, traj.steps)
        position = pool.index(original, position) + 1


@settings(max_examples=300, deadline=None)
@given(runs)
def test_kept_steps_come_from_the_run_in_its_order(traj: Trajectory) -> None:
    _assert_in_order(traj, [s.action for s in traj.steps])


@settings(max_examples=300, deadline=None)
@given(runs)
def test_no_action_whose_observation_failed_is_a_step(traj: Trajectory) -> None:
    # Each step is, in order, an occurrence of its action whose observation is no failure signal.
    _assert_in_order(traj, [s.action for s in traj.steps if not failure_of(s.action, s.observation)])
    if traj.outcome == "failure":
        assert offline_procedure(traj).steps == [] and "Steps:" not in offline_procedure(traj).render()


@settings(max_examples=200, deadline=None)
@given(runs)
def test_output_is_deterministic(traj: Trajectory) -> None:
    copy = Trajectory(traj.task, list(traj.steps), traj.outcome)
    assert offline_procedure(traj).render() == offline_procedure(copy).render() == offline_script(traj).text

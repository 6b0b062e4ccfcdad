"""Fidelity: a memory's steps fitted to a new task and scored against what the new run did."""

from __future__ import annotations

from memp_cli import fidelity as F
from memp_cli.records import Step

SCRIPT = """When to use: Tasks like: put a clean apple in fridge
Parameters: {object} (example: apple), {target} (example: fridge)
Steps:
1. Find a {object}: check places such as countertop 1 (found on countertop 1 in the example run)
2. take {object} from countertop 1
3. go to sinkbasin 1
4. clean {object} with sinkbasin 1
5. go to {target}
6. put {object} in/on {target}
Pitfalls:
- none"""


def test_script_steps_and_parameters_are_read() -> None:
    steps = F.memory_steps(SCRIPT, None)
    assert len(steps) == 6 and steps[0].startswith("Find a {object}")
    assert F.parameters(SCRIPT) == {"object": "apple", "target": "fridge"}


def test_a_warning_without_steps_guides_nothing_and_a_run_gives_its_actions() -> None:
    assert F.memory_steps("Outcome: this run FAILED\nAvoid:\n- x", None) == []
    assert F.memory_steps(None, "Task: t\n> go to desk 1\nOn the desk 1...\n> take pen 1 from desk 1") == [
        "go to desk 1", "take pen 1 from desk 1"]


def test_fit_replaces_values_aligned_between_the_tasks() -> None:
    fitted = F.fit(F.memory_steps(SCRIPT, None), "put a clean apple in fridge", "put a clean egg in microwave",
                   F.parameters(SCRIPT))
    assert fitted[3] == "clean egg with sinkbasin 1" and fitted[5] == "put egg in/on microwave"
    # Different templates still pair the words only one task has.
    assert F.alignment("clean some soapbar and put it in countertop", "put a clean plate in countertop") == {
        "soapbar": "plate"}


def test_action_types_across_domains() -> None:
    assert F.action_type("go to cabinet 3") == "go"
    assert F.action_type("Find a {object}: check drawers") == "go"
    assert F.action_type("search[red shoes size 9]") == "search"
    assert F.action_type("cd /repo && sudo python -m pytest tests/test_x.py") == "pytest"
    assert F.action_type("FOO=1 /usr/bin/sed -i 's/a/b/' f.py") == "sed"


def test_scores_reward_the_same_procedure_and_punish_another() -> None:
    reference = ["go to cabinet 1", "open cabinet 1", "go to countertop 1", "take egg 2 from countertop 1",
                 "go to sinkbasin 1", "clean egg 2 with sinkbasin 1", "go to microwave 1", "put egg 2 in/on microwave 1"]
    fitted = F.fit(F.memory_steps(SCRIPT, None), "put a clean apple in fridge", "put a clean egg in microwave",
                   F.parameters(SCRIPT))
    good = F.score(fitted, reference)
    bad = F.score(["go to stoveburner 1", "heat egg with microwave 1"], reference)
    assert good.type_f1 > 0.8 and good.action_f1 > 0.3
    assert bad.type_f1 < good.type_f1 and bad.type_edit < good.type_edit and bad.action_f1 == 0.0
    assert F.score([], reference) == F.Fidelity(0.0, 0.0, 0.0)


def test_reference_drops_failed_and_thinking_steps() -> None:
    steps = [Step("think: where is it?"), Step("go to desk 1", observation="On the desk 1, you see a pen 1."),
             Step("take cd 1 from desk 1", observation="Nothing happens.")]
    assert F.reference_actions(steps, lambda s: (s.observation or "").startswith("Nothing")) == ["go to desk 1"]


def test_reference_is_what_the_run_needed_with_its_own_values() -> None:
    from memp_cli.records import Trajectory

    run = Trajectory("put a mug in the cabinet", [
        Step("go to desk 1", observation="On the desk 1, you see a mug 1."),
        Step("take mug 1 from desk 1", observation="You pick up the mug 1 from the desk 1."),
        Step("take mug 1 from desk 1", observation="Nothing happens."),
        Step("go to cabinet 1", observation="The cabinet 1 is closed."),
        Step("open cabinet 1", observation="You open the cabinet 1."),
        Step("put mug 1 in/on cabinet 1", observation="You put the mug 1 in/on the cabinet 1."),
    ], "success")
    steps = F.reference_steps(run)
    assert "take mug 1 from desk 1" in steps and steps[-1] == "put mug 1 in/on cabinet 1"
    assert all("{" not in s for s in steps) and steps.count("take mug 1 from desk 1") == 1
    # Judged where the steps act on the task's values: a memory that did the same scores 1.0.
    assert F.score(steps, steps, run.task) == F.Fidelity(1.0, 1.0, 1.0)

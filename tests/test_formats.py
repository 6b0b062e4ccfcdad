"""Format adapters and detection on small files written here; real files are covered in test_real_data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memp_cli import formats
from memp_cli.errors import InputError


def _read(path: Path, fmt: str = "auto") -> list:
    return list(formats.read(formats.Source(path, path.name), fmt))


def test_sharegpt_with_thought_action_turns(tmp_path: Path) -> None:
    task_dir = tmp_path / "pick_heat_then_place_in_recep-Egg-None-Fridge-2" / "trial_1"
    task_dir.mkdir(parents=True)
    path = task_dir / "gt_traj.json"
    path.write_text(
        json.dumps(
            [
                {"from": "human", "value": "You are in a kitchen.\n\nYour task is to: heat some egg and put it in fridge."},
                {"from": "gpt", "value": "Thought: eggs are in the fridge\nAction: go to fridge 1"},
                {"from": "human", "value": "Observation: The fridge 1 is closed."},
                {"from": "gpt", "value": "Thought: it is closed"},
                {"from": "gpt", "value": "open fridge 1"},
                {"from": "human", "value": "You open the fridge 1."},
            ]
        )
    )
    (traj,) = _read(path)
    assert traj.task == "heat some egg and put it in fridge"
    assert [s.action for s in traj.steps] == ["go to fridge 1", "open fridge 1"]
    assert traj.steps[0].thought == "eggs are in the fridge"
    assert traj.steps[0].observation == "The fridge 1 is closed."
    assert traj.steps[1].thought == "it is closed"
    assert traj.metadata["task_type"] == "pick_heat_then_place_in_recep"
    assert traj.outcome == "success"
    failed = formats.ReadOptions(outcome="failure")
    assert next(iter(formats.read(formats.Source(path, "p"), "sharegpt", failed))).outcome == "failure"


def test_react_episode_text(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    episode = (
        "You are in a room.\nYour task is to: cool some pan and put it in stoveburner.\n"
        "> think: First I need a pan.\nOK.\n> go to stoveburner 1\nOn the stoveburner 1, you see a pan 1.\n"
        "> take pan 1 from stoveburner 1\nYou pick up the pan 1\nfrom the stoveburner 1."
    )
    path.write_text(json.dumps({"react_cool_0": episode}))
    (traj,) = _read(path)
    assert traj.task == "cool some pan and put it in stoveburner"
    assert [s.action for s in traj.steps] == ["go to stoveburner 1", "take pan 1 from stoveburner 1"]
    assert traj.steps[0].thought == "First I need a pan."
    assert traj.steps[1].observation == "You pick up the pan 1\nfrom the stoveburner 1."
    assert traj.metadata["task_type"] == "pick_cool_then_place_in_recep"
    assert traj.source_id == "react_cool_0"


def test_memp_chat_examples(tmp_path: Path) -> None:
    path = tmp_path / "examples.json"
    turns = [
        {"role": "user", "content": "Your task is to: examine the book with the desklamp."},
        {"role": "assistant", "content": "Thought: find the book.\nAction: go to bed 1"},
        {"role": "user", "content": "Observation: On the bed 1, you see a book 1."},
    ]
    path.write_text(json.dumps([{"task": "examine", "example": turns}]))
    (traj,) = _read(path)
    assert traj.steps[0].action == "go to bed 1" and traj.steps[0].observation == "On the bed 1, you see a book 1."
    assert traj.metadata["task_type"] == "look_at_obj_in_light"


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"a": 1}', "cannot tell this file's format"),
        ('[{"from": "human", "value": "hi"}]', "no task or no agent action"),
        ('[{"from": "human", "value": "Your task is to: x"},\n{"from": "gpt", "value": 3}]', "'value' must be a string"),
        ('{"react_put_0": "Your task is to: x\\n> go', "invalid JSON"),
        ("", "empty file"),
        ("just some notes\n", "cannot tell this file's format"),
    ],
)
def test_malformed_json_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        _read(path)
    assert message in str(err.value) and str(err.value).startswith("bad.json")


def test_named_format_mismatch_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "conv.json"
    path.write_text(json.dumps([{"from": "human", "value": "Your task is to: x"}, {"from": "gpt", "value": "go"}]))
    with pytest.raises(InputError, match="ReAct episode texts"):
        _read(path, "react")
    from memp_cli.errors import MempError

    with pytest.raises(MempError, match="unknown input format"):
        formats.check_format("csv")

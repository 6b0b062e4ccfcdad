"""ALFWorld task types, read from a task folder name or a few-shot prompt key, for evaluation labels."""

from __future__ import annotations

import re

TASK_TYPES = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)
# The ReAct paper's prompt keys (react_put_0, act_examine_2, ...) name the same six types by one word.
PROMPT_KEYS = {
    "put": "pick_and_place_simple",
    "clean": "pick_clean_then_place_in_recep",
    "heat": "pick_heat_then_place_in_recep",
    "cool": "pick_cool_then_place_in_recep",
    "examine": "look_at_obj_in_light",
    "puttwo": "pick_two_obj_and_place",
}
_KEY = re.compile(r"^(?:react|act)_([a-z]+)_\d+$")


def type_of_folder(name: str) -> str | None:
    """Return the task type of an ALFWorld task folder like 'pick_and_place_simple-Mug-None-Shelf-1'."""
    prefix = name.split("-", 1)[0]
    return prefix if prefix in TASK_TYPES else None


def type_of_prompt_key(key: str) -> str | None:
    """Return the task type of a ReAct prompt key like 'react_clean_1'."""
    match = _KEY.match(key)
    return PROMPT_KEYS.get(match.group(1)) if match else None

"""The offline distiller: a run -> a procedure to follow, or from a failed run a warning, without a model.

`judge` decides from each action's own observation whether it was kept, a thought, a failure or a repeat that
changed nothing; `household` folds search loops into "find" steps and checks where household steps act; `params`
turns the task's own values into placeholders; `procedure` renders the result; `contrast` compares runs of one task.
"""

from __future__ import annotations

from .contrast import contrast
from .household import place_violations
from .procedure import FailureReport, offline_procedure

__all__ = ["FailureReport", "contrast", "offline_procedure", "place_violations"]

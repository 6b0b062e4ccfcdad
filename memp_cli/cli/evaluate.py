"""`memp eval`: retrieval measured on labelled trajectories, per recall policy, in a throwaway store."""

from typing import Annotated

import typer

from ..choices import BuildPolicy, InputFormat, RecallPolicy
from .common import (
    ABOVE_ZERO_FRACTION,
    AT_LEAST_ONE,
    TOP,
    EmbedOpt,
    FormatOpt,
    handle_errors,
    output_format,
    say,
    utf8_text,
)


@handle_errors
def eval_(
    paths: Annotated[list[str], typer.Argument(help="Labelled trajectory files or folders.", metavar="PATH...", show_default=False)],
    label: Annotated[
        str,
        typer.Option("--label", "-l", help="Metadata field to match, e.g. task_type or repo; or outcome.",
                     callback=utf8_text),
    ] = "task_type",
    k: Annotated[int, typer.Option("-k", help="hit@k and MRR look at this many matches.", callback=TOP)] = 5,
    policy: Annotated[
        list[RecallPolicy] | None,
        typer.Option("--policy", "-p", help="A policy to compare (repeatable). Default: all of them.",
                     show_default=False),
    ] = None,
    test_share: Annotated[
        float, typer.Option(help="Share of groups held out as test tasks.", callback=ABOVE_ZERO_FRACTION)
    ] = 0.2,
    group: Annotated[
        str | None,
        typer.Option(help="Metadata field whose groups stay on one side of the split (default: the task text)."),
    ] = None,
    max_test: Annotated[int | None, typer.Option(help="Test at most this many tasks.", callback=AT_LEAST_ONE)] = None,
    build: Annotated[
        BuildPolicy,
        typer.Option("--build", "-b", help="How the memories are built (fidelity follows the script, else the run)."),
    ] = BuildPolicy.PROCEDURALIZATION,
    input_format: Annotated[
        InputFormat, typer.Option("--input-format", "-F", help="Input format, as ingest's --format.")
    ] = InputFormat.AUTO,
    keywords_model: Annotated[
        str | None, typer.Option(help="llm model that extracts AveFact keywords (default: offline).")
    ] = None,
    embed_model: EmbedOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Measure retrieval on labelled trajectories: hit@1, hit@k and MRR of same-label memories, per policy.

    Fidelity: the top procedure, fitted to each successful test run's task, scored against that run's own actions
    (kinds of steps F1 and order, and the actions themselves). A store is built from the training side in a temporary folder; your own store is not touched.
    """
    from .. import output
    from ..evaluate import evaluate

    shown = output_format(fmt)
    result = evaluate(
        paths, label=label, k=k, policies=[p.value for p in policy or RecallPolicy], test_share=test_share,
        group=group, fmt=input_format.value, max_test=max_test, build=build.value, embed_model=embed_model, keywords_model=keywords_model,
    )
    say(f"{result['train']} runs to learn from, {result['test']} test tasks, {result['labels']} labels")
    output.show_eval(result, shown)

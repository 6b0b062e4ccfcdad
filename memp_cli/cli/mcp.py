"""`memp mcp`: serve memp's tools to an MCP host (Claude Desktop, Claude Code, any MCP client)."""

from typing import Annotated

import typer

from .common import DbOpt, EmbedOpt, ModelOpt, ScopeOpt, handle_errors, number_check


@handle_errors
def mcp(
    http: Annotated[
        int | None,
        typer.Option(
            "--http", metavar="PORT",
            help="Serve Streamable HTTP on 127.0.0.1:PORT (path /mcp) instead of stdio; needs a bearer token.",
            show_default=False,
            callback=number_check(1, 65535, whole=True),
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="MEMP_MCP_TOKEN", show_envvar=False,
            help="The bearer token HTTP clients must send. Default: $MEMP_MCP_TOKEN.", show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    embed_model: EmbedOpt = None,
    scope: ScopeOpt = None,
    db: DbOpt = None,
) -> None:
    """Serve memp as an MCP server: recall, report_outcome, learn, list_memories, show_memory, prune_plan."""
    from ..mcp_server import serve

    serve(db, model=model, embed_model=embed_model, http_port=http, token=token, scope=scope)

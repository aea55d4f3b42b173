"""`segbench weights status` and `segbench weights fetch`: the ImageNet encoder
weights in the weights cache the workers use (worker.training.weights does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import EncoderOpt, FormatOpt, check_format, fail, print_json, user_errors

weights_app = typer.Typer(
    help="ImageNet encoder weights in the weights cache (SEGBENCH_WEIGHTS_DIR).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@weights_app.command("status")
def weights_status(encoder: EncoderOpt = None, format: FormatOpt = "table") -> None:
    """Which encoders' ImageNet weights are cached here, and their size."""
    from rich.console import Console
    from rich.table import Table

    from worker.training import weights  # torch: only here

    check_format(format)
    with user_errors():
        rows = weights.status(encoder)
        cache, online = str(weights.cache_dir()), weights.downloads_allowed()
    if format == "json":
        print_json({"cache": cache, "downloads": online, "encoders": rows})
        return
    cached = [r for r in rows if r["cached"]]
    table = Table(title=f"ImageNet weights in {cache}")
    table.add_column("encoder")
    table.add_column("cached")
    table.add_column("size", justify="right")
    for r in rows:
        table.add_row(r["encoder"], "yes" if r["cached"] else "no", _size(r["bytes"]))
    console = Console()
    console.print(table)
    total = sum(r["bytes"] for r in cached)
    how = (
        "workers download missing ones on first use"
        if online
        else f"downloads are forbidden ({weights.offline_reason()})"
    )
    console.print(f"{len(cached)} of {len(rows)} cached ({_size(total)}); {how}.")


@weights_app.command("fetch")
def weights_fetch(
    encoder: EncoderOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every encoder of the grid.")] = False,
) -> None:
    """Download ImageNet weights into the weights cache (needs the Hub), with a progress bar."""
    from db.grid import ENCODERS
    from worker.training import weights  # torch: only here

    if not encoder and not all_:
        fail("Name the encoders (--encoder X, repeatable) or pass --all for every encoder.")
    names = list(ENCODERS) if all_ else list(encoder or [])
    with user_errors():
        for name in names:
            path, downloaded = weights.fetch(name, progress=True)
            what = "downloaded" if downloaded else "already cached"
            typer.echo(f"{name}: {what}, {path.stat().st_size / 1e6:.1f} MB, {path}")

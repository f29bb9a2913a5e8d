"""`stratus image`: build and list the images instances start from."""

from __future__ import annotations

from typing import Annotated

import typer

from stratuslab.cli.output import OutputFormat, OutputOption, age, emit_json, err, out, table
from stratuslab.cli.runtime import runtime

app = typer.Typer(help="Build and list images.", no_args_is_help=True)
CloudOption = Annotated[str, typer.Option("--cloud", help="the cloud to use")]


@app.command("build")
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the image to build, e.g. debian-12")],
    force: Annotated[bool, typer.Option("--force", help="build even when the cached image matches")] = False,
    cloud: CloudOption = "local",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Build a base image with debootstrap and import it; a cached image is reused at once."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from stratuslab.cloud.images import ImageBuilder

    rt = runtime(ctx)
    builder = ImageBuilder(
        rt.instances.connector(cloud), cache_dir=rt.settings.cache_dir, mirror=rt.settings.debian_mirror
    )
    if output == OutputFormat.json or not err.is_terminal:
        last: list[str] = [""]

        def lines(stage: str, detail: str, _fraction: float | None) -> None:
            if output == OutputFormat.table and stage != last[0]:
                err.print(f"{stage}: {detail}", highlight=False)
            last[0] = stage

        result = builder.build(name, force=force, progress=lines)
    else:
        with Progress(
            TextColumn("[bold]{task.fields[stage]:<11}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("checking the cache", total=1.0, stage="cache")

            def show(stage: str, detail: str, fraction: float | None) -> None:
                bar.update(task, description=detail[:60], stage=stage, completed=fraction)

            result = builder.build(name, force=force, progress=show)
    summary = {
        "name": result.image.name,
        "fingerprint": result.image.fingerprint,
        "size_bytes": result.image.size_bytes,
        "cached": result.cached,
        "seconds": round(result.seconds, 3),
        "recipe_key": result.key,
    }
    if output == OutputFormat.json:
        emit_json(summary)
        return
    how = "already built (cache hit)" if result.cached else "built and imported"
    out.print(
        f"{result.image.name}: {how} in {result.seconds:.1f} s, "
        f"fingerprint {result.image.fingerprint[:12]}, {result.image.size_bytes / 2**20:.0f} MiB"
    )


@app.command("list")
def list_images(ctx: typer.Context, cloud: CloudOption = "local", output: OutputOption = OutputFormat.table) -> None:
    """The images instances can be started from."""
    images = runtime(ctx).instances.connector(cloud).images()
    if output == OutputFormat.json:
        emit_json(
            [
                {
                    "name": i.name,
                    "fingerprint": i.fingerprint,
                    "size_bytes": i.size_bytes,
                    "description": i.description,
                    "created_at": i.created_at,
                    "properties": dict(i.properties),
                }
                for i in images
            ]
        )
        return
    if not images:
        err.print("No image yet: build one with `stratus image build debian-12`.")
        return
    table(
        None,
        ("NAME", "FINGERPRINT", "SIZE", "AGE", "DESCRIPTION"),
        (
            (i.name, i.fingerprint[:12], f"{i.size_bytes / 2**20:.0f} MiB", age(i.created_at), i.description)
            for i in images
        ),
    )

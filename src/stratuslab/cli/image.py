"""`stratus image`: build base images (on this host), list what instances start from, and
verify them against the site's trust policy (cli/image_verify.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from stratuslab.cli.image_verify import verify
from stratuslab.cli.output import age, emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime

if TYPE_CHECKING:
    from stratuslab.cloud.images import BuildResult, ImageBuilder, Progress


@click.group(name="image", no_args_is_help=True)
def group() -> None:
    """Build, list and verify images."""


group.add_command(verify)


@group.command("build")
@click.argument("name")
@click.option("--force", is_flag=True, help="build even when the cached image matches its recipe")
@click.option("--cloud", default="local", show_default=True, help="the cloud to import into")
@output_option
@pass_runtime
def build(rt: Runtime, name: str, force: bool, cloud: str, output: str) -> None:
    """Build base image NAME (e.g. debian-12) with debootstrap and import it.

    The image is cached by a digest of its recipe: when nothing changed, this returns at once.
    """
    from stratuslab.cloud import clouds
    from stratuslab.cloud.images import ImageBuilder

    connector = clouds.get(rt.engine, cloud).make_connector()
    builder = ImageBuilder(
        connector, cache_dir=rt.settings.cache_dir, mirror=rt.settings.debian_mirror
    )
    try:
        if output == "json" or not err.is_terminal:
            result = builder.build(name, force=force, progress=_lines(quiet=output == "json"))
        else:
            result = _with_bar(builder, name, force)
    finally:
        connector.close()
    summary = {
        "name": result.image.name,
        "fingerprint": result.image.fingerprint,
        "size_bytes": result.image.size_bytes,
        "cached": result.cached,
        "seconds": round(result.seconds, 3),
        "recipe_key": result.key,
    }
    if output == "json":
        emit_json(summary)
        return
    how = "already built (cache hit)" if result.cached else "built and imported"
    out.print(
        f"{result.image.name}: {how} in {result.seconds:.1f} s, "
        f"fingerprint {result.image.fingerprint[:12]}, {result.image.size_bytes / 2**20:.0f} MiB"
    )


@group.command("list")
@click.option("--cloud", default="local", show_default=True, help="the cloud to list")
@click.option("--baked", is_flag=True, help="your baked images: digest, component, used by, stale")
@click.option("--all", "everyone", is_flag=True, help="with --baked: every user's (administrators)")
@output_option
@pass_runtime
def list_images(rt: Runtime, cloud: str, baked: bool, everyone: bool, output: str) -> None:
    """The images instances can be started from."""
    if baked:
        from stratuslab.cli.bake import list_baked

        list_baked(rt, cloud, everyone, output)
        return
    images = rt.client.images(cloud)
    if output == "json":
        emit_json(images)
    elif not images:
        err.print("No image yet: build one with `stratus image build debian-12`.")
    else:
        table(
            None,
            ("NAME", "FINGERPRINT", "SIZE", "AGE", "DESCRIPTION"),
            (
                (
                    i["name"],
                    i["fingerprint"][:12],
                    f"{i['size_bytes'] / 2**20:.0f} MiB",
                    age(i["created_at"]),
                    i["description"],
                )
                for i in images
            ),
        )


def _lines(*, quiet: bool) -> Progress:
    last = [""]

    def show(stage: str, detail: str, _fraction: float | None) -> None:
        step = detail.split(":", 1)[0]
        if not quiet and step != last[0]:
            err.print(f"{stage}: {detail}", highlight=False)
        last[0] = step

    return show


def _with_bar(builder: ImageBuilder, name: str, force: bool) -> BuildResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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

        return builder.build(name, force=force, progress=show)


def _add_import_and_delete() -> None:
    from stratuslab.cli.image_ops import delete, import_image

    group.add_command(import_image)
    group.add_command(delete)


_add_import_and_delete()

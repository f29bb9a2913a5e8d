"""Volumes in module files: a component's declarations and a node's bindings, as parsed, and
every bad input refused with the file, the line and the key."""

from __future__ import annotations

import textwrap

import pytest

from stratuslab.deploy.kinds import (
    ApplicationModule,
    ComponentModule,
    VolumeBinding,
    VolumeDef,
)
from stratuslab.deploy.model import parse_module
from stratuslab.errors import Invalid

GiB = 1 << 30


def parse(text: str) -> ComponentModule | ApplicationModule:
    module = parse_module(textwrap.dedent(text).lstrip("\n"), path="apps/x", file="x.yaml")
    assert isinstance(module, ComponentModule | ApplicationModule)
    return module


def refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse(text)
    return caught.value


def test_a_component_declares_volumes_with_every_key_and_leaves_unwritten_fields_empty() -> None:
    module = parse(
        """
        kind: component
        parent: base
        volumes:
          data:
            size: 2GiB
            path: /var/lib/postgresql
            read_only: false
            description: the cluster's files
          scratch: {size: 500MiB}
          refs:
            read_only: true
          later:
        """
    )
    assert isinstance(module, ComponentModule)
    assert module.volumes == {
        "data": VolumeDef("data", 2 * GiB, "/var/lib/postgresql", False, "the cluster's files"),
        "scratch": VolumeDef("scratch", 500 << 20),
        "refs": VolumeDef("refs", read_only=True),
        "later": VolumeDef("later"),
    }
    assert module.lines["volumes.data.path"] == 6


def test_a_size_in_bytes_is_a_size_too() -> None:
    module = parse("kind: component\nparent: base\nvolumes:\n  data: {size: 1073741824}\n")
    assert isinstance(module, ComponentModule)
    assert module.volumes["data"].size_bytes == GiB


def test_nodes_bind_volumes_by_name_or_with_the_short_form() -> None:
    module = parse(
        """
        kind: application
        nodes:
          db:
            component: db
            volume: pgdata
          reader:
            component: reader
            multiplicity: 3
            volumes:
              data: alice/pgdata
              refs: {volume: ada/genomes, read_only: true}
              logs: {volume: logs, read_only: false}
          web:
            component: web
        """
    )
    assert isinstance(module, ApplicationModule)
    assert module.nodes["db"].volumes == {"": VolumeBinding("pgdata")}
    assert module.nodes["reader"].volumes == {
        "data": VolumeBinding("alice/pgdata"),
        "refs": VolumeBinding("ada/genomes", read_only=True),
        "logs": VolumeBinding("logs", read_only=False),
    }
    assert module.nodes["web"].volumes == {}


COMPONENT = "kind: component\nparent: base\nvolumes:\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  data: 2GiB\n", "x.yaml:4: volumes.data: must be a mapping, not text"),
        ("  Data: {size: 1GiB}\n", "x.yaml:4: volumes.Data: volume name 'Data': use up to 63"),
        (
            "  a_very_long_volume_name: {size: 1GiB}\n",
            "x.yaml:4: volumes.a_very_long_volume_name: 'a_very_long_volume_name': a "
            "component's volume name is at most 20 characters",
        ),
        ("  data: {size: lots}\n", "x.yaml:4: volumes.data.size: size 'lots': give a number"),
        ("  data: {size: 2}\n", "x.yaml:4: volumes.data.size: size 2 B: a volume is from 16 MiB"),
        ("  data: {size: 99TiB}\n", "x.yaml:4: volumes.data.size: size 99 TiB: a volume is"),
        ("  data: {size: true}\n", "x.yaml:4: volumes.data.size: must be a size such as 2GiB"),
        ("  data: {size: [1]}\n", "x.yaml:4: volumes.data.size: must be a size such as 2GiB"),
        ("  data:\n    path: data\n", "x.yaml:5: volumes.data.path: mount path 'data': give an"),
        ("  data:\n    path: /\n", "x.yaml:5: volumes.data.path: mount path '/': give an"),
        ("  data:\n    path: /a/../b\n", "x.yaml:5: volumes.data.path: mount path '/a/../b'"),
        (
            "  data:\n    path: /etc/app\n",
            "x.yaml:5: volumes.data.path: mount path '/etc/app': /etc is the system's",
        ),
        ("  data:\n    path: 5\n", "x.yaml:5: volumes.data.path: must be text, not a number"),
        ("  data:\n    path: ''\n", "x.yaml:5: volumes.data.path: must not be empty"),
        (
            "  data:\n    read_only: yes\n",
            "x.yaml:5: volumes.data.read_only: must be true or false, not text",
        ),
        ("  data:\n    read-only: true\n", "x.yaml:5: 'read-only' is now called 'read_only'"),
        ("  data:\n    mount: /srv\n", "x.yaml:5: 'mount' is now called 'path'"),
        ("  data:\n    sise: 1GiB\n", "x.yaml:5: unknown key 'sise' in a volume (known: "),
        ("  data:\n    description: 3\n", "x.yaml:5: volumes.data.description: must be text"),
        (
            "  data:\n    description: " + "x" * 1001 + "\n",
            "x.yaml:5: volumes.data.description: is longer than 1000 characters",
        ),
    ],
)
def test_bad_volume_declarations_name_the_file_line_and_key(text: str, message: str) -> None:
    assert refused(COMPONENT + text).message.startswith(message)


def test_a_component_mounts_at_most_sixteen_volumes() -> None:
    many = "".join(f"  v{i}: {{size: 1GiB}}\n" for i in range(17))
    assert refused(COMPONENT + many).message == (
        "x.yaml:3: volumes: 17 volumes: a component mounts at most 16"
    )


def test_volumes_must_be_a_mapping() -> None:
    assert refused("kind: component\nparent: base\nvolumes: [data]\n").message == (
        "x.yaml:3: volumes: must be a mapping, not a list"
    )


NODE = "kind: application\nnodes:\n  db:\n    component: db\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "    volume: pgdata\n    volumes: {data: pgdata}\n",
            "x.yaml:5: nodes.db.volume: give either volume: (the component's only volume) or "
            "volumes: (by name), not both",
        ),
        (
            "    volume: {volume: pgdata}\n",
            "x.yaml:5: nodes.db.volume: must be a volume's name (pgdata or alice/pgdata), not a "
            "mapping",
        ),
        ("    volume: PgData\n", "x.yaml:5: nodes.db.volume: volume name 'PgData': use up to"),
        ("    volume: a/b/c\n", "x.yaml:5: nodes.db.volume: volume 'a/b/c': write NAME or"),
        ("    volume: ''\n", "x.yaml:5: nodes.db.volume: must not be empty"),
        ("    volumes: [pgdata]\n", "x.yaml:5: nodes.db.volumes: must be a mapping, not a list"),
        (
            "    volumes:\n      data: 5\n",
            "x.yaml:6: nodes.db.volumes.data: must be a volume's name or a mapping, not a number",
        ),
        (
            "    volumes:\n      data: {read_only: true}\n",
            "x.yaml:6: nodes.db.volumes.data.volume: missing: the volume to bind",
        ),
        (
            "    volumes:\n      data: {volume: pgdata, read_only: 1}\n",
            "x.yaml:6: nodes.db.volumes.data.read_only: must be true or false, not a number",
        ),
        (
            "    volumes:\n      data: {volume: pgdata, size: 1GiB}\n",
            "x.yaml:6: unknown key 'size' in a volume's binding (known: read_only, volume)",
        ),
        (
            "    volumes:\n      data:\n        volume: bob/Pg\n",
            "x.yaml:7: nodes.db.volumes.data.volume: volume name 'Pg'",
        ),
        ("    volumes:\n      -x: pgdata\n", "x.yaml:6: nodes.db.volumes.-x: volume name '-x'"),
        ("    volumez: {data: pgdata}\n", "x.yaml:5: unknown key 'volumez' in a node (known: "),
    ],
)
def test_bad_bindings_name_the_file_line_and_key(text: str, message: str) -> None:
    assert refused(NODE + text).message.startswith(message)


def test_a_description_is_bounded_as_the_volume_service_bounds_it() -> None:
    from stratuslab.cloud import volumes
    from stratuslab.deploy import volume_decls

    assert volume_decls.MAX_DESCRIPTION == volumes.MAX_DESCRIPTION

"""`stratus volume` and the volumes of `stratus instance`, in-process against the in-process
API on the fake cloud: alice (the site's administrator here) and bob, a user who is not."""

from __future__ import annotations

from collections.abc import Callable

from stratuslab.cloud.connectors.fake import FakeConnector
from tests.support import CliResult, as_json

Cli = Callable[..., CliResult]


def running(cli: Cli, name: str, *extra: str) -> str:
    (view,) = as_json(cli, "instance", "run", "debian-12", "--name", name, *extra)
    assert view["state"] == "running"
    return str(view["id"])


def mounts_of(fake: FakeConnector, instance_id: str) -> list[tuple[str, bool]]:
    (found,) = [i for i in fake.list_instances() if i.tags.get("id") == instance_id]
    return sorted((m.path, m.read_only) for m in fake.ex_mounts(found.name).values())


def test_the_whole_life_of_a_volume(stratus: Cli, fake: FakeConnector) -> None:
    made = stratus("volume", "create", "data", "--size", "2GiB", "--description", "[red]x")
    assert (made.code, made.out) == (0, "alice/data: made, 2 GiB on local\n"), made.err
    listed = stratus("volume", "list")
    assert "alice/data" in listed.out and "2 GiB" in listed.out and "private" in listed.out
    box = running(stratus, "box")

    attached = stratus("volume", "attach", "data", "box", "--path", "/mnt/data")
    assert (attached.code, attached.out) == (
        0,
        f"alice/data: attached to {box} at /mnt/data (rw)\n",
    )
    assert mounts_of(fake, box) == [("/mnt/data", False)]
    shown = stratus("volume", "show", "data")
    assert f"{box} at /mnt/data (rw)" in shown.out and "[red]x" in shown.out
    assert "alice/data at /mnt/data (rw)" in stratus("instance", "show", box).out
    view = as_json(stratus, "instance", "show", "box")
    assert [(v["ref"], v["path"]) for v in view["volumes"]] == [("alice/data", "/mnt/data")]
    listed = stratus("volume", "list")
    assert f"{box} at /mnt/data (rw)" in listed.out

    detached = stratus("volume", "detach", "data", box)
    assert (detached.code, detached.out) == (0, f"alice/data: detached from {box}\n")
    assert mounts_of(fake, box) == []
    assert "nothing" in stratus("volume", "show", "alice/data").out

    taken = stratus("volume", "snapshot", "data", "--name", "s1")
    assert (taken.code, taken.out) == (0, "alice/data: snapshot s1 taken\n"), taken.err
    stamped = as_json(stratus, "volume", "snapshot", "data")
    assert stamped["name"].startswith("20") and stamped["volume"] == "alice/data"
    names = [s["name"] for s in as_json(stratus, "volume", "snapshot", "list", "data")]
    assert names == ["s1", stamped["name"]]
    assert "s1" in stratus("volume", "snapshot", "list", "data").out
    restored = stratus("volume", "snapshot", "restore", "data", "s1")
    assert (restored.code, restored.out) == (0, "alice/data: restored to snapshot s1\n")

    clone = stratus("volume", "create", "copy", "--from", "alice/data/s1")
    assert clone.code == 0, clone.err
    assert clone.out == "alice/copy: made, 2 GiB on local, a copy of alice/data/s1\n"
    resized = stratus("volume", "resize", "data", "--size", "4GiB")
    assert (resized.code, resized.out) == (0, "alice/data: 4 GiB now\n")
    assert as_json(stratus, "volume", "show", "data")["size_bytes"] == 4 << 30

    deleted = stratus("volume", "snapshot", "delete", "data", "s1")
    assert (deleted.code, deleted.out) == (0, "data: snapshot s1 deleted\n")
    assert stratus("volume", "delete", "copy").out == "alice/copy: deleted (2 GiB freed)\n"
    gone = as_json(stratus, "volume", "delete", "data")
    assert (gone["ref"], gone["state"]) == ("alice/data", "gone")
    assert fake.list_volumes() == []
    empty = stratus("volume", "list")
    assert (empty.code, empty.out) == (0, "") and "No volumes" in empty.err
    assert as_json(stratus, "volume", "list") == []


def test_every_command_answers_json(stratus: Cli) -> None:
    box = running(stratus, "box")
    made = as_json(stratus, "volume", "create", "data", "--size", "100MiB", "--public")
    assert (made["size_bytes"], made["public"]) == (100 << 20, True)
    assert as_json(stratus, "volume", "list")[0]["id"] == made["id"]
    assert as_json(stratus, "volume", "show", made["id"])["ref"] == "alice/data"
    attached = as_json(stratus, "volume", "attach", "data", box, "--read-only")
    assert attached["attachments"][0]["read_only"] is True
    assert as_json(stratus, "volume", "detach", "data", box)["attachments"] == []
    assert as_json(stratus, "volume", "resize", "data", "--size", "1GiB")["size_bytes"] == 1 << 30
    taken = as_json(stratus, "volume", "snapshot", "create", "data", "--name", "s")
    assert taken["name"] == "s"
    assert as_json(stratus, "volume", "snapshot", "restore", "data", "s")["ref"] == "alice/data"
    assert as_json(stratus, "volume", "snapshot", "delete", "data", "s")["deleted"] is True
    assert as_json(stratus, "volume", "snapshot", "list", "data") == []  # it is gone
    assert as_json(stratus, "volume", "delete", "data")["state"] == "gone"


def test_bob_meets_alices_private_volume_as_one_that_does_not_exist(
    stratus: Cli, bob: Cli, fake: FakeConnector
) -> None:
    assert stratus("volume", "create", "data", "--size", "1GiB").code == 0
    assert stratus("volume", "snapshot", "data", "--name", "s1").code == 0
    bobs = running(bob, "bobs")
    commands = [
        ("volume", "show", "{ref}"),
        ("volume", "delete", "{ref}"),
        ("volume", "attach", "{ref}", bobs, "--read-only"),
        ("volume", "detach", "{ref}", bobs),
        ("volume", "resize", "{ref}", "--size", "2GiB"),
        ("volume", "snapshot", "{ref}"),
        ("volume", "snapshot", "list", "{ref}"),
        ("volume", "snapshot", "restore", "{ref}", "s1"),
        ("volume", "snapshot", "delete", "{ref}", "s1"),
        ("volume", "create", "mine", "--from", "{ref}/s1"),
        ("instance", "run", "debian-12", "--volume", "{ref}:ro"),
    ]
    for command in commands:
        theirs = bob(*(part.format(ref="alice/data") for part in command))
        nobodys = bob(*(part.format(ref="alice/nothing") for part in command))
        assert theirs.code == 66, (command, theirs.err)
        assert theirs.err == nobodys.err.replace("alice/nothing", "alice/data"), command
    assert "alice/data" not in bob("volume", "list", "--public").out
    assert [s["name"] for s in as_json(stratus, "volume", "snapshot", "list", "data")] == ["s1"]
    assert mounts_of(fake, bobs) == []


def test_alices_public_volume_is_bobs_to_read_not_to_change(
    stratus: Cli, bob: Cli, fake: FakeConnector
) -> None:
    assert stratus("volume", "create", "dataset", "--size", "1GiB", "--public").code == 0
    assert bob("volume", "list").err.startswith("No volumes")
    listed = bob("volume", "list", "--public")
    assert "alice/dataset" in listed.out and "public" in listed.out
    bobs = running(bob, "bobs")
    writable = bob("volume", "attach", "alice/dataset", bobs)
    assert writable.code == 77 and "read-only" in writable.err
    readable = bob("volume", "attach", "alice/dataset", bobs, "--read-only")
    assert readable.out == f"alice/dataset: attached to {bobs} at /mnt/dataset (ro)\n"
    assert mounts_of(fake, bobs) == [("/mnt/dataset", True)]
    assert "alice/dataset at /mnt/dataset (ro)" in bob("instance", "show", bobs).out
    assert bob("volume", "delete", "alice/dataset").code == 77
    assert bob("volume", "resize", "alice/dataset", "--size", "2GiB").code == 77
    assert bob("volume", "snapshot", "alice/dataset").code == 77
    assert as_json(stratus, "volume", "show", "dataset")["size_bytes"] == 1 << 30


def test_an_instance_starts_with_volumes_mounted(stratus: Cli, fake: FakeConnector) -> None:
    assert stratus("volume", "create", "logs", "--size", "1GiB").code == 0
    assert stratus("volume", "create", "ref", "--size", "1GiB").code == 0
    box = running(stratus, "box", "--volume", "logs", "--volume", "alice/ref:/srv/ref:ro")
    assert mounts_of(fake, box) == [("/mnt/logs", False), ("/srv/ref", True)]
    shown = stratus("instance", "show", box).out
    assert "alice/logs at /mnt/logs (rw)" in shown and "alice/ref at /srv/ref (ro)" in shown
    for bad in ("logs:mnt", "logs:/a:/b", "logs:ro:/a", ":/a", "logs:wo"):
        refused = stratus("instance", "run", "debian-12", "--volume", bad)
        assert refused.code == 65 and "--volume" in refused.err, bad
    taken = stratus("instance", "run", "debian-12", "--volume", "logs")
    assert taken.code == 67 and box in taken.err


def test_bad_input_exits_with_the_documented_codes(stratus: Cli, bob: Cli) -> None:
    unparsed = stratus("volume", "create", "data", "--size", "2 potatoes")
    assert unparsed.code == 65 and "'2 potatoes'" in unparsed.err
    assert stratus("volume", "create", "data").code == 64  # neither --size nor --from
    assert stratus("volume", "create", "Data", "--size", "1GiB").code == 65
    assert stratus("volume", "create", "d" * 64, "--size", "1GiB").code == 65

    set_quota = stratus("quota", "set", "bob", "--storage", "2")
    assert set_quota.code == 0, set_quota.err
    assert bob("volume", "create", "data", "--size", "2GiB").code == 0
    over = bob("volume", "create", "more", "--size", "1GiB")
    assert over.code == 68 and "storage" in over.err
    assert bob("volume", "resize", "data", "--size", "3GiB").code == 68
    assert bob("volume", "create", "copy", "--from", "data").code == 68
    assert [v["ref"] for v in as_json(bob, "volume", "list")] == ["bob/data"]
    assert stratus("volume", "create", "data", "--size", "2GiB").code == 0  # alice has none

    box = running(stratus, "box")
    assert stratus("instance", "stop", box).code == 0
    stopped = stratus("volume", "attach", "data", box)
    assert stopped.code == 67 and "stopped" in stopped.err
    assert stratus("instance", "start", box).code == 0
    assert stratus("volume", "attach", "data", box).code == 0
    attached = stratus("volume", "delete", "data")
    assert attached.code == 67 and box in attached.err and "detach" in attached.err
    assert stratus("instance", "kill", box).code == 0
    gone = stratus("volume", "attach", "data", box)
    assert gone.code == 67 and "gone" in gone.err
    assert stratus("volume", "attach", "data", "i-0000000000").code == 66
    assert stratus("volume", "delete", "data").code == 0  # the instance died: detached
    missing = stratus("volume", "snapshot", "data")
    assert missing.code == 66 and "'data'" in missing.err

"""States and capability names shared by every connector."""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    """The one set of states every backend's native states map onto."""

    PENDING = "pending"  # recorded or being created, not yet running
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"  # the backend reports a failure
    GONE = "gone"  # destroyed, by us or behind our back
    UNKNOWN = "unknown"  # the backend said something we cannot map


class Capability(StrEnum):
    """Optional operations a connector may offer; calling one it lacks raises NotSupported."""

    EXEC = "exec"  # run a command inside an instance without ssh
    FILES = "files"  # push and pull files without ssh
    SNAPSHOT = "snapshot"
    PUBLISH_IMAGE = "publish-image"
    IMPORT_IMAGE = "import-image"  # add an image from a local archive
    EXPORT_IMAGE = "export-image"  # write an image's bytes (its unified tarball) to a file
    VOLUMES = "volumes"

"""Images users make of their instances, and deleting users' and the site's images.

``save`` publishes an instance (stopped or running: a running one through a snapshot, so it
keeps running) as ``<owner>/<name>`` and records it in the catalog with origin ``save``; the
image carries ``stratus.owner``, ``stratus.origin`` and ``stratus.instance`` among its
properties, so that it can be traced to whoever made it even without the store. ``delete``
removes an image from the backend and the catalog: a user deletes their own images, an
administrator any user's, and the site's (images the catalog does not record) only when they
say so (``site=True``). Another user's private image answers as one that does not exist.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from stratuslab.cloud.base import UNKNOWN_IMAGE_HINT, Connector, Image
from stratuslab.cloud.catalog import Catalog, Owned, alias_for
from stratuslab.cloud.instances import InstanceService
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import Conflict, Forbidden, Invalid, NotFound, StratusError

MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class Made:
    """An image a user made (saved or imported), as the CLI summarises it."""

    image: Image
    owned: Owned
    seconds: float
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.image.name,
            "fingerprint": self.image.fingerprint,
            "size_bytes": self.image.size_bytes,
            "cloud": self.owned.cloud,
            "owner": self.owned.owner,
            "origin": self.owned.origin,
            "public": self.owned.public,
            "description": self.owned.description,
            "details": dict(self.owned.details),
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def description_of(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise Invalid(f"description of {len(text)} characters: at most {MAX_DESCRIPTION}")
    return text


class ImageService:
    """What ``owner`` (an administrator when ``admin``) does with images."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        admin: bool,
        instances: InstanceService,
        connectors: Callable[[str], Connector],
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.admin = admin
        self.instances = instances
        self.catalog = Catalog(engine)
        self._connector = connectors

    # -- save -----------------------------------------------------------------------------

    def save(self, ref: str, *, name: str, public: bool = False, description: str = "") -> Made:
        """Publish instance ``ref`` as the owner's image ``name``.

        Post-conditions: the image ``<owner>/<name>`` is on the instance's cloud, holding its
        root filesystem as it is now, recorded in the catalog (origin ``save``, the instance's
        id, name and image in its details); the instance is left as it was. Raises
        ``NotFound`` for an instance the caller does not reach, ``Conflict`` for one neither
        running nor stopped or a name taken (nothing is published then). When recording
        fails, the published image is deleted before the error propagates.
        """
        started = time.monotonic()
        alias = alias_for(self.owner, name)
        description = description_of(description)
        view = self.instances.get(ref)
        if view.state not in (InstanceState.RUNNING.value, InstanceState.STOPPED.value):
            raise Conflict(f"instance {view.id} is {view.state}: save a running or stopped one")
        connector = self.connector(view.cloud)
        connector.require(Capability.PUBLISH_IMAGE)
        self.check_free(view.cloud, alias)
        properties = {
            "stratus.owner": self.owner,
            "stratus.origin": "save",
            "stratus.instance": view.id,
        }
        details = {"instance": view.id, "instance_name": view.name, "from_image": view.image}
        self.catalog.reserve(
            cloud=view.cloud,
            alias=alias,
            owner=self.owner,
            origin="save",
            public=public,
            description=description,
            details=details,
        )
        try:
            image = connector.publish_image(
                view.name, alias=alias, properties=properties, description=description
            )
        except BaseException:
            self.catalog.forget(cloud=view.cloud, alias=alias)
            raise
        owned = self._settle(connector, view.cloud, image)
        return Made(image, owned, time.monotonic() - started, {"instance": view.id})

    # -- delete ---------------------------------------------------------------------------

    def delete(self, name: str, *, cloud: str, site: bool = False) -> dict[str, Any]:
        """Delete image ``name`` from ``cloud`` and from the catalog; what was deleted.

        A bare name is the caller's own image (``<owner>/<name>``), or with ``site`` the
        site's image of that name. Raises ``NotFound`` for an image that is not there or is
        another user's private one, ``Forbidden`` for another user's public image (unless the
        caller is an administrator) and for ``site`` from anyone but an administrator.
        Instances started from the image are not affected.
        """
        connector = self._connector(cloud)
        if site:
            return self._delete_site(connector, cloud, name)
        owner, _, rest = name.rpartition("/")
        alias = (
            alias_for(owner, rest) if owner and owner != self.owner else alias_for(self.owner, name)
        )
        owned = self._owned(cloud, alias)
        if owned is None or not (owned.visible_to(self.owner) or self.admin):
            raise NotFound(f"no image called {alias!r} on {cloud}", hint=UNKNOWN_IMAGE_HINT)
        if owned.owner != self.owner and not self.admin:
            raise Forbidden(f"{alias} is {owned.owner}'s image: only they may delete it")
        sharing = [
            o.alias
            for o in self.catalog.owned(cloud=cloud, owner=None)
            if o.fingerprint == owned.fingerprint and o.alias != alias
        ]
        if sharing:  # never made so (see save and import); deleting would take theirs too
            raise Conflict(f"{alias} is the same image as {len(sharing)} other user image(s)")
        connector.delete_image(owned.fingerprint)
        self.catalog.forget(cloud=cloud, alias=alias)
        return {
            "name": alias,
            "fingerprint": owned.fingerprint,
            "cloud": cloud,
            "owner": owned.owner,
            "origin": owned.origin,
        }

    def _delete_site(self, connector: Connector, cloud: str, name: str) -> dict[str, Any]:
        if not self.admin:
            raise Forbidden("only an administrator deletes the site's images")
        image = connector.get_image(name)
        users = self.catalog.owned(cloud=cloud, owner=None)
        mine = next((o for o in users if image.fingerprint == o.fingerprint), None)
        if mine is not None or any(o.alias == name for o in users):
            raise Invalid(
                f"{name} is {mine.owner if mine else 'a user'}'s image, not the site's",
                hint="delete it without --site",
            )
        connector.delete_image(image.fingerprint)
        return {
            "name": image.name,
            "fingerprint": image.fingerprint,
            "cloud": cloud,
            "owner": None,
            "origin": "site",
        }

    # -- shared with the import -----------------------------------------------------------

    def connector(self, cloud: str) -> Connector:
        return self._connector(cloud)

    def check_free(self, cloud: str, alias: str) -> None:
        """``Conflict`` when ``alias`` is taken on ``cloud`` (recorded, or on the backend)."""
        if self._owned(cloud, alias) is not None:
            raise Conflict(f"you have an image called {alias!r} on {cloud} already")
        try:
            self._connector(cloud).get_image(alias)
        except NotFound:
            return
        raise Conflict(f"an image called {alias!r} exists on {cloud} already")

    def _settle(self, connector: Connector, cloud: str, image: Image) -> Owned:
        try:
            return self.catalog.settle(cloud=cloud, alias=image.name, fingerprint=image.fingerprint)
        except BaseException:
            # Unrecorded, it would pass for the site's, which anybody may start.
            with contextlib.suppress(StratusError):
                connector.delete_image(image.fingerprint)
            with contextlib.suppress(StratusError):
                self.catalog.forget(cloud=cloud, alias=image.name)
            raise

    def _owned(self, cloud: str, alias: str) -> Owned | None:
        owner = alias.partition("/")[0]
        return next(
            (o for o in self.catalog.owned(cloud=cloud, owner=owner) if o.alias == alias), None
        )

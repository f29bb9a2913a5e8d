"""The images an owner may see, start and make, as the instance service answers them.

A mixin of :class:`~stratuslab.cloud.instances.InstanceService`, apart because it is a concept
of its own: the site's images and the users' (the catalog, ``catalog.py``), whom each is
visible to, and the site's trust policy on each (``marketplace/gate.py``). Another user's
private image is ``NotFound``, as an image that does not exist; the policy is told which
images users made, so that none passes for the site's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from stratuslab.cloud import imagesums
from stratuslab.cloud.base import UNKNOWN_IMAGE_HINT, Connector, Image
from stratuslab.cloud.catalog import Catalog, Owned, hidden
from stratuslab.cloud.clouds import DEFAULT_CLOUD
from stratuslab.cloud.imagesums import ImageSums
from stratuslab.errors import NotFound, NotSupported, StratusError

if TYPE_CHECKING:
    from stratuslab.cloud.marketplace.gate import ImagePolicy
    from stratuslab.cloud.marketplace.policy import Decision
    from stratuslab.cloud.records import InstanceView


class OwnerImages:
    """Images for ``owner``: set by the instance service's constructor."""

    engine: Engine
    owner: str
    policy: ImagePolicy | None
    _connector: Callable[[str], Connector]

    if TYPE_CHECKING:

        def _live(self, ref: str) -> InstanceView: ...  # the instance service's

    def list_images(self, cloud: str = DEFAULT_CLOUD) -> list[Image]:
        """The images the owner can start instances from on ``cloud``: the site's, their own
        and other users' public ones; ``NotFound`` for a cloud that is not recorded."""
        images = self._connector(cloud).list_images()
        hidden = Catalog(self.engine).hidden_from(self.owner, cloud, images)
        return [i for i in images if i.fingerprint not in hidden]

    def _may_start(self, cloud: str, image: Image) -> StratusError | None:
        # Another user's private image is theirs alone, also for an administrator's service
        # (who acts as its owner to start it) and for the engine's on a run owner's behalf;
        # then the site's trust policy decides, knowing which images users made.
        records = Catalog(self.engine).records_of(cloud, [image])
        if hidden(self.owner, [image], records):
            return NotFound(f"no image called {image.name!r}", hint=UNKNOWN_IMAGE_HINT)
        if self.policy is None:
            return None
        return self.policy.refusal(cloud, image, records)

    def get_image(self, name: str, *, cloud: str = DEFAULT_CLOUD) -> Image:
        """The image ``name`` (alias or fingerprint prefix) on ``cloud`` that the owner may
        start; else ``NotFound`` (also for another user's private image)."""
        return self.image_and_records(name, cloud=cloud)[0]

    def decide_image(self, name: str, *, cloud: str = DEFAULT_CLOUD) -> tuple[Image, Decision]:
        """The image ``name`` of ``cloud`` and the site's decision on it for the owner."""
        image, records = self.image_and_records(name, cloud=cloud)
        if self.policy is None:
            raise NotSupported("this instance service applies no trust policy")
        return image, self.policy.decide_image(cloud, image, records)

    def image_and_records(self, name: str, *, cloud: str) -> tuple[Image, list[Owned]]:
        image = self._connector(cloud).get_image(name)
        records = Catalog(self.engine).records_of(cloud, [image])
        if hidden(self.owner, [image], records):
            raise NotFound(f"no image called {name!r}", hint=UNKNOWN_IMAGE_HINT)
        return image, records

    def image_checksums(self, cloud: str, name: str, *, workdir: Path) -> ImageSums:
        """The size and digests of an image's bytes, for its Marketplace entry: exported once
        to a file under ``workdir`` (removed after), then kept by fingerprint. Another
        user's private image is ``NotFound``."""
        image, _ = self.image_and_records(name, cloud=cloud)
        return imagesums.image_checksums(
            self.engine,
            self._connector(cloud),
            cloud=cloud,
            image=image,
            workdir=workdir,
        )

    def publish(
        self, ref: str, *, alias: str, properties: dict[str, str], description: str = ""
    ) -> Image:
        """Make an image of the instance ``ref`` under ``alias`` (see the contract's
        ``publish_image``); recording whose it is is the caller's (``Catalog.record``)."""
        view = self._live(ref)
        connector = self._connector(view.cloud)
        return connector.publish_image(
            view.name, alias=alias, properties=properties, description=description
        )

    def delete_image(self, cloud: str, name: str) -> None:
        """Delete the image ``name`` on ``cloud``, idempotently; the catalog is the caller's."""
        self._connector(cloud).delete_image(name)

"""VM images for pools: a small catalog of aliases, explicit references, gallery images.

Users write ``image = "ubuntu-22.04"`` rather than four marketplace coordinates plus the
node agent SKU that must match them; the catalog holds pairs known to work with Batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.errors import UserError


@dataclass(frozen=True)
class ImageAlias:
    """A marketplace image with the node agent that runs on it."""

    publisher: str
    offer: str
    sku: str
    node_agent_sku_id: str
    os: str = "linux"
    version: str = "latest"
    containers: bool = False  # ships a Docker-compatible runtime for containerConfiguration

    def reference(self) -> dict[str, str]:
        return {
            "publisher": self.publisher,
            "offer": self.offer,
            "sku": self.sku,
            "version": self.version,
        }


CATALOG: dict[str, ImageAlias] = {
    "ubuntu-22.04": ImageAlias(
        "canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04"
    ),
    "ubuntu-24.04": ImageAlias(
        "canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04"
    ),
    # Container-ready images (Docker-compatible runtime preinstalled) for container pools.
    "ubuntu-22.04-containers": ImageAlias(
        "microsoft-dsvm", "ubuntu-hpc", "2204", "batch.node.ubuntu 22.04", containers=True
    ),
    "windows-2022": ImageAlias(
        "microsoftwindowsserver",
        "windowsserver",
        "2022-datacenter-core",
        "batch.node.windows amd64",
        os="windows",
    ),
}

#: Aliases that were in the catalog and whose node agent Azure Batch retired (Ubuntu
#: 20.04: pools can no longer be created with it), with the alias to use instead.
RETIRED: dict[str, tuple[str, str]] = {
    "ubuntu-20.04": ("ubuntu-22.04", "batch.node.ubuntu 20.04"),
    "ubuntu-20.04-containers": ("ubuntu-22.04-containers", "batch.node.ubuntu 20.04"),
}

DEFAULT_IMAGE = "ubuntu-22.04"
DEFAULT_CONTAINER_IMAGE = "ubuntu-22.04-containers"
_GALLERY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(galleries/[^/]+/images/[^/]+(/versions/[^/]+)?|images/[^/]+)$",
    re.IGNORECASE,
)
_REFERENCE_KEYS = {"publisher", "offer", "sku", "version", "node_agent_sku_id"}


def resolve_image(
    image: str | Mapping[str, Any] | None, *, containers: bool = False
) -> tuple[dict[str, str], str]:
    """(imageReference, nodeAgentSKUId) for ``[pool] image``.

    Accepts an alias, ``{publisher, offer, sku, version?, node_agent_sku_id?}``, or
    ``{gallery_image_id, node_agent_sku_id?}``. Without an image, a container pool gets a
    container-ready image and other pools Ubuntu 22.04.
    """
    if image is None or image == "":
        alias = CATALOG[DEFAULT_CONTAINER_IMAGE if containers else DEFAULT_IMAGE]
        return alias.reference(), alias.node_agent_sku_id
    if isinstance(image, str):
        found = CATALOG.get(image.lower())
        if found is None:
            raise UserError(f"[pool] image: {alias_error(image)}")
        return found.reference(), found.node_agent_sku_id
    if "gallery_image_id" in image:
        extra = set(image) - {"gallery_image_id", "node_agent_sku_id"}
        if extra:
            raise UserError(
                f"[pool] image: {sorted(extra)} cannot go with gallery_image_id; "
                "keep gallery_image_id and node_agent_sku_id"
            )
        gallery = str(image["gallery_image_id"])
        if not _GALLERY_ID.match(gallery):
            raise UserError(
                f"[pool] image.gallery_image_id: {gallery!r} is not an image resource id; use "
                "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/galleries/"
                "GALLERY/images/IMAGE[/versions/VERSION]"
            )
        agent = str(image.get("node_agent_sku_id") or CATALOG[DEFAULT_IMAGE].node_agent_sku_id)
        return {"virtualMachineImageId": gallery}, agent
    unknown = set(image) - _REFERENCE_KEYS
    missing = {"publisher", "offer", "sku", "node_agent_sku_id"} - set(image)
    if unknown or missing:
        raise UserError(
            f"[pool] image: {'unknown keys ' + str(sorted(unknown)) if unknown else ''}"
            f"{'; ' if unknown and missing else ''}"
            f"{'missing ' + str(sorted(missing)) if missing else ''}; an explicit image needs "
            "publisher, offer, sku, node_agent_sku_id (version optional)"
        )
    reference = {k: str(image[k]) for k in ("publisher", "offer", "sku")}
    reference["version"] = str(image.get("version") or "latest")
    return reference, str(image["node_agent_sku_id"])


def alias_error(name: str) -> str:
    """Why `name` is not an alias: retired (with its replacement), or unknown (with exactly
    the catalog's aliases: what `batchlaunch images` shows in its ALIAS column)."""
    if name.lower() in RETIRED:
        replacement, agent = RETIRED[name.lower()]
        return (
            f"alias {name!r} is retired: Azure Batch retired its node agent ({agent}); "
            f"use {replacement!r}"
        )
    return (
        f"unknown alias {name!r}; use one of {', '.join(sorted(CATALOG))} "
        "(see `batchlaunch images`), a {publisher, offer, sku, node_agent_sku_id} table or "
        '{gallery_image_id = "/subscriptions/..."}'
    )


def alias_for(reference: Mapping[str, Any], node_agent: str) -> str | None:
    """The catalog alias of a marketplace image, if it has one (for `batchlaunch images`)."""
    for name, alias in CATALOG.items():
        if (
            str(reference.get("publisher", "")).lower() == alias.publisher
            and str(reference.get("offer", "")).lower() == alias.offer.lower()
            and str(reference.get("sku", "")).lower() == alias.sku.lower()
            and node_agent.lower() == alias.node_agent_sku_id.lower()
        ):
            return name
    return None

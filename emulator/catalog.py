"""The supported-images catalog: current Batch marketplace images and their node agents."""

from __future__ import annotations

from typing import Any

_LINUX: list[tuple[str, str, str, str]] = [
    ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts", "batch.node.ubuntu 22.04"),
    ("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2", "batch.node.ubuntu 22.04"),
    ("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04"),
    ("canonical", "ubuntu-24_04-lts", "server-gen1", "batch.node.ubuntu 24.04"),
    ("microsoft-dsvm", "ubuntu-hpc", "2204", "batch.node.ubuntu 22.04"),
    ("microsoft-dsvm", "ubuntu-hpc", "2404", "batch.node.ubuntu 24.04"),
    ("debian", "debian-12", "12", "batch.node.debian 12"),
    ("debian", "debian-12", "12-gen2", "batch.node.debian 12"),
    ("almalinux", "almalinux-x86_64", "9-gen2", "batch.node.el 9"),
    ("almalinux", "almalinux-hpc", "9-hpc-gen2", "batch.node.el 9"),
    ("resf", "rockylinux-x86_64", "9-base", "batch.node.el 9"),
    ("microsoft-azure-batch", "ubuntu-server-container", "22-04-lts", "batch.node.ubuntu 22.04"),
]
_WINDOWS: list[tuple[str, str, str, str]] = [
    ("microsoftwindowsserver", "windowsserver", "2025-datacenter", "batch.node.windows amd64"),
    ("microsoftwindowsserver", "windowsserver", "2025-datacenter-core", "batch.node.windows amd64"),
    ("microsoftwindowsserver", "windowsserver", "2022-datacenter", "batch.node.windows amd64"),
    ("microsoftwindowsserver", "windowsserver", "2022-datacenter-core", "batch.node.windows amd64"),
    ("microsoftwindowsserver", "windowsserver", "2019-datacenter", "batch.node.windows amd64"),
    ("microsoftwindowsserver", "windowsserver", "2019-datacenter-core", "batch.node.windows amd64"),
]


def supported_images() -> list[dict[str, Any]]:
    """The `/supportedimages` list, in Batch's JSON shape."""
    images: list[dict[str, Any]] = []
    for os_type, rows in (("linux", _LINUX), ("windows", _WINDOWS)):
        for publisher, offer, sku, agent in rows:
            images.append(
                {
                    "nodeAgentSKUId": agent,
                    "imageReference": {
                        "publisher": publisher,
                        "offer": offer,
                        "sku": sku,
                        "version": "latest",
                    },
                    "osType": os_type,
                    "capabilities": ["DockerCompatible"] if os_type == "linux" else [],
                    "batchSupportEndOfLife": "2028-06-30T00:00:00Z",
                    "verificationType": "verified",
                }
            )
    return images


def node_agents() -> set[str]:
    return {row[3] for row in _LINUX + _WINDOWS}

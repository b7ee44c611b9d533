"""Well-known credentials and the knobs of one emulator instance.

Like Azurite's `devstoreaccount1`, the emulator ships a fixed, documented account and key so
that clients can be configured without a secret ever being generated or stored. The key is
*not* a secret: it only protects the loopback service from clients that were not told about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ACCOUNT = "devbatch"
# base64 of the ASCII text "batchlaunch-emulator-well-known-key-not-a-secret!!" (documented).
DEFAULT_KEY = "YmF0Y2hsYXVuY2gtZW11bGF0b3Itd2VsbC1rbm93bi1rZXktbm90LWEtc2VjcmV0ISE="
API_VERSION = "2025-06-01"
DEFAULT_HOST = "127.0.0.1"


@dataclass
class Settings:
    """Everything `emulator serve` can be told; defaults suit tests and the embedded daemon."""

    state_dir: Path
    host: str = DEFAULT_HOST
    port: int = 0
    account: str = DEFAULT_ACCOUNT
    key: str = DEFAULT_KEY
    fault_rate: float = 0.0
    throttle_rate: float = 0.0
    seed: int | None = None
    idle_timeout: float | None = None  # seconds without requests before a daemon exits
    time_scale: float = 1.0  # multiplies simulated delays (node boot, deletion)
    remote_login_port: int = 50000  # replaced by the SSH endpoint's port when it starts
    ssh_port: int = 0  # the SSH endpoint on 127.0.0.1 (emulator.sshd); 0 picks a free port
    preempt_rate: float = 0.0  # chance per scheduling of a low-priority node being preempted
    latency_ms: float = 0.0  # simulated network round trip added to every request
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def nodes_dir(self) -> Path:
        return self.state_dir / "nodes"

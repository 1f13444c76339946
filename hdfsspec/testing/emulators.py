"""GCS and Azure Blob emulators on loopback, as context managers.

* GCS: the ``gcp-storage-emulator`` package (``pip install gcp-storage-emulator``),
  read with gcsfs (``endpoint_url=..., token="anon"``).
* Azure Blob: Azurite from the npm registry (``npm install --prefix .emulators azurite@3``),
  read with adlfs and the emulator's well-known development account.

Each emulator runs as a child process bound to 127.0.0.1 on a free port, is
stopped on exit and, as a safety net, killed after ``lifetime`` seconds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "azurite", "find_azurite", "gcs_emulator"]

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# gcsfs probes the bucket type over gRPC and waits 60 s per call against an emulator
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (an error status is still an answer)
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"emulator did not answer {url} within {timeout} s")


@contextmanager
def _process(args: list[str], ready_url: str, lifetime: float, timeout: float) -> Iterator[None]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killer = threading.Timer(lifetime, proc.kill)
    killer.daemon = True
    killer.start()
    try:
        _wait_http(ready_url, proc, timeout)
        yield
    finally:
        killer.cancel()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def gcs_emulator(lifetime: float = 900.0, timeout: float = 30.0) -> Iterator[str]:
    """Run ``gcp-storage-emulator`` in memory on loopback; yield its endpoint URL."""
    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
    exe = exe or shutil.which("gcp-storage-emulator")
    if exe is None:
        raise FileNotFoundError("gcp-storage-emulator is not installed (pip install it)")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"]
    with _process(args, endpoint + "/storage/v1/b", lifetime, timeout):
        yield endpoint


def find_azurite() -> str | None:
    """Locate ``azurite-blob``: $HDFSSPEC_AZURITE, ./.emulators, or the PATH."""
    candidates = [os.environ.get("HDFSSPEC_AZURITE")]
    for root in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        candidates.append(str(root / ".emulators" / "node_modules" / ".bin" / "azurite-blob"))
    candidates.append(shutil.which("azurite-blob"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@contextmanager
def azurite(lifetime: float = 900.0, timeout: float = 60.0) -> Iterator[str]:
    """Run Azurite's blob service in memory on loopback; yield its connection string."""
    exe = find_azurite()
    if exe is None:
        raise FileNotFoundError(
            "azurite-blob not found: npm install --no-save --prefix .emulators azurite@3"
        )
    port = _free_port()
    args = [
        exe,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--silent",
        "--loose",
    ]
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    with _process(args, endpoint + "?comp=list", lifetime, timeout):
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )

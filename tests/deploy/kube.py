"""A real Kubernetes API server for the chart's tests: etcd and kube-apiserver on
loopback, built from their Go modules (lakehouse_testing.devtools).

Authentication is a static token kept in a 0600 file, service-account tokens are signed
with a key made for the session, and the API is served over TLS from a CA of the
session's own; the kubeconfig that helm reads says all this. There is no kubelet nor
controller manager: objects are validated, admitted and stored, and pods never run.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lakehouse_testing.devtools import etcd, kube_apiserver

from lakehouse.private_files import write_private
from lakehouse.tls import ca_path, server_certificate

# Below Linux's ephemeral range, clear of the test stack's block (21000-21300) and the
# benchmarks' (22000-).
ETCD_CLIENT_PORT = 23000
ETCD_PEER_PORT = 23001
API_PORT = 23002
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class ApiServer:
    """What a client needs: the kubeconfig for helm, the URL, CA and token for requests."""

    kubeconfig: Path
    url: str
    ca: Path
    token: str
    home: Path

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def helm_env(self) -> dict[str, str]:
        """helm's environment: this server, and helm's own state inside the session."""
        state = self.home / "helm"
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.home),
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": str(state / "cache"),
            "HELM_CONFIG_HOME": str(state / "config"),
            "HELM_DATA_HOME": str(state / "data"),
        }


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _service_account_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def _kubeconfig(path: Path, url: str, ca: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    write_private(path, json.dumps(config))


def _spawn(command: list[str], log: TextIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@contextmanager
def _process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("w") as log:
        process = _spawn(command, log)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(api: ApiServer, processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    reason = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                tails = "\n".join(p.read_text()[-3000:] for p in sorted(logs.glob("*.log")))
                raise RuntimeError(f"{process.args[0]} exited ({process.returncode}):\n{tails}")
        try:
            request = urllib.request.Request(f"{api.url}/readyz")
            request.add_header("Authorization", f"Bearer {api.token}")
            context = ssl.create_default_context(cafile=str(api.ca))
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            reason = str(exc)
        time.sleep(1)
    raise RuntimeError(f"kube-apiserver not ready within {START_TIMEOUT:.0f} s: {reason}")


@contextmanager
def start_api_server(cache_dir: Path, home: Path) -> Iterator[ApiServer]:
    """etcd and kube-apiserver for as long as the block runs; both stopped after it."""
    busy = [p for p in (ETCD_CLIENT_PORT, ETCD_PEER_PORT, API_PORT) if not _free(p)]
    if busy:
        raise RuntimeError(f"ports {busy} are taken: another API server of the tests runs?")
    etcd_binary, apiserver_binary = etcd(cache_dir), kube_apiserver(cache_dir)
    home.chmod(0o700)
    token = secrets.token_urlsafe(32)
    tokens = home / "tokens.csv"
    write_private(tokens, f"{token},admin,admin,system:masters\n")
    service_account_key = home / "service-account.key"
    _service_account_key(service_account_key)
    serving = server_certificate(
        home, home / "apiserver.pem", "127.0.0.1", ["127.0.0.1", "localhost"]
    )
    url = f"https://127.0.0.1:{API_PORT}"
    api = ApiServer(home / "kubeconfig", url, ca_path(home), token, home)
    _kubeconfig(api.kubeconfig, url, api.ca, token)
    etcd_client, etcd_peer = (
        f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
        f"http://127.0.0.1:{ETCD_PEER_PORT}",
    )
    etcd_command = [
        str(etcd_binary), "--name", "test", "--data-dir", str(home / "etcd"),
        "--listen-client-urls", etcd_client, "--advertise-client-urls", etcd_client,
        "--listen-peer-urls", etcd_peer, "--initial-advertise-peer-urls", etcd_peer,
        "--initial-cluster", f"test={etcd_peer}", "--log-level", "warn",
    ]  # fmt: skip
    apiserver_command = [
        str(apiserver_binary), "--etcd-servers", etcd_client,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
        "--secure-port", str(API_PORT), "--cert-dir", str(home / "certs"),
        "--tls-cert-file", str(serving), "--tls-private-key-file", str(serving),
        "--token-auth-file", str(tokens), "--authorization-mode", "RBAC",
        "--anonymous-auth=false",
        "--service-account-issuer", "https://kubernetes.default.svc",
        "--service-account-key-file", str(service_account_key),
        "--service-account-signing-key-file", str(service_account_key),
        "--service-cluster-ip-range", "10.96.0.0/16",
        # One client and a few hundred objects: no fairness queues nor watch caches.
        "--enable-priority-and-fairness=false", "--watch-cache=false", "--profiling=false",
    ]  # fmt: skip
    with ExitStack() as stack:
        etcd_process = stack.enter_context(_process(etcd_command, home / "etcd.log"))
        apiserver_process = stack.enter_context(_process(apiserver_command, home / "apiserver.log"))
        _wait_ready(api, [etcd_process, apiserver_process], home)
        yield api

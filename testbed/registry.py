"""The CNCF distribution registry (Debian `docker-registry`) on a free 127.0.0.1 port, and
`push`, which copies an OCI layout into it with skopeo.

- `Registry`: a config file and a filesystem storage directory of its own under `root`;
  plain HTTP, optionally `auth: token:` (tests/registry's token server) or TLS (a
  `KeyPair` from `make_keypair`).
- `push`: `skopeo copy` an OCI layout into a registry (OCI or Docker schema 2 form;
  `--all` for an index of platforms).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from testbed.process import HOST, ServerProcess, http_get
from testbed.tools import require_tool, run

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# ---------------------------------------------------------------------------------------
# Keys and certificates (cryptography)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class KeyPair:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def cert_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.cert.public_bytes(serialization.Encoding.DER)


def make_keypair(
    directory: Path,
    name: str,
    *,
    common_name: str,
    issuer: KeyPair | None = None,
    ca: bool = False,
    ip_sans: Sequence[str] = (),
) -> KeyPair:
    """An RSA key and a certificate (self-signed, or signed by `issuer`), written as PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip_sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
            ),
            critical=False,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(key, cert, key_path, cert_path)


# ---------------------------------------------------------------------------------------
# The distribution registry
# ---------------------------------------------------------------------------------------


def reference(host: str, name: str, ref: str = "latest", *, transport: bool = True) -> str:
    """`docker://HOST/NAME:TAG`, or `HOST/NAME@sha256:...` when `ref` is a digest; without
    `transport`, no `docker://`."""
    sep = "@" if ":" in ref else ":"
    text = f"{host}/{name}{sep}{ref}"
    return f"docker://{text}" if transport else text


class Registry(ServerProcess):
    """`docker-registry serve CONFIG` on a free 127.0.0.1 port, files under `root`.

    `auth`: the config's `auth:` mapping (e.g. `{"token": {...}}`); `tls`: a KeyPair the
    registry serves HTTPS with.
    """

    what = "docker-registry"

    def __init__(
        self, root: Path, *, auth: dict[str, Any] | None = None, tls: KeyPair | None = None
    ) -> None:
        self.binary = require_tool("docker-registry")
        super().__init__(root, "registry.log")
        self.auth = auth
        self.tls = tls

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of a reference."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def ref(self, name: str, ref: str = "latest", *, transport: bool = True) -> str:
        """`docker://127.0.0.1:PORT/NAME:TAG` (or `@sha256:...` when `ref` is a digest)."""
        return reference(self.host, name, ref, transport=transport)

    # -- life -----------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        http_cfg: dict[str, Any] = {"addr": self.host, "secret": secrets.token_hex(16)}
        if self.tls:
            http_cfg["tls"] = {
                "certificate": str(self.tls.cert_path),
                "key": str(self.tls.key_path),
            }
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_cfg,
        }
        if self.auth:
            cfg["auth"] = self.auth
        return cfg

    def _argv(self) -> list[str]:
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        # JSON is YAML: no YAML library needed to write the config.
        config.write_text(json.dumps(self._config(), indent=2))
        return [self.binary, "serve", str(config)]

    def _ready(self) -> bool:
        ctx = ssl._create_unverified_context() if self.tls else None
        status, _, _ = http_get(f"{self.url}/v2/", timeout=2, context=ctx)
        return status in (200, 401)

    # -- inspection -----------------------------------------------------------------------

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        """One request straight to the registry (no auth): (status, headers, body)."""
        ctx = ssl._create_unverified_context() if self.tls else None
        return http_get(f"{self.url}{path}", headers, method=method, context=ctx)

    def manifest(self, name: str, ref: str, accept: str = OCI_MANIFEST) -> dict[str, Any] | None:
        """The manifest `name:ref` (or `@digest`) as `accept` asks for it; None if absent."""
        status, _, body = self.get(f"/v2/{name}/manifests/{ref}", {"Accept": accept})
        if status == 404:
            return None
        assert status == 200, f"{name}:{ref}: the registry answered {status}: {body[:300]!r}"
        manifest: dict[str, Any] = json.loads(body)
        return manifest


# ---------------------------------------------------------------------------------------
# Pushing images with skopeo
# ---------------------------------------------------------------------------------------


class LayoutImage(Protocol):
    """An image in an OCI layout that says where: `ref` = `DIR:TAG`."""

    @property
    def ref(self) -> str: ...


def push(
    source: str | LayoutImage,
    dest: str,
    *,
    fmt: str = "oci",
    all_platforms: bool = False,
    creds: str | None = None,
) -> str:
    """`skopeo copy [--format v2s2] [--all] SOURCE docker://DEST`; returns the pushed
    manifest's digest (as `skopeo --digestfile` reports it).

    `source`: `oci:DIR:TAG`, or an image object with `.ref` = `DIR:TAG` (UmociImage,
    HandmadeImage). `dest`: `[docker://]HOST/NAME:TAG`. `fmt`: "oci" or "v2s2".
    """
    skopeo = require_tool("skopeo")
    src = source if isinstance(source, str) else f"oci:{source.ref}"
    if not dest.startswith("docker://"):
        dest = f"docker://{dest}"
    if fmt not in ("oci", "v2s2"):
        raise ValueError(f"unknown manifest format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="push-") as tmp:
        digestfile = Path(tmp) / "digest"
        cmd = [skopeo, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        cmd += ["--format", fmt, "--digestfile", str(digestfile)]
        if all_platforms:
            cmd.append("--all")
        if creds:
            cmd += ["--dest-creds", creds]
        run([*cmd, src, dest], timeout=120)
        return digestfile.read_text().strip()

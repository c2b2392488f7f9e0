"""Bring-your-own CA material for the hostile-input cases: good roots and intermediates, and
every way a CA Secret can be wrong."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey, *, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey


def make_cert(
    subject: str,
    *,
    issuer: Issued | None = None,
    ca: bool = True,
    key: PrivateKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_cert_sign: bool = True,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> Issued:
    now = datetime.now(UTC)
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign and ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    cert = builder.sign(signer, hash_algorithm or hashes.SHA256())  # type: ignore[arg-type]
    return Issued(cert, key)


def good_chain() -> tuple[Issued, Issued]:
    """(root, intermediate)"""
    root = make_cert("byo root")
    return root, make_cert("byo intermediate", issuer=root)


def secret_data(tls_crt: bytes, tls_key: bytes, ca_crt: bytes | None) -> dict[str, bytes]:
    data = {"tls.crt": tls_crt, "tls.key": tls_key}
    if ca_crt is not None:
        data["ca.crt"] = ca_crt
    return data


def sha1_intermediate(root: Issued) -> Issued:
    """cryptography refuses to sign with SHA-1; openssl still does (as old CAs did)."""
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "root.pem").write_bytes(pem(root.cert))
        (d / "root.key").write_bytes(key_pem(root.key))
        (d / "key.pem").write_bytes(key_pem(key))
        (d / "ext").write_text(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        )
        run = [
            "openssl",
            "req",
            "-new",
            "-key",
            str(d / "key.pem"),
            "-subj",
            "/CN=sha1 intermediate",
        ]
        csr = subprocess.run([*run, "-out", str(d / "csr")], capture_output=True, check=True)
        del csr
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-sha1",
                "-in",
                str(d / "csr"),
                "-CA",
                str(d / "root.pem"),
                "-CAkey",
                str(d / "root.key"),
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                str(d / "ext"),
                "-out",
                str(d / "cert.pem"),
            ],
            capture_output=True,
            check=True,
        )
        cert = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())
    return Issued(cert, key)


def bad_ca_secrets() -> dict[str, tuple[dict[str, bytes], str]]:
    """case id -> (Secret data, substring the CAInvalid message must contain)"""
    root, inter = good_chain()
    other = make_cert("someone else's intermediate", issuer=root)
    leaf = make_cert("server.example.org", issuer=root, ca=False)
    now = datetime.now(UTC)
    expired = make_cert(
        "expired intermediate",
        issuer=root,
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    future = make_cert("future intermediate", issuer=root, not_before=now + timedelta(days=2))
    stranger_root = make_cert("stranger root")
    no_sign = make_cert("no keyCertSign", issuer=root, key_cert_sign=False)
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_root = make_cert("rsa-1024 root", key=weak_key)
    sha1 = sha1_intermediate(root)
    one = pem(inter.cert)
    root_pem = pem(root.cert)
    many = b"".join(pem(make_cert(f"filler {i}", issuer=root).cert) for i in range(40))
    huge = b"-----BEGIN CERTIFICATE-----\n" + b"QUJD" * 200_000 + b"\n-----END CERTIFICATE-----\n"
    return {
        "key-mismatch": (secret_data(one, key_pem(other.key), root_pem), "does not match"),
        "non-ca-cert": (secret_data(pem(leaf.cert), key_pem(leaf.key), root_pem), "not a CA"),
        "expired-cert": (secret_data(pem(expired.cert), key_pem(expired.key), root_pem), "expired"),
        "not-yet-valid": (
            secret_data(pem(future.cert), key_pem(future.key), root_pem),
            "not valid until",
        ),
        "broken-chain": (
            secret_data(one, key_pem(inter.key), pem(stranger_root.cert)),
            "neither a root in ca.crt nor signed by one",
        ),
        "chain-without-root": (secret_data(one, key_pem(inter.key), None), "not self-signed"),
        "huge-pem": (secret_data(huge, key_pem(inter.key), root_pem), "cannot parse"),
        "too-many-certs": (
            secret_data(one + many, key_pem(inter.key), root_pem),
            "more than the limit",
        ),
        "garbage-bytes": (
            secret_data(b"\x00\xff\x13garbage\x89PNG", b"\x00\x01binary", root_pem),
            "no '-----BEGIN CERTIFICATE-----' block",
        ),
        "rsa-1024": (
            secret_data(pem(weak_root.cert), key_pem(weak_key), None),
            "1024 bits is too weak",
        ),
        "encrypted-key": (
            secret_data(one, key_pem(inter.key, password=b"hunter2"), root_pem),
            "encrypted",
        ),
        "key-in-cert-slot": (
            secret_data(key_pem(inter.key), key_pem(inter.key), root_pem),
            "holds a private key",
        ),
        "no-keycertsign": (
            secret_data(pem(no_sign.cert), key_pem(no_sign.key), root_pem),
            "keyCertSign",
        ),
        "sha1-signature": (
            secret_data(pem(sha1.cert), key_pem(sha1.key), root_pem),
            "sha1",
        ),
    }

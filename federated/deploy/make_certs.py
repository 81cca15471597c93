#!/usr/bin/env python3
"""Create the TLS material of a FLEEG deployment and one SuperNode key pair per site.

    python make_certs.py OUT --host superlink.example.org [--host 10.0.0.5] --site a --site b

writes (and never overwrites):

    OUT/ca.crt, OUT/ca.key          a private certificate authority (EC P-384, 10 years)
    OUT/server.pem, OUT/server.key  the SuperLink's TLS certificate, signed by the CA, valid for
                                    every --host (DNS name or IP) plus localhost / 127.0.0.1
    OUT/sites/<site>.key            the site's SuperNode authentication key (EC P-384, OpenSSH
                                    private-key format, mode 600): stays at the site
    OUT/sites/<site>.pub            its public key (OpenSSH format): registered on the SuperLink
                                    with `flwr supernode register`

Only the CA certificate (not its key) and each site's own private key travel to a site. Uses the
`cryptography` package (installed with flwr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists; certificates and keys are never overwritten.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    seen = set()
    for h in ["localhost", "127.0.0.1", "::1", *hosts]:
        if h in seen:
            continue
        seen.add(h)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def make_ca(out: Path, *, days: int = 3650):
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bcikit FLEEG CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384()))
    _write(out / "ca.key", _pem_key(key), private=True)
    _write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(out: Path, ca_key, ca_cert, hosts: list[str], *, days: int = 825) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cn = hosts[0] if hosts else "localhost"
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    _write(out / "server.key", _pem_key(key), private=True)
    _write(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM))


def make_site_key(out: Path, site: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", site):
        raise ValueError(f"Site name {site!r} must be a plain file name.")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    _write(out / "sites" / f"{site}.key", private, private=True)
    _write(out / "sites" / f"{site}.pub", public + f" {site}\n".encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (new files only)")
    p.add_argument("--host", action="append", default=[],
                   help="DNS name or IP the SuperNodes use to reach the SuperLink (repeatable)")
    p.add_argument("--site", action="append", default=[], help="a site name (repeatable)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if not (out / "ca.crt").exists():
            ca_key, ca_cert = make_ca(out)
            make_server_cert(out, ca_key, ca_cert, args.host)
        for site in args.site:
            make_site_key(out, site)
    except (FileExistsError, ValueError) as err:
        print(f"make_certs: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote TLS material to {out} and {len(args.site)} site key pair(s) to {out / 'sites'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

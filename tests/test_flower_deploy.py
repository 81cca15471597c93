"""The deployment scripts of ``federated/deploy``: certificates and site keys.

The loopback deployment itself (one SuperLink with TLS and SuperNode authentication, one
SuperNode per site as separate processes, keys registered with ``flwr supernode register``,
``flwr run`` for two rounds: ``federated/deploy/loopback.py``) is
``test_loopback_deployment_completes_two_rounds`` in ``tests/test_flower_app.py``: it runs in
the background there while the in-process tests run, as it mostly waits on process start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
pytest.importorskip("flwr")
x509 = pytest.importorskip("cryptography.x509")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "federated" / "deploy"


def test_make_certs_chain_and_keys(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = tmp_path / "certs"
    r = subprocess.run([sys.executable, str(DEPLOY / "make_certs.py"), str(out), "--host",
                        "10.1.2.3", "--host", "link.example.org", "--site", "a", "--site", "b"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # raises when the chain is broken
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "link.example.org" in san.get_values_for_type(x509.DNSName)
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} >= {"10.1.2.3",
                                                                         "127.0.0.1"}
    for site in ("a", "b"):
        key = serialization.load_ssh_private_key((out / "sites" / f"{site}.key").read_bytes(),
                                                 password=None)
        pub = serialization.load_ssh_public_key((out / "sites" / f"{site}.pub").read_bytes())
        assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp384r1"
        assert key.public_key().public_numbers() == pub.public_numbers()
        assert (out / "sites" / f"{site}.key").stat().st_mode & 0o077 == 0
    # never overwritten
    r = subprocess.run([sys.executable, str(DEPLOY / "make_certs.py"), str(out), "--site", "a"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "never overwritten" in r.stderr

"""The terminal's TLS identity, made on the host (`make` does it once).

A private "Synqpay Root CA" (named like the vendor's, but ours) signs one
server certificate (EC P-256, SAN 127.0.0.1 and localhost plus any --san).
MicroPython's TLS reads DER only, so everything is written as DER:

    build/tls/ca.der      the root: what a register pins (or trusts)
    build/tls/cert.der    the terminal's certificate   } copied to the board's
    build/tls/key.der     its private key (PKCS#8)     } /tls/ by the deploy step

Nothing here is secret beyond a test bench: the key is for a stand-in.
    python tools/understudy/tls.py [--san 192.168.1.42 ...] [--force]
"""
import argparse
import datetime
import ipaddress
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from understudy import paths

FILES = ("ca.der", "cert.der", "key.der")


def make(out=paths.TLS, sans=(), force=False):
    """Write the three files unless they exist; returns the directory."""
    if not force and all(os.path.exists(os.path.join(out, f)) for f in FILES):
        return out
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Synqpay Root CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Understudy test terminal")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for s in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            names.append(x509.DNSName(s))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "understudy")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(out, exist_ok=True)
    der = serialization.Encoding.DER
    blobs = (ca.public_bytes(der), cert.public_bytes(der),
             key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for name, blob in zip(FILES, blobs):
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/understudy/tls.py", description=__doc__.split("\n")[0])
    p.add_argument("--san", action="append", default=[], metavar="IP_OR_NAME",
                   help="also valid for this address (the board's IP), repeatable")
    p.add_argument("--force", action="store_true", help="make new ones even if they exist")
    p.add_argument("--out", default=paths.TLS, help="directory (default %(default)s)")
    a = p.parse_args(argv)
    out = make(a.out, a.san, a.force or bool(a.san))
    print("tls: %s/{%s}" % (os.path.relpath(out), ",".join(FILES)))


if __name__ == "__main__":
    main()

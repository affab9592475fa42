#!/usr/bin/env python3
"""Secret-leak sweep over the evidence the e2e suite left (issue #6 item 5).

Every control plane the suite started left, under target/e2e-artifacts/<dir>/, the controller
logs, the Events and every Issuer/ClusterIssuer/CertificateRequest/Certificate as JSON, and the
credential values its Secrets held (secret-values.txt; see tests/e2e/src/sweep.rs). This script
fails when any of that evidence contains:
  - any credential value from any run (passwords, client secrets, tokens, Basic header payloads),
  - a JWT (every token the simulator, its IdP, Entra or GCE endpoints mint is one),
  - an Authorization header value ("Bearer <x>" / "Basic <x>").

Usage: leak_sweep.py [--self-test] [ARTIFACTS_DIR]
Prints "<files> passed, 0 failed" on success (counted by tests/run-all.sh).
"""
import os
import re
import sys
import tempfile

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
AUTH_HEADER = re.compile(rb"\b(Bearer|Basic) ([A-Za-z0-9+/=._~-]{12,})")
VALUES_FILE = "secret-values.txt"


def load_values(root):
    values = set()
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d, VALUES_FILE)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                values.update(v for v in f.read().split(b"\n") if len(v.strip()) >= 6)
    return values


def evidence(root):
    for d in sorted(os.listdir(root)):
        full = os.path.join(root, d)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            if name != VALUES_FILE:
                yield os.path.join(full, name)


def scan(root):
    """Returns (files, bytes, planes, values, findings)."""
    values = load_values(root)
    findings = []
    files = total = 0
    planes = sum(1 for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for path in evidence(root):
        with open(path, "rb") as f:
            data = f.read()
        files += 1
        total += len(data)
        for v in values:
            if v in data:
                findings.append(f"{path}: contains a credential value ({v[:3].decode(errors='replace')}…)")
        for m in JWT.finditer(data):
            findings.append(f"{path}: contains a JWT ({m.group(0)[:12].decode()}…)")
        for m in AUTH_HEADER.finditer(data):
            if m.group(1) == b"Basic" and not re.search(rb"[0-9=+/]", m.group(2)):
                continue  # prose ("Basic authentication"), not a header value
            findings.append(f"{path}: contains an Authorization header value ({m.group(1).decode()} …)")
    return files, total, planes, len(values), findings


def self_test():
    """The sweep must catch each kind of leak and pass clean evidence, or it proves nothing."""
    jwt = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpc3N1ZXItY2xpZW50In0.c2lnbmF0dXJl"
    cases = {
        "password": b'{"msg":"login failed for command-issuer with leaky-pass-42"}',
        "jwt": b"token " + jwt,
        "bearer": b"Authorization: Bearer abcdefghijklmnop",
        "basic": b"header Basic Y29tbWFuZC1pc3N1ZXI6bGVha3k=",
        "clean": b'{"msg":"using Basic authentication; issuer is not ready","secret":"command-secret"}',
    }
    for name, content in cases.items():
        with tempfile.TemporaryDirectory() as root:
            plane = os.path.join(root, "cp")
            os.makedirs(plane)
            with open(os.path.join(plane, VALUES_FILE), "wb") as f:
                f.write(b"leaky-pass-42\n")
            with open(os.path.join(plane, "command-issuer-1.log"), "wb") as f:
                f.write(content)
            findings = scan(root)[4]
            if (name == "clean") == bool(findings):
                sys.exit(f"leak sweep self-test failed for case {name}: {findings}")
    print(f"leak sweep self-test: {len(cases)} planted cases classified correctly")


def main(argv):
    if "--self-test" in argv:
        self_test()
        argv = [a for a in argv if a != "--self-test"]
    root = argv[0] if argv else os.path.join(os.path.dirname(__file__), "../../target/e2e-artifacts")
    if not os.path.isdir(root):
        sys.exit(f"leak sweep: no evidence at {root} (run the e2e suite first)")
    files, total, planes, values, findings = scan(root)
    if planes == 0 or files == 0 or values == 0:
        sys.exit(f"leak sweep: too little evidence ({planes} control planes, {files} files, {values} credential values)")
    print(f"leak sweep: {files} files ({total / 1e6:.1f} MB) from {planes} control planes checked "
          f"for {values} credential values, JWTs and Authorization headers")
    if findings:
        for f in findings[:50]:
            print("LEAK", f)
        sys.exit(f"leak sweep: {len(findings)} leaks found")
    print(f"{files} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1:])

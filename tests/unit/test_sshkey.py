"""The SSH public key parser against keys the real `ssh-keygen` makes, and blobs built by hand for what
it no longer makes (DSA) or never writes (a type the blob contradicts, trailing bytes)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.core.errors import InputFileError, PolicyError
from gateway.core.sshkey import MAX_SSH_KEY_BYTES, parse_ssh_key

SSH_KEYGEN = shutil.which("ssh-keygen")


def keygen(folder: Path, kind: str, bits: int | None = None, name: str = "key") -> Path:
    """A new key pair made by the real ssh-keygen; return the private key's path (the .pub is beside it)."""
    assert SSH_KEYGEN, "ssh-keygen is missing: scripts/_setup.sh installs openssh-client"
    path = folder / name
    size = ["-b", str(bits)] if bits else []
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, *size, "-N", "", "-C", "officer@laptop", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def keygen_fingerprint(pub: Path) -> str:
    """The fingerprint `ssh-keygen -lf` prints (its second field)."""
    assert SSH_KEYGEN
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def mpint(value: int) -> bytes:
    return string(value.to_bytes(value.bit_length() // 8 + 1, "big"))  # the leading 0 keeps it positive


def line(kind: str, blob: bytes, comment: str = "") -> bytes:
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip().encode() + b"\n"


@pytest.mark.parametrize(
    ("kind", "bits", "expect_bits"),
    [
        ("ed25519", None, 256),
        ("ecdsa", 256, 256),
        ("ecdsa", 384, 384),
        ("ecdsa", 521, 521),
        ("rsa", 3072, 3072),
        ("rsa", 4096, 4096),
    ],
)
def test_keys_ssh_keygen_makes_are_accepted_with_its_fingerprint(
    tmp_path: Path, kind: str, bits: int | None, expect_bits: int
) -> None:
    pub = keygen(tmp_path, kind, bits).with_suffix(".pub")
    text = pub.read_text()
    key = parse_ssh_key(pub.read_bytes(), str(pub))
    assert key.fingerprint == keygen_fingerprint(pub)
    assert key.bits == expect_bits
    assert key.line == " ".join(text.split()[:2])  # normalised: the comment is dropped
    assert "officer@laptop" not in key.line
    # the normalised line is itself a key ssh-keygen reads, with the same fingerprint
    again = tmp_path / "again.pub"
    again.write_text(key.line + "\n")
    assert keygen_fingerprint(again) == key.fingerprint


def test_a_short_rsa_key_is_refused_naming_its_bits(tmp_path: Path) -> None:
    pub = keygen(tmp_path, "rsa", 2048).with_suffix(".pub")
    with pytest.raises(PolicyError, match=r"RSA key of 2048 bits: RSA keys need at least 3072 bits"):
        parse_ssh_key(pub.read_bytes(), str(pub))


def test_a_dsa_key_is_refused() -> None:
    # OpenSSH 9.x no longer makes DSA keys: a well-formed ssh-dss blob (p, q, g, y) built by hand
    p, q, g, y = (1 << 1023) | 1, (1 << 159) | 1, 2, 3
    blob = string(b"ssh-dss") + mpint(p) + mpint(q) + mpint(g) + mpint(y)
    with pytest.raises(PolicyError, match=r"is a DSA key \(ssh-dss\): DSA keys are refused"):
        parse_ssh_key(line("ssh-dss", blob, "old@box"), "old.pub")


def test_a_private_key_is_refused_as_one(tmp_path: Path) -> None:
    private = keygen(tmp_path, "ed25519")
    with pytest.raises(InputFileError, match=r"is a private key: give the \.pub"):
        parse_ssh_key(private.read_bytes(), str(private))


def test_options_before_the_key_are_refused(tmp_path: Path) -> None:
    pub = keygen(tmp_path, "ed25519").with_suffix(".pub")
    data = b'command="/bin/sh",no-pty ' + pub.read_bytes()
    with pytest.raises(InputFileError, match=r"starts with options .*the register holds a bare key"):
        parse_ssh_key(data, "opts.pub")


def test_two_keys_in_one_file_are_refused(tmp_path: Path) -> None:
    one = keygen(tmp_path, "ed25519", name="one").with_suffix(".pub").read_bytes()
    two = keygen(tmp_path, "ed25519", name="two").with_suffix(".pub").read_bytes()
    with pytest.raises(InputFileError, match=r"holds 2 key lines: give exactly one"):
        parse_ssh_key(one + two, "both.pub")


def test_comments_and_blank_lines_around_the_one_key_are_fine(tmp_path: Path) -> None:
    pub = keygen(tmp_path, "ed25519").with_suffix(".pub")
    key = parse_ssh_key(b"# Karen's laptop\n\n" + pub.read_bytes() + b"\n\n", "k.pub")
    assert key.fingerprint == keygen_fingerprint(pub)


def test_a_type_the_blob_contradicts_is_refused(tmp_path: Path) -> None:
    ed = keygen(tmp_path, "ed25519").with_suffix(".pub").read_text().split()
    with pytest.raises(InputFileError, match=r"says 'ssh-rsa' but the key inside is 'ssh-ed25519'"):
        parse_ssh_key(f"ssh-rsa {ed[1]}\n".encode(), "k.pub")
    ec = keygen(tmp_path, "ecdsa", 256, name="ec").with_suffix(".pub").read_text().split()
    with pytest.raises(InputFileError, match=r"says 'ecdsa-sha2-nistp384' but the key inside"):
        parse_ssh_key(f"ecdsa-sha2-nistp384 {ec[1]}\n".encode(), "k.pub")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "holds 0 key lines"),
        (b"hello world\n", "is not an SSH public key line"),
        (b"ssh-ed25519\n", "no key after it"),
        (b"ssh-ed25519 not*base64\n", "not valid base64"),
        (line("ssh-ed25519", string(b"ssh-ed25519") + string(b"\x01" * 31)), "an Ed25519 key is 32 bytes"),
        (line("ssh-ed25519", string(b"ssh-ed25519") + string(b"\x01" * 32) + b"xx"), "truncated or has extra"),
        (line("ssh-ed25519", string(b"ssh-ed25519")[:-2]), "truncated or has extra"),
        (line("ssh-ed25519", string(b"ssh-ed25519") + b"\xff\xff\xff\xff"), "truncated or has extra"),
        ("ssh-ed25519 AAAA é\n".encode(), "is not text"),
        (b"---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----\n", "ssh-keygen -i -f"),
        (b"ssh-ed25519-cert-v01@openssh.com AAAA\n", "an SSH certificate"),
        (b"x" * (MAX_SSH_KEY_BYTES + 1), "an SSH public key file is one line of a few KB"),
    ],
)
def test_malformed_files_are_refused_naming_the_rule(data: bytes, says: str) -> None:
    with pytest.raises((InputFileError, PolicyError), match=says) as refused:
        parse_ssh_key(data, "officer.pub")
    assert "'officer.pub'" in refused.value.message


def test_a_weak_rsa_exponent_or_a_malformed_point_is_refused() -> None:
    modulus = (1 << 3071) | 1
    with pytest.raises(InputFileError, match="not a valid RSA key"):
        parse_ssh_key(line("ssh-rsa", string(b"ssh-rsa") + mpint(2) + mpint(modulus)), "k.pub")
    point = b"\x04" + b"\x01" * 63  # one byte short of nistp256's 65
    blob = string(b"ecdsa-sha2-nistp256") + string(b"nistp256") + string(point)
    with pytest.raises(InputFileError, match="ECDSA point is malformed"):
        parse_ssh_key(line("ecdsa-sha2-nistp256", blob), "k.pub")


def test_security_keys_are_accepted_with_their_application(tmp_path: Path) -> None:
    # no FIDO token here: the blobs ssh-keygen -t ed25519-sk / ecdsa-sk write, built field by field
    ed = string(b"sk-ssh-ed25519@openssh.com") + string(b"\x07" * 32) + string(b"ssh:")
    key = parse_ssh_key(line("sk-ssh-ed25519@openssh.com", ed, "token"), "sk.pub")
    assert (key.type, key.bits) == ("sk-ssh-ed25519@openssh.com", 256)
    pub = tmp_path / "sk.pub"
    pub.write_text(key.line + "\n")
    assert keygen_fingerprint(pub) == key.fingerprint  # ssh-keygen reads it as the same key
    ec = string(b"sk-ecdsa-sha2-nistp256@openssh.com") + string(b"nistp256") + string(b"\x04" + b"\x02" * 64)
    key = parse_ssh_key(line("sk-ecdsa-sha2-nistp256@openssh.com", ec + string(b"ssh:")), "sk.pub")
    assert key.bits == 256
    with pytest.raises(InputFileError, match="application must start with 'ssh:'"):
        parse_ssh_key(line("sk-ssh-ed25519@openssh.com", ed[: -len(string(b"ssh:"))] + string(b"web:")), "sk.pub")

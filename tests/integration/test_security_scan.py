"""The repository itself: no shell, no pickle, no committed secrets or keys.

Scans every file git tracks or would track (tracked + untracked, not ignored), so a
secret about to be committed fails the suite too. Patterns are assembled from pieces so
this file does not match itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

SELF = Path(__file__).resolve()
TEXT_LIMIT = 2_000_000

SHELL = re.compile(r"shell\s*=\s*True" + r"|\bos\.(system|popen)\s*\(")
UNSAFE_DESERIALISE = re.compile(
    r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|joblib|shelve|marshal)\b"
    r"|allow_pickle\s*=\s*True|\bread_pickle\s*\(|\btorch\.load\s*\("
    r"|\byaml\.load\s*\((?![^)]*SafeLoader)|\bunsafe_load\s*\(|safe_mode\s*=\s*False",
    re.M,
)
PRIVATE_KEY = re.compile("-----BEGIN ([A-Z]+ )?" + "PRIVATE KEY-----")
TOKENS = re.compile(r"\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}"
                    r"|\bsk-[A-Za-z0-9]{32,}\b")
KEY_FILES = re.compile(r"\.(pem|key|p12|pfx|jks|keystore|truststore|kdb|der)$|(^|/)id_(rsa|dsa|ecdsa|ed25519)$"
                       r"|(^|/)\.env\.secrets$|(^|/)credentials(\.json)?$", re.I)
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b[\w.-]*(pass(word|wd)?|secret|token|api[_-]?key)[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"'#,}\]]*)")
PY_SECRET_LITERAL = re.compile(r"(?i)\b\w*(password|passwd|secret|token|api_?key)\w*\s*=\s*[\"'](?P<value>[^\"']{4,})[\"']")
PLACEHOLDER = re.compile(r"^(\$|<|\{|%|\(|\*|changeme$|example|dummy|placeholder|redacted|xxx)", re.I)
NOT_A_VALUE = {"", "false", "true", "null", "none", "''", '""', "{", "[", "|", ">", "str", "optional[str]"}


def repo_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO_ROOT, capture_output=True, check=True).stdout
    files = []
    for raw in out.split(b"\0"):
        if raw:
            p = REPO_ROOT / raw.decode("utf-8", "surrogateescape")
            if p.is_file() and p.resolve() != SELF:
                files.append(p)
    return files


def text_of(path: Path) -> str | None:
    try:
        data = path.read_bytes()[:TEXT_LIMIT]
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def files() -> dict[Path, str]:
    found = {p: t for p in repo_files() if (t := text_of(p)) is not None}
    assert any(p.name == "service.py" for p in found), "the scan found no sources: is this a git checkout?"
    return found


def rel(p: Path) -> str:
    return str(p.relative_to(REPO_ROOT))


def hits(files: dict[Path, str], pattern: re.Pattern, suffixes: tuple[str, ...] | None = None) -> list[str]:
    out = []
    for path, text in files.items():
        if suffixes and not path.name.endswith(suffixes):
            continue
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"{rel(path)}:{line}: {m.group(0).strip()[:80]}")
    return out


def test_no_subprocess_goes_through_a_shell(files) -> None:  # noqa: ANN001
    assert not hits(files, SHELL, (".py",))


def test_nothing_deserialises_untrusted_bytes_into_code(files) -> None:  # noqa: ANN001
    assert not hits(files, UNSAFE_DESERIALISE, (".py",))
    # msgpack is decoded in exactly one place, with limits on sizes and no ext types
    unpack = [h for h in hits(files, re.compile(r"msgpack\.(unpackb|unpack|Unpacker)\s*\("), (".py",))
              if not h.startswith("tests/")]
    assert [h.split(":")[0] for h in unpack] == ["shared/schemas.py"], unpack
    schemas = (REPO_ROOT / "shared" / "schemas.py").read_text()
    for limit in ("max_bin_len", "max_str_len", "max_array_len", "max_map_len", "max_ext_len=0", "strict_map_key=True"):
        assert limit in schemas, f"msgpack decoding lost its {limit} limit"


def test_no_private_keys_or_key_stores_are_committed(files) -> None:  # noqa: ANN001
    assert not hits(files, PRIVATE_KEY)
    assert not hits(files, TOKENS)
    key_files = [rel(p) for p in repo_files() if KEY_FILES.search(rel(p))]
    assert not key_files, f"key or credential files in the repository: {key_files}"


def test_no_secret_values_in_configuration_or_code(files) -> None:  # noqa: ANN001
    found = []
    for path, text in files.items():
        r = rel(path)
        if r.startswith("tests/") or r.endswith((".md", ".lock")) or "/schemas/" in r:
            continue  # tests use throw-away credentials; docs show commands; JSON schemas name fields
        pattern = PY_SECRET_LITERAL if r.endswith(".py") else SECRET_ASSIGNMENT
        for m in pattern.finditer(text):
            value = m.group("value").strip()
            if value.lower() in NOT_A_VALUE or PLACEHOLDER.match(value) or len(value) < 4:
                continue
            line_start = text.rfind("\n", 0, m.start()) + 1
            if text[line_start:m.start()].lstrip().startswith(("#", "//")):
                continue  # a comment that explains where the secret goes
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{r}:{line}: {m.group(0).strip()[:80]}")
    assert not found, "literal secrets (use the environment or a Kubernetes Secret):\n" + "\n".join(found)


def test_the_scan_would_catch_what_it_looks_for(tmp_path) -> None:  # noqa: ANN001
    """The patterns themselves, on planted examples (not in the repo)."""
    assert SHELL.search("subprocess.run(cmd, " + "shell=True)")
    assert UNSAFE_DESERIALISE.search("import " + "pickle")
    assert UNSAFE_DESERIALISE.search("x = yaml.load(" + "fh)") and not UNSAFE_DESERIALISE.search(
        "yaml.load(fh, Loader=yaml.SafeLoader)")
    assert PRIVATE_KEY.search("-----BEGIN RSA " + "PRIVATE KEY-----")
    assert KEY_FILES.search("deploy/kafka/broker.p12") and KEY_FILES.search("k8s/.env.secrets")
    m = SECRET_ASSIGNMENT.search("GENRE_KAFKA_SASL_PASSWORD=" + "hunter22")
    assert m and m.group("value") == "hunter22"
    assert PLACEHOLDER.match("${GENRE_KAFKA_SASL_PASSWORD}")
    m = PY_SECRET_LITERAL.search('sasl_password = "' + 's3cr3t-value"')
    assert m and m.group("value") == "s3cr3t-value"

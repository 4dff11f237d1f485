"""Memory ids and content hashes: what makes two captures "the same memory"."""

from __future__ import annotations

import os
import re
import time
import unicodedata

__all__ = ["content_hash", "new_id", "normalise_text", "numbers", "states_other_numbers"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def new_id() -> str:
    """A ULID: 26 Crockford base32 chars, 48-bit millisecond time then 80 random bits.

    Ids sort by creation time and never need coordination between processes.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped: the form that is hashed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def content_hash(text: str, namespace: str, project: str | None = None) -> str:
    """xxh3_128 (hex) of normalised text + namespace + project: the deduplication key."""
    import xxhash

    key = "\x00".join((normalise_text(text), namespace, project or ""))
    return xxhash.xxh3_128_hexdigest(key.encode("utf-8"))


def numbers(text: str) -> frozenset[str]:
    """The numbers a text states, canonical ("2,000" → "2000", "2.50" → "2.5"); zeros such as
    the ":00" of a time are left out."""
    found = set()
    for match in _NUMBER.findall(text):
        token = match.replace(",", "")
        if "." in token:
            token = token.rstrip("0").rstrip(".")
        token = token.lstrip("0")
        if token and token != ".":
            found.add(token)
    return frozenset(found)


def states_other_numbers(a: str, b: str) -> bool:
    """True when both texts state numbers and not the same ones ("restarts at 2am" vs "at
    4am"): however close their embeddings, they say different things (an update, not a
    near-duplicate). Embeddings barely see numbers: such pairs reach cosine 0.97–0.99."""
    na, nb = numbers(a), numbers(b)
    return bool(na) and bool(nb) and na != nb

"""HTTP Digest authentication for our UAC (RFC 2617, RFC 7616, as SIP uses it: RFC 3261 22.4), sans-I/O.

A 401 (``WWW-Authenticate``) or 407 (``Proxy-Authenticate``) to our INVITE carries one or more
challenges; :func:`choose` picks the first one we can answer (a server lists them in its order of
preference, RFC 7616 3.7) and :func:`authorization` computes the ``Authorization`` /
``Proxy-Authorization`` value for the retried request.  No sockets, no clock: the caller passes the
cnonce (random by default) and the nonce count, so tests can use the RFCs' own examples.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Challenge", "Credentials", "DigestError", "authorization", "choose", "parse_challenge", "response"]


class DigestError(ValueError):
    """A challenge we cannot parse or answer."""


def _hasher(name: str) -> Callable[[bytes], str] | None:
    try:
        hashlib.new(name)
    except ValueError:  # e.g. an OpenSSL build without SHA-512/256
        return None
    return lambda data: hashlib.new(name, data).hexdigest()


_HASHES: dict[str, Callable[[bytes], str]] = {
    alg: fn
    for alg, fn in (("MD5", _hasher("md5")), ("SHA-256", _hasher("sha256")), ("SHA-512-256", _hasher("sha512_256")))
    if fn is not None
}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """One ``Digest`` challenge: the fields RFC 7616 3.3 defines (unknown ones are ignored)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # as the server spelled it; compared case-insensitively
    qop: tuple[str, ...] = ()  # offered qop values, lower-case; () = RFC 2069 compatibility mode
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    proxy: bool = False  # came in Proxy-Authenticate (answer with Proxy-Authorization)

    @property
    def base_algorithm(self) -> str:
        alg = self.algorithm.upper()
        return alg[:-5] if alg.endswith("-SESS") else alg

    @property
    def session(self) -> bool:
        return self.algorithm.upper().endswith("-SESS")

    @property
    def supported(self) -> bool:
        """We know the hash and (when qop is offered) can use ``auth`` or ``auth-int``."""
        if self.base_algorithm not in _HASHES:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop

    @property
    def header_name(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


# The rest of a quoted-string after its opening quote, in one linear match (possessive: no
# backtracking), and its quoted-pairs.
_QUOTED_RE = re.compile(r'((?:[^"\\]++|\\.)*+)"', re.S)
_QPAIR_RE = re.compile(r"\\(.)", re.S)


def _unquote_pair(m: re.Match[str]) -> str:
    return m.group(1)


def _params(text: str) -> dict[str, str]:
    """``a=b, c="d, e"`` -> {"a": "b", "c": "d, e"} (names lower-case; quoted-string escapes undone)."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise DigestError(f"auth-param without '=': {text[i:]!r}")
        name = text[i:eq].strip().lower()
        if not name or any(c in name for c in " \t\",;"):
            raise DigestError(f"bad auth-param name {name!r}")
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            q = _QUOTED_RE.match(text, i + 1)
            if q is None:
                raise DigestError("unterminated quoted string")
            value = _QPAIR_RE.sub(_unquote_pair, q.group(1)) if "\\" in q.group(1) else q.group(1)
            i = q.end()
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        out[name] = value
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise DigestError(f"junk after auth-param {name!r}")
    return out


def parse_challenge(value: str, proxy: bool = False) -> Challenge:
    """Parse one ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value."""
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    p = _params(rest)
    if "realm" not in p or "nonce" not in p:
        raise DigestError("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm", "MD5") or "MD5",
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        userhash=p.get("userhash", "").lower() == "true",
        proxy=proxy,
    )


def choose(values: Iterable[str], proxy: bool = False) -> Challenge | None:
    """The first challenge among *values* that we can answer (unparseable ones are skipped)."""
    for v in values:
        try:
            ch = parse_challenge(v, proxy)
        except DigestError:
            continue
        if ch.supported:
            return ch
    return None


def _qop_for(ch: Challenge) -> str | None:
    if not ch.qop:
        return None
    return "auth" if "auth" in ch.qop else "auth-int"


def response(
    ch: Challenge, creds: Credentials, method: str, uri: str, cnonce: str, nc: int = 1, body: bytes = b""
) -> str:
    """The ``response`` value (RFC 7616 3.4.1; RFC 2069 form when the server offered no qop)."""
    h = _HASHES.get(ch.base_algorithm)
    if h is None:
        raise DigestError(f"unsupported algorithm {ch.algorithm!r}")

    def hs(s: str) -> str:
        return h(s.encode("utf-8"))

    ha1 = hs(f"{creds.username}:{ch.realm}:{creds.password}")
    if ch.session:
        ha1 = hs(f"{ha1}:{ch.nonce}:{cnonce}")
    qop = _qop_for(ch)
    ha2 = hs(f"{method}:{uri}") if qop != "auth-int" else hs(f"{method}:{uri}:{h(body)}")
    if qop is None:
        return hs(f"{ha1}:{ch.nonce}:{ha2}")
    return hs(f"{ha1}:{ch.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    ch: Challenge,
    creds: Credentials,
    method: str,
    uri: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` header value answering *ch*."""
    if not ch.supported:
        raise DigestError(f"cannot answer a challenge with algorithm {ch.algorithm!r} and qop {ch.qop!r}")
    qop = _qop_for(ch)
    cnonce = cnonce if cnonce is not None else secrets.token_hex(16)
    resp = response(ch, creds, method, uri, cnonce, nc, body)
    username = creds.username
    if ch.userhash:
        username = _HASHES[ch.base_algorithm](f"{creds.username}:{ch.realm}".encode())
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(ch.realm)}",
        f"nonce={_quote(ch.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(resp)}",
        f"algorithm={ch.algorithm}",
    ]
    if qop is not None or ch.session:
        parts.append(f"cnonce={_quote(cnonce)}")
    if ch.opaque is not None:
        parts.append(f"opaque={_quote(ch.opaque)}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc:08x}"]
    if ch.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)

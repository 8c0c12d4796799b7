"""Text to speech behind a small interface: the ``speak`` source's engine.

Why a subprocess: espeak-ng is a C program with global state; running it as a child (nice +10,
spawned and awaited in a thread, see :meth:`EspeakEngine._run`) keeps it off the event loop,
off the media clock's thread and out of our GIL, and a crash or a hang takes only that
synthesis down (killed at the timeout).  Its
WAV output goes through the same decode path as any WAV source, and the decoded result is
cached by (engine, voice, rate, kind, text) like a URL (``MediaLoader``).

Bounds: text length (``max_chars``), SSML size and element set (checked with defusedxml
before any process starts), one timeout per synthesis, and a semaphore so a burst of speak
commands queues instead of starting a process each.  Another engine plugs in by implementing
:class:`SpeechEngine` and passing it to :func:`set_engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET  # noqa: S405 - only for the element type; parsing is defusedxml's
from dataclasses import dataclass
from typing import Protocol

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from .errors import SourceError

log = logging.getLogger("mediasrv.synth")

MAX_CHARS = 3000  # characters of text (of SSML: of its spoken text)
MAX_SSML_BYTES = 16 * 1024
MIN_RATE, MAX_RATE, DEFAULT_RATE = 80, 450, 175  # words per minute (espeak-ng -s)
DEFAULT_VOICE = "en-us"
NICE = 10
SSML_NS = "http://www.w3.org/2001/10/synthesis"
# The SSML elements espeak-ng's -m mode acts on (its docs/ssml.md); <audio> is refused: it would
# name a URL for the engine to play, and espeak-ng only reports it to a callback we do not have.
SSML_ELEMENTS = frozenset({"speak", "voice", "prosody", "say-as", "emphasis", "break", "mark", "s", "p", "sub"})


class SpeechInputError(ValueError):
    """A speak request the engine cannot take; ``field`` is relative (``text``, ``voice``, ``rate``, ``ssml``)."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class SpeechSpec:
    """What to say and how; ``text`` is SSML markup when ``ssml`` is true."""

    text: str
    voice: str = DEFAULT_VOICE
    rate: int = DEFAULT_RATE
    ssml: bool = False
    engine: str = "espeak-ng"

    def cache_key(self) -> str:
        digest = hashlib.sha256(f"{self.voice}\0{self.rate}\0{int(self.ssml)}\0{self.text}".encode()).hexdigest()
        return f"speak:{self.engine}:{digest[:40]}"

    def describe(self) -> str:
        return f"speak:{self.voice}:{self.rate}:{'ssml' if self.ssml else 'text'}:{len(self.text)} chars"


class SpeechEngine(Protocol):
    """What the ``speak`` source needs from an engine."""

    name: str
    max_chars: int

    def has_voice(self, voice: str) -> bool:
        """Whether :meth:`synthesize` takes this voice name (lower case); the list is read once, then cached."""
        ...

    async def synthesize(self, text: str, voice: str, rate: int, ssml: bool) -> bytes:
        """A complete WAV file (any rate, mono), or SourceError."""
        ...


# -- validation (shared by every engine) ------------------------------------------------------
def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def check_ssml(markup: str, max_chars: int) -> None:
    """Parse *markup* safely and refuse what the engine cannot take (SpeechInputError 422)."""
    if len(markup.encode()) > MAX_SSML_BYTES:
        raise SpeechInputError(422, "ssml", f"SSML is longer than {MAX_SSML_BYTES} bytes")
    try:
        root = DET.fromstring(markup, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise SpeechInputError(422, "ssml", f"SSML refused: {type(exc).__name__} (DTDs and entities are not "
                                            "allowed)") from exc
    except ET.ParseError as exc:
        raise SpeechInputError(422, "ssml", f"SSML is not well-formed XML: {exc}") from exc
    if _local(root.tag)[1] != "speak":
        raise SpeechInputError(422, "ssml", f"the SSML root element must be <speak>, not <{_local(root.tag)[1]}>")
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        ns, name = _local(el.tag)
        if ns not in (None, SSML_NS) or name not in SSML_ELEMENTS:
            raise SpeechInputError(422, "ssml", f"SSML element <{name}> is not supported by espeak-ng; supported: "
                                                f"{', '.join(sorted(SSML_ELEMENTS))}")
    spoken = "".join(root.itertext())
    if not spoken.strip():
        raise SpeechInputError(400, "ssml", "the SSML has no text to speak")
    if len(spoken) > max_chars:
        raise SpeechInputError(422, "ssml", f"the SSML's text is longer than {max_chars} characters")


def check(spec: SpeechSpec, engine: SpeechEngine | None = None) -> SpeechSpec:
    """*spec* if the engine can say it, else SpeechInputError naming the field."""
    engine = engine or get_engine()
    if spec.ssml:
        check_ssml(spec.text, engine.max_chars)
    else:
        if not spec.text.strip():
            raise SpeechInputError(400, "text", "text is empty")
        if len(spec.text) > engine.max_chars:
            raise SpeechInputError(422, "text", f"text is longer than {engine.max_chars} characters "
                                                f"({len(spec.text)})")
        if "\0" in spec.text:
            raise SpeechInputError(400, "text", "text must not contain NUL characters")
    if isinstance(spec.rate, bool) or not isinstance(spec.rate, int) or not MIN_RATE <= spec.rate <= MAX_RATE:
        raise SpeechInputError(422, "rate", f"rate must be an integer {MIN_RATE}-{MAX_RATE} (words per minute)")
    if not engine.has_voice(spec.voice.lower()):
        raise SpeechInputError(422, "voice", f"unknown voice {spec.voice[:64]!r} for {engine.name} "
                                             "(see `espeak-ng --voices`; a variant is added as '+f3')")
    return spec


# -- espeak-ng --------------------------------------------------------------------------------
def fix_wav_sizes(wav: bytes) -> bytes:
    """espeak-ng --stdout cannot seek back, so its RIFF and data sizes say 0x7ffff0xx; set the real ones."""
    if len(wav) < 44 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        return wav
    out = bytearray(wav)
    struct.pack_into("<I", out, 4, len(out) - 8)
    pos = 12
    while pos + 8 <= len(out):
        chunk, size = out[pos:pos + 4], struct.unpack_from("<I", out, pos + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", out, pos + 4, len(out) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


class EspeakEngine:
    """espeak-ng in a child process per synthesis: ``espeak-ng --stdout -v VOICE -s RATE [-m]``, text on stdin."""

    name = "espeak-ng"

    def __init__(self, binary: str = "espeak-ng", timeout_s: float = 10.0, concurrency: int = 2,
                 max_chars: int = MAX_CHARS) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.concurrency = max(1, concurrency)
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._voices: frozenset[str] | None = None
        self._variants: frozenset[str] = frozenset()
        self._nice = shutil.which("nice")
        self.stats = {"syntheses": 0, "timeouts": 0, "failures": 0, "queued": 0}

    def _list(self, which: str) -> list[tuple[str, str]]:
        """(language, file) rows of ``espeak-ng --voices[=which]``."""
        args = [self.binary, "--voices" + (f"={which}" if which else "")]
        try:
            out = subprocess.run(args, capture_output=True, timeout=10, check=True).stdout.decode(errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot list espeak-ng voices: %s", exc)
            return []
        rows = []
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 5:
                rows.append((parts[1].lower(), parts[4]))
        return rows

    def voices(self) -> frozenset[str]:
        """Languages (``en-us``) and voice files (``gmw/en-us``), read once from ``espeak-ng --voices``."""
        if self._voices is None:
            names: set[str] = set()
            for lang, file in self._list(""):
                names |= {lang, file.lower(), file.rsplit("/", 1)[-1].lower()}
            self._variants = frozenset(file.rsplit("/", 1)[-1].lower() for _, file in self._list("variant"))
            self._voices = frozenset(names)
            log.info("espeak-ng: %d voices, %d variants", len(names), len(self._variants))
        return self._voices

    def has_voice(self, voice: str) -> bool:
        """A voice, optionally with a variant (``en-us+f3``, from ``espeak-ng --voices=variant``)."""
        name, plus, variant = voice.partition("+")
        return name in self.voices() and (not plus or variant in self._variants)

    @property
    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    async def synthesize(self, text: str, voice: str, rate: int, ssml: bool) -> bytes:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # a semaphore belongs to one loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        if self._sem.locked():
            self.stats["queued"] += 1
        async with self._sem:
            return await self._run(text, voice, rate, ssml)

    async def _run(self, text: str, voice: str, rate: int, ssml: bool) -> bytes:
        """One child, started and waited for in a thread.

        Why not ``asyncio.create_subprocess_exec``: under uvloop it spawns with libuv, which
        fork()s the whole server on the loop's thread (page tables of a large process copied
        while every call's clock waits: other calls' p99 went from ~5 to ~20-27 ms in
        bench/speak_pacing.py).  ``subprocess.Popen`` without a preexec_fn uses vfork, and in a
        thread the loop does not wait for it at all.
        """
        args = [self.binary, "--stdout", "-b", "1", "-v", voice, "-s", str(rate)] + (["-m"] if ssml else [])
        if self._nice:  # through nice(1): a preexec_fn would make Popen fork instead of vfork
            args = [self._nice, "-n", str(NICE), *args]
        self.stats["syntheses"] += 1
        loop = asyncio.get_running_loop()
        try:
            proc = await loop.run_in_executor(None, _spawn, args)
        except OSError as exc:
            self.stats["failures"] += 1
            raise SourceError("speech_error", f"cannot start {self.binary}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(loop.run_in_executor(None, proc.communicate, text.encode()),
                                              self.timeout_s)
        except TimeoutError:
            self.stats["timeouts"] += 1
            raise SourceError("speech_timeout", f"{self.name} took longer than {self.timeout_s:g} s") from None
        finally:
            if proc.poll() is None:  # timed out or cancelled (nobody wants it any more)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):  # the communicate thread then sees EOF and ends
                    await asyncio.shield(loop.run_in_executor(None, proc.wait))
        if proc.returncode != 0 or len(out) <= 44:
            self.stats["failures"] += 1
            detail = err.decode(errors="replace").strip()[:200] or f"exit status {proc.returncode}, {len(out)} bytes"
            raise SourceError("speech_error", f"{self.name} failed: {detail}")
        return fix_wav_sizes(out)


_engine: SpeechEngine | None = None


def get_engine() -> SpeechEngine:
    """The process's speech engine (espeak-ng with default limits unless :func:`set_engine` chose one)."""
    global _engine
    if _engine is None:
        _engine = EspeakEngine()
    return _engine


def set_engine(engine: SpeechEngine) -> None:
    global _engine
    _engine = engine


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """The engine's process with its three pipes (bytes): run in a thread, see synthesize()."""
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

"""Vendor voices → espeak-ng voices: the one table every dialect's speak mapping uses.

A vendor names a voice three ways: a gender plus a locale (Telnyx ``female``/``male`` +
``language``, Plivo ``WOMAN``/``MAN``, ACS ``voiceKind`` + ``sourceLocale``, Bandwidth
``gender`` + ``locale``), a cloud voice (Amazon Polly ``Polly.Joanna``, Azure neural
``en-US-JennyNeural``), or its own name (Bandwidth ``susan``).  Each becomes a locale and a
gender; the locale becomes an espeak-ng language voice and the gender a variant (female:
``+f3``; male: the language voice itself, whose default is male).  A voice or locale with no
entry is refused by the dialect in its own 4xx shape; nothing is guessed silently.
"""

from __future__ import annotations

from ..content.synth import SpeechInputError, get_engine

FEMALE_VARIANT = "+f3"

# Vendor locales espeak-ng has no voice of that exact name for (others: exact, then primary subtag).
LOCALES = {
    "en-au": "en-gb", "en-in": "en-gb", "en-gb-wls": "en-gb", "en-nz": "en-gb", "en-ie": "en-gb",
    "en-za": "en-gb", "en-ca": "en-us", "es-mx": "es-419", "es-us": "es-419", "fr-fr": "fr-fr", "fr-ca": "fr-fr",
    "arb": "ar", "ar-ae": "ar", "cmn-cn": "cmn", "zh-cn": "cmn", "zh-hk": "yue", "nb-no": "nb", "pt-pt": "pt",
    "pt-br": "pt-br", "cy-gb": "cy", "is-is": "is",
}

# Cloud voices (Amazon Polly, as Telnyx and Plivo name them "Polly.<Name>"): name -> (locale, gender)
POLLY = {
    "joanna": ("en-us", "female"), "salli": ("en-us", "female"), "kendra": ("en-us", "female"),
    "kimberly": ("en-us", "female"), "ivy": ("en-us", "female"), "ruth": ("en-us", "female"),
    "matthew": ("en-us", "male"), "joey": ("en-us", "male"), "justin": ("en-us", "male"), "kevin": ("en-us", "male"),
    "stephen": ("en-us", "male"), "amy": ("en-gb", "female"), "emma": ("en-gb", "female"),
    "brian": ("en-gb", "male"), "arthur": ("en-gb", "male"), "nicole": ("en-au", "female"),
    "olivia": ("en-au", "female"), "russell": ("en-au", "male"), "raveena": ("en-in", "female"),
    "aditi": ("en-in", "female"), "geraint": ("en-gb-wls", "male"), "celine": ("fr-fr", "female"),
    "lea": ("fr-fr", "female"), "mathieu": ("fr-fr", "male"), "chantal": ("fr-ca", "female"),
    "marlene": ("de-de", "female"), "vicki": ("de-de", "female"), "hans": ("de-de", "male"),
    "daniel": ("de-de", "male"), "conchita": ("es-es", "female"), "lucia": ("es-es", "female"),
    "enrique": ("es-es", "male"), "mia": ("es-mx", "female"), "lupe": ("es-us", "female"),
    "penelope": ("es-us", "female"), "miguel": ("es-us", "male"), "carla": ("it-it", "female"),
    "bianca": ("it-it", "female"), "giorgio": ("it-it", "male"), "camila": ("pt-br", "female"),
    "vitoria": ("pt-br", "female"), "ricardo": ("pt-br", "male"), "ines": ("pt-pt", "female"),
    "cristiano": ("pt-pt", "male"), "lotte": ("nl-nl", "female"), "ruben": ("nl-nl", "male"),
    "tatyana": ("ru-ru", "female"), "maxim": ("ru-ru", "male"), "mizuki": ("ja-jp", "female"),
    "takumi": ("ja-jp", "male"), "seoyeon": ("ko-kr", "female"), "zhiyu": ("cmn-cn", "female"),
}

# Azure neural voices ("<locale>-<Name>Neural", ACS voiceName, Telnyx "Azure.<...>"): name -> gender
AZURE = {
    "jenny": "female", "aria": "female", "nancy": "female", "jane": "female", "sara": "female", "amber": "female",
    "ana": "female", "ashley": "female", "cora": "female", "elizabeth": "female", "michelle": "female",
    "monica": "female", "ava": "female", "emma": "female", "sonia": "female", "libby": "female",
    "natasha": "female", "neerja": "female", "denise": "female", "katja": "female", "elvira": "female",
    "dalia": "female", "elsa": "female", "francisca": "female", "nanami": "female", "xiaoxiao": "female",
    "guy": "male", "davis": "male", "tony": "male", "jason": "male", "brandon": "male", "christopher": "male",
    "eric": "male", "jacob": "male", "andrew": "male", "brian": "male", "ryan": "male", "william": "male",
    "prabhat": "male", "henri": "male", "conrad": "male", "alvaro": "male", "jorge": "male", "diego": "male",
    "antonio": "male", "keita": "male", "yunxi": "male",
}

# Bandwidth <SpeakSentence voice="..."> names -> (locale, gender)
BANDWIDTH = {
    "susan": ("en-us", "female"), "julie": ("en-us", "female"), "paul": ("en-us", "male"),
    "dave": ("en-us", "male"), "kate": ("en-gb", "female"), "bridget": ("en-gb", "female"),
    "simon": ("en-gb", "male"), "esperanza": ("es-mx", "female"), "violeta": ("es-mx", "female"),
    "jorge": ("es-mx", "male"), "jolie": ("fr-fr", "female"), "bernard": ("fr-fr", "male"),
    "katrin": ("de-de", "female"), "stefan": ("de-de", "male"), "paola": ("it-it", "female"),
    "luca": ("it-it", "male"),
}


def language_voice(locale: str) -> str | None:
    """A vendor locale (``en-US``, ``en_US``, ``arb``) → an espeak-ng language voice, or None."""
    tag = locale.strip().lower().replace("_", "-")
    engine = get_engine()
    for candidate in (tag, LOCALES.get(tag), tag.split("-", 1)[0]):
        if candidate and engine.has_voice(candidate):
            return candidate
    return None


def espeak_voice(locale: str, gender: str | None) -> str | None:
    """Locale + gender → ``en-us`` / ``en-us+f3``, or None when espeak-ng has nothing for the locale."""
    voice = language_voice(locale)
    if voice is None:
        return None
    return voice + FEMALE_VARIANT if (gender or "").lower() in ("female", "woman", "f") else voice


def cloud_voice(name: str) -> str | None:
    """``Polly.Joanna`` / ``Polly.Joanna-Neural`` / ``Azure.en-US-JennyNeural`` / ``en-US-JennyNeural`` → espeak-ng."""
    value = name.strip()
    lower = value.lower()
    for prefix in ("aws.polly.", "polly.", "azure."):
        if lower.startswith(prefix):
            value, lower = value[len(prefix):], lower[len(prefix):]
            break
    base = lower.split("-neural")[0].split(".")[0]
    if base in POLLY:
        locale, gender = POLLY[base]
        return espeak_voice(locale, gender)
    parts = value.split("-")
    if len(parts) >= 3 and parts[-1].lower().endswith("neural"):
        person = parts[-1][: -len("neural")].lower()
        if person in AZURE:
            return espeak_voice("-".join(parts[:-1]), AZURE[person])
    return None


def speech_error_field(exc: SpeechInputError, fields: dict[str, str]) -> str:
    """The vendor's name for the field a SpeechInputError names (``text`` → ``payload`` for Telnyx, ...)."""
    return fields.get(exc.field, exc.field)

"""The vendor DTMF mappings' pure parts: Telnyx gather rules, ACS tone names, Bandwidth verb parsing."""

from __future__ import annotations

import pytest

from mediasrv.api import bandwidth_dtmf  # noqa: F401 - registers <SendDtmf>/<Gather>
from mediasrv.api.acs_dtmf import TONE_KEYS, TONE_NAMES
from mediasrv.api.bandwidth import BandwidthError, parse_bxml
from mediasrv.api.bandwidth_dtmf import Gather, SendDtmf
from mediasrv.api.dtmf_pauses import split, valid
from mediasrv.api.telnyx import TelnyxError
from mediasrv.api.telnyx_ivr import judge, parse_gather


def gather(**body):
    return parse_gather("c1", {"audio_url": "http://x/a.wav", **body})


def test_telnyx_gather_defaults_and_judgement():
    g = gather()
    assert (g.minimum_digits, g.request.max_digits, g.request.terminators, g.valid_digits, g.maximum_tries) == (
        1, 128, "#", "0123456789#*", 3)
    assert (g.request.first_digit_timeout_ms, g.request.inter_digit_timeout_ms) == (60_000, 5000)
    g = gather(minimum_digits=2, maximum_digits=4, valid_digits="123", maximum_tries=2)
    assert judge(g, "12", "terminator") == "valid"
    assert judge(g, "1", "terminator") is None  # too short, a try left
    assert judge(g, "", "timeout") is None
    g.tries = 2
    assert judge(g, "19", "max_digits") == "invalid"
    assert judge(g, "", "timeout") == "timeout"
    assert judge(g, "1", "stopped") == "cancelled" and judge(g, "", "call_hangup") == "call_hangup"
    assert gather(terminating_digit="").request.terminators == ""


@pytest.mark.parametrize("body, pointer", [
    ({"minimum_digits": 3, "maximum_digits": 2}, "/minimum_digits"), ({"maximum_digits": 129}, "/maximum_digits"),
    ({"valid_digits": ""}, "/valid_digits"), ({"terminating_digit": "x"}, "/terminating_digit"),
    ({"inter_digit_timeout_millis": "5"}, "/inter_digit_timeout_millis"), ({"maximum_tries": 0}, "/maximum_tries"),
    ({"invalid_audio_url": "file:///etc/passwd"}, "/invalid_audio_url"), ({"client_state": "%%"}, "/client_state"),
])
def test_telnyx_gather_refusals_name_the_field(body, pointer):
    with pytest.raises(TelnyxError) as info:
        gather(**body)
    assert info.value.pointer == pointer and 400 <= info.value.status < 500


def test_acs_tone_names_round_trip():
    assert TONE_NAMES["#"] == "pound" and TONE_NAMES["*"] == "asterisk" and TONE_NAMES["1"] == "one"
    assert len(TONE_KEYS) == 16 and all(TONE_NAMES[TONE_KEYS[n]] == n for n in TONE_KEYS)


def test_bandwidth_verbs_parse_and_refuse():
    [send, g] = parse_bxml(b'<Bxml><SendDtmf>1aW#</SendDtmf><Gather maxDigits="3" repeatCount="2" '
                           b'firstDigitTimeout="0.5"><PlayAudio>a.wav</PlayAudio></Gather></Bxml>', "Bxml",
                           base_url="http://h/doc")
    assert isinstance(send, SendDtmf) and (send.digits, send.tone_ms, send.interval_ms) == ("1AW#", 200, 400)
    assert isinstance(g, Gather) and g.prompts[0].url == "http://h/a.wav" and g.url is None
    assert (g.max_digits, g.repeat_count, g.first_digit_s, g.terminators) == (3, 2, 0.5, "")
    for bad in (b"<SendDtmf/>", b"<SendDtmf>" + b"1" * 51 + b"</SendDtmf>", b'<Gather gatherMethod="PUT"/>',
                b'<Gather repeatCount="21"><PlayAudio>http://h/a</PlayAudio></Gather>',
                b'<Gather gatherUrl="ftp://h/g"/>', b'<Gather interDigitTimeout="x"/>'):
        with pytest.raises(BandwidthError) as info:
            parse_bxml(b"<Bxml>" + bad + b"</Bxml>", "Bxml")
        assert info.value.status == 400 and "(verb 1)" in info.value.description


def test_pauses_split_and_validate():
    assert split("12w3W#") == [("12", 0.5), ("3", 1.0), ("#", 0.0)]
    assert split("w1") == [("", 0.5), ("1", 0.0)] and split("1ww2") == [("1", 0.5), ("", 0.5), ("2", 0.0)]
    assert valid("1a*#") and valid("w1W") and not valid("ww") and not valid("12x") and not valid("1" * 65)

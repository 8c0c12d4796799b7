"""Telnyx and Plivo request bodies → the internal PlayRequest, and every refusal with its code and field."""

import base64

import pytest

from mediasrv.api.plivo import PlivoError, parse_play
from mediasrv.api.telnyx import TelnyxError, parse_loop, parse_playback_start, playback_status

URL = "http://127.0.0.1/a.wav"


def telnyx_refusal(body: dict) -> tuple[int, str, str | None]:
    with pytest.raises(TelnyxError) as info:
        parse_playback_start(body)
    return info.value.status, info.value.code, info.value.pointer


def test_telnyx_full_body_maps_onto_the_play_request():
    wav = base64.b64encode(b"RIFF....WAVEfmt ").decode()
    play, info = parse_playback_start({
        "playback_content": wav, "audio_type": "wav", "loop": "infinity", "overlay": True, "stop": "current",
        "target_legs": "self", "cache_audio": False, "client_state": "aGk=", "command_id": "c-1"})
    [spec] = play.sources
    assert spec.content == b"RIFF....WAVEfmt " and spec.audio_type == "wav"
    assert (play.loop, play.overlay, play.stop, play.target, play.command_id) == (None, True, "current", "self", "c-1")
    assert (info.client_state, info.media_url, info.overlay) == ("aGk=", None, True)
    play, _ = parse_playback_start({"audio_url": URL, "target_legs": "both"})
    assert (play.sources[0].url, play.sources[0].cache, play.loop, play.target) == (URL, True, 1, "both")
    play, info = parse_playback_start({"media_name": "greeting.wav", "loop": "7"})
    assert (play.sources[0].media, play.loop, info.media_name) == ("greeting.wav", 7, "greeting.wav")


@pytest.mark.parametrize(("body", "expected"), [
    ({}, (422, "10004", "/audio_url")),
    ({"audio_url": URL, "media_name": "x"}, (422, "10015", "/media_name")),
    ({"audio_url": "ftp://x/a.wav"}, (422, "10003", "/audio_url")),
    ({"audio_url": URL, "loop": 101}, (422, "10033", "/loop")),
    ({"audio_url": URL, "loop": 0}, (422, "10033", "/loop")),
    ({"audio_url": URL, "loop": True}, (422, "10032", "/loop")),
    ({"audio_url": URL, "loop": 2.5}, (422, "10032", "/loop")),
    ({"audio_url": URL, "audio_type": "ogg"}, (422, "10032", "/audio_type")),
    ({"audio_url": URL, "stop": "some"}, (422, "10032", "/stop")),
    ({"audio_url": URL, "target_legs": "sideways"}, (422, "10032", "/target_legs")),
    ({"audio_url": URL, "overlay": True, "target_legs": "both"}, (422, "10032", "/target_legs")),
    ({"audio_url": URL, "overlay": "yes"}, (400, "10015", "/overlay")),
    ({"audio_url": URL, "client_state": "not base64!"}, (400, "10015", "/client_state")),
    ({"playback_content": "%%%"}, (422, "10015", "/playback_content")),
    ({"media_name": ""}, (422, "10015", "/media_name")),
    ({"audio_url": 42}, (400, "10015", "/audio_url")),
])
def test_telnyx_refusals_name_code_and_field(body, expected):
    assert telnyx_refusal(body) == expected


def test_telnyx_loop_and_status_mapping():
    assert [parse_loop(v) for v in (None, 1, 100, "infinity", "INFINITY", " 5 ")] == [1, 1, 100, None, None, 5]
    assert playback_status({"status": "completed"}) == {"status": "completed", "status_detail": None}
    assert playback_status({"status": "stopped", "stopped_by": "api"})["status"] == "cancelled"
    assert playback_status({"status": "call_hangup"})["status"] == "call_hangup"
    nf = playback_status({"status": "failed", "reason": "http_404", "message": "HTTP 404"})
    assert nf == {"status": "file_not_found", "status_detail": "HTTP 404"}
    assert playback_status({"status": "failed", "reason": "not_audio", "message": "text/html"})["status"] == "failed"


def test_plivo_body_maps_onto_the_play_request():
    play, urls = parse_play({"urls": f"{URL}, http://127.0.0.1/b.wav", "length": "30", "legs": "both",
                             "loop": "true", "mix": False})
    assert urls == [URL, "http://127.0.0.1/b.wav"] and [s.url for s in play.sources] == urls
    assert (play.length_s, play.target, play.loop, play.mix) == (30.0, "both", None, False)
    play, _ = parse_play({"urls": [URL]})
    assert (play.target, play.loop, play.mix, play.length_s) == ("self", 1, True, None)
    play, _ = parse_play({"urls": URL, "legs": "bleg"})
    assert play.target == "opposite"


@pytest.mark.parametrize("body", [
    {}, {"urls": ""}, {"urls": ["ftp://x"]}, {"urls": 5}, {"urls": URL, "legs": "cleg"},
    {"urls": URL, "length": 0}, {"urls": URL, "length": True}, {"urls": URL, "loop": "maybe"},
])
def test_plivo_refusals_are_400(body):
    with pytest.raises(PlivoError) as info:
        parse_play(body)
    assert info.value.status == 400 and info.value.error


def test_one_json_object_parser_for_every_dialect() -> None:
    from mediasrv.api.errors import BodyError, parse_json_object

    assert parse_json_object(b"  ") == {} and parse_json_object(b'{"a": 1}') == {"a": 1}
    for raw, says in ((b"[1]", "must be a JSON object"), (b"{bad", "not valid JSON"), (b"\xff\xfe", "not valid JSON")):
        with pytest.raises(BodyError, match=says):
            parse_json_object(raw)

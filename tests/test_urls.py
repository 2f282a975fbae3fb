"""URLs are parsed strictly before anything connects, and shown only redacted and short."""

from __future__ import annotations

import pytest
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.urls import excerpt, parse_url, redact_url, shown_url

LIVE = ("rtsp", "rtsps", "rtmp", "http", "https")


@pytest.mark.parametrize(
    "url, needle",
    [
        ("rtsp://127.0.0.1:6379/a\r\nSET k v\r\nX: y", "control character (\\r) at position 23"),
        ("rtsp://127.0.0.1:554/a\nb", "control character (\\n)"),
        ("rtsp://127.0.0.1:554/a\x00b", "control character (\\x00)"),
        ("rtsp://127.0.0.1:554/a\tb", "control character (\\t)"),
        ("rtsp://127.0.0.1:554/a b", "whitespace"),
        ("rtsp://127.0.0.1:554/a\u2028b", "whitespace (\\u2028)"),
        ("rtsp://127.0.0.1:554/a\u200bb", "control character"),
        (" rtsp://127.0.0.1:554/a", "whitespace"),
        ("rtsp://us%0d%0aer:pw@127.0.0.1:554/a", "percent-encoded control character (%0d)"),
        ("rtsp://127.0.0.1:554/a%0AGET", "percent-encoded control character (%0A)"),
        ("rtsp://127.0.0.1:70000/a", "port that is not a number in 1-65535"),
        ("rtsp://127.0.0.1:0/a", "port 0"),
        ("rtsp://127.0.0.1:55x/a", "port that is not a number in 1-65535"),
        ("rtsp://127.0.0.1:" + "9" * 1900 + "/a", "port that is not a number"),
        ("rtsp://admin:Secret#123@127.0.0.1/a", "an '@' after its host"),
        ("rtsp://127.1/a", "not a valid IP address"),
        ("rtsp://0x7f.0.0.1/a", "not a valid IP address"),
        ("rtsp://2130706433/a", "not a valid IP address"),
        ("rtsp:///a", "names no host"),
        ("rtsp://bad_host!/a", "not a valid domain name"),
        ("rtsp://[::1/a", "malformed"),
        ("rtsp://127.0.0.1/caméra", "non-ASCII"),
        ("ftp://127.0.0.1/a", "ftp:// is not allowed"),
        ("127.0.0.1/a", "has no scheme"),
        ("", "is empty"),
        ("rtsp://127.0.0.1/" + "a" * 3000, "3017 characters long; at most 2048"),
    ],
)
def test_malformed_urls_are_refused_with_one_short_line(url, needle):
    with pytest.raises(InputError) as err:
        parse_url(url, LIVE, "stream URL")
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message and "\r" not in message and len(message) < 200
    assert "SET k v" not in message


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("RTSP://127.0.0.1:8554/Cam", "rtsp://127.0.0.1:8554/Cam"),  # the scheme in any case, the path as given
        ("rtsp://Admin:P%40ss@LOCALHOST/live?ch=1", "rtsp://Admin:P%40ss@localhost/live?ch=1"),
        ("rtsp://bücher.test/cam", "rtsp://xn--bcher-kva.test/cam"),  # IDNA; parsing resolves nothing
        ("rtsp://[::1]:554/cam", "rtsp://[::1]:554/cam"),
        ("http://127.0.0.1:8080/video.mjpg", "http://127.0.0.1:8080/video.mjpg"),
    ],
)
def test_good_urls_come_back_normalised(url, parsed):
    assert parse_url(url, LIVE) == parsed


def test_credentials_in_user_info_and_query_are_redacted():
    """Regression: a password with an unencoded '#', '?' or '/' was shown whole (the URL's
    parse ends the user information there), and so were ``;password=``, fragments and
    parameters such as ``auth_token`` or ``client_secret``."""
    for url, secret in (("rtsp://admin:Secret#123@127.0.0.1/cam", "Secret#123"), ("rtsp://admin:Sec?ret@127.0.0.1/cam", "Sec"),
                        ("rtsp://admin:Se/cret@127.0.0.1/cam", "Se/"), ("rtsp://127.0.0.1/cam?ch=1;password=Hidden", "Hidden"),
                        ("rtsp://127.0.0.1/cam#password=Hidden", "Hidden"), ("rtsp://127.0.0.1/cam?auth_token=Hidden", "Hidden"),
                        ("rtsp://127.0.0.1/cam?X-Amz-Security-Token=Hidden", "Hidden"),
                        ("rtsp://127.0.0.1/cam?client_secret=Hidden", "Hidden"), ("rtsp://127.0.0.1/cam?session=Hidden", "Hidden")):  # fmt: skip
        assert secret not in redact_url(url) and "admin" not in redact_url(url), redact_url(url)
    assert redact_url("rtsp://admin:pw@10.0.0.5/live") == "rtsp://***@10.0.0.5/live"
    shown = redact_url("rtsp://127.0.0.1/live?password=hunter2&ch=1&X-Amz-Signature=abc&api-key=k")
    assert "hunter2" not in shown and "abc" not in shown and "=k" not in shown
    assert "ch=1" in shown and "password=***" in shown
    assert redact_url("rtsp://127.0.0.1/live?ch=1") == "rtsp://127.0.0.1/live?ch=1"


def test_excerpts_are_short_printable_and_say_how_much_was_left_out():
    assert excerpt("abc") == "abc"
    assert excerpt("a\r\nb") == "a\\r\\nb"
    long = excerpt("x" * 10_000, 20)
    assert long == "x" * 20 + "... (+9980 characters)"
    assert len(shown_url("rtsp://u:p@127.0.0.1/" + "a" * 5000)) < 120

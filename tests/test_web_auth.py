"""Unit level: basic-auth parsing and caching, the token bucket, and the reload watcher (with fake clocks)."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from hyperv_exporter.web import WebConfigError
from hyperv_exporter.web import auth as auth_module
from hyperv_exporter.web.auth import DUMMY_HASH, BasicAuthenticator, is_bcrypt_hash, parse_basic_auth
from hyperv_exporter.web.ratelimit import TokenBucket
from hyperv_exporter.web.reload import ConfigWatcher

FIXTURES = Path(__file__).parent / "fixtures" / "web"
CAROL_HASH = "$2y$10$qRTBuFoULoYNA7AQ/F3ck.trZBPyjV64.oA4ZsSBCIWvXuvQlQTuu"
DAVE_HASH = "$2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def test_parse_basic_auth() -> None:
    assert parse_basic_auth("Basic " + b64(b"alice:pa:ss")) == ("alice", b"pa:ss")
    assert parse_basic_auth("basic " + b64(b"alice:")) == ("alice", b"")
    assert parse_basic_auth(None) is None
    assert parse_basic_auth("Bearer abc") is None
    assert parse_basic_auth("Basic " + b64(b"no-colon")) is None
    assert parse_basic_auth("Basic not base64!") is None
    assert parse_basic_auth("Basic " + b64(b"\xff:x")) is None


def test_toolkit_htpasswd_hashes_verify() -> None:
    # $2y$ hashes straight from the toolkit's testdata (htpasswd style).
    authenticator = BasicAuthenticator()
    users = {"carol": CAROL_HASH, "dave": DAVE_HASH}
    assert authenticator.check(users, "carol", b"carol123")
    assert authenticator.check(users, "dave", b"dave123")
    assert not authenticator.check(users, "carol", b"dave123")
    assert is_bcrypt_hash(CAROL_HASH)
    assert is_bcrypt_hash(DUMMY_HASH)


def test_counts_bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(auth_module.bcrypt, "checkpw", lambda pw, hashed: calls.append(hashed) or False)
    authenticator = BasicAuthenticator()
    users = {"carol": CAROL_HASH}
    assert not authenticator.check(users, "nobody", b"pw")
    assert calls == [DUMMY_HASH.encode()]
    assert not authenticator.check(users, "nobody", b"pw")
    assert len(calls) == 1  # cached
    assert not authenticator.check(users, "nobody", b"other")
    assert len(calls) == 2  # different password, different entry
    # A rotated hash is a different cache key: no stale answer survives a password change.
    assert not authenticator.check({"carol": DAVE_HASH}, "carol", b"pw")
    assert not authenticator.check({"carol": CAROL_HASH}, "carol", b"pw")
    assert calls[2:] == [DAVE_HASH.encode(), CAROL_HASH.encode()]


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module.bcrypt, "checkpw", lambda pw, hashed: False)
    authenticator = BasicAuthenticator(cache_size=3)
    for i in range(10):
        authenticator.check({}, f"user{i}", b"pw")
    assert len(authenticator._cache) == 3


def test_password_longer_than_bcrypt_allows_is_just_wrong() -> None:
    assert not BasicAuthenticator().check({"carol": CAROL_HASH}, "carol", b"x" * 100)


def test_token_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(interval=10.0, burst=2, clock=clock)
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 5
    assert not bucket.allow()
    clock.now += 5
    assert bucket.allow()
    clock.now += 1000
    assert [bucket.allow() for _ in range(3)] == [True, True, False]  # refills up to the burst only
    with pytest.raises(ValueError):
        TokenBucket(interval=0, burst=1)


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime * 1_000_000_000, mtime * 1_000_000_000))


def test_watcher_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    config = tmp_path / "web.yml"
    _write(config, f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n", 1)
    watcher = ConfigWatcher(str(config), check_interval=1.0, clock=clock)
    assert watcher.current().config.users == ("carol",)

    _write(config, f"basic_auth_users:\n  dave: '{DAVE_HASH}'\n", 2)
    clock.now += 0.5
    assert watcher.current().config.users == ("carol",)  # not checked yet
    clock.now += 0.6
    assert watcher.current().config.users == ("dave",)


def test_watcher_keeps_last_good_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    config = tmp_path / "web.yml"
    _write(config, f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n", 1)
    watcher = ConfigWatcher(str(config), check_interval=1.0, clock=clock)
    good = watcher.current()

    _write(config, "basic_auth_users: [", 2)
    for _ in range(5):
        clock.now += 2
        assert watcher.current() is good
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    config.unlink()  # a deleted file is a change too, and also keeps the last good config
    clock.now += 2
    assert watcher.current() is good
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    _write(config, "", 3)
    clock.now += 2
    assert watcher.current().config.users == ()


def test_watcher_keeps_the_rate_limit_bucket_when_unchanged(tmp_path: Path) -> None:
    clock = FakeClock()
    config = tmp_path / "web.yml"
    _write(config, "rate_limit:\n  interval: 1h\n  burst: 1\n", 1)
    watcher = ConfigWatcher(str(config), check_interval=1.0, clock=clock)
    bucket = watcher.current().limiter
    assert bucket is not None and bucket.allow()

    _write(config, "rate_limit:\n  interval: 1h\n  burst: 1\nhttp_server_config: {}\n", 2)
    clock.now += 2
    assert watcher.current().limiter is bucket  # a fresh bucket would hand out a new burst
    _write(config, "rate_limit:\n  interval: 1h\n  burst: 2\n", 3)
    clock.now += 2
    assert watcher.current().limiter is not bucket
    _write(config, "", 4)
    clock.now += 2
    assert watcher.current().limiter is None


def test_watcher_start_with_a_bad_file_raises(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("nope: 1\n")
    with pytest.raises(WebConfigError, match="unknown key 'nope'"):
        ConfigWatcher(str(config))

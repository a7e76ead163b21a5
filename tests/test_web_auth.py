"""Unit level: basic-auth parsing and caching, the token bucket, and the reload watcher (with fake clocks)."""

from __future__ import annotations

import base64
import logging
import os
import threading
from pathlib import Path

import pytest

from hyperv_exporter.web import WebConfigError
from hyperv_exporter.web import auth as auth_module
from hyperv_exporter.web.auth import (
    DUMMY_HASH,
    BasicAuthenticator,
    FailureThrottle,
    is_bcrypt_hash,
    parse_basic_auth,
)
from hyperv_exporter.web.ratelimit import TokenBucket
from hyperv_exporter.web.reload import ConfigWatcher
from pki import Pki

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


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module.bcrypt, "checkpw", lambda pw, hashed: pw == b"good")
    monkeypatch.setattr(auth_module, "FAILURE_CACHE_SIZE", 5)
    authenticator = BasicAuthenticator(cache_size=3)
    users = {f"user{i}": CAROL_HASH for i in range(10)}
    for i in range(10):
        assert authenticator.check(users, f"user{i}", b"good")
        assert not authenticator.check(users, f"user{i}", b"bad")
    assert len(authenticator._good) == 3 and len(authenticator._bad) == 5


def test_failures_never_evict_a_valid_users_success(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: 32 clients with unique wrong passwords evicted the valid user from a shared LRU, so
    every valid scrape paid bcrypt behind the flood's queue."""
    calls: list[bytes] = []

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return password == b"carol123"

    monkeypatch.setattr(auth_module.bcrypt, "checkpw", checkpw)
    authenticator = BasicAuthenticator()
    users = {"carol": CAROL_HASH}
    assert authenticator.check(users, "carol", b"carol123")
    for i in range(5000):
        assert not authenticator.check(users, "carol" if i % 2 else "mallory", f"guess-{i}".encode())
    calls.clear()
    assert authenticator.check(users, "carol", b"carol123")
    assert calls == []  # still cached: no bcrypt for the valid user


def test_bcrypt_work_is_bounded_and_a_queue_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    running = threading.Semaphore(0)
    release = threading.Event()
    active: list[int] = []

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        active.append(1)
        running.release()
        release.wait(10)
        return False

    monkeypatch.setattr(auth_module.bcrypt, "checkpw", slow_checkpw)
    monkeypatch.setattr(auth_module, "BCRYPT_QUEUE_TIMEOUT", 0.05)
    authenticator = BasicAuthenticator(max_concurrent=2)
    threads = [
        threading.Thread(target=authenticator.check, args=({}, "mallory", f"p{i}".encode())) for i in range(2)
    ]
    for thread in threads:
        thread.start()
    assert running.acquire(timeout=10) and running.acquire(timeout=10)
    # Both slots busy: a third check gives up instead of queueing without bound.
    assert not authenticator.check({}, "mallory", b"third")
    assert len(active) == 2
    release.set()
    for thread in threads:
        thread.join(10)


def test_failing_clients_are_slowed_down_per_address() -> None:
    throttle = FailureThrottle(step=0.1, max_delay=1.0, window=60.0, size=2)
    delays = [throttle.failed("10.0.0.1", now=float(i)) for i in range(20)]
    assert delays[0] == 0.0 and delays[1] == pytest.approx(0.1) and delays[-1] == 1.0
    assert throttle.failed("10.0.0.2", now=20.0) == 0.0  # another client is not slowed by the first
    assert throttle.failed("10.0.0.1", now=200.0) == 0.0  # failures older than the window are forgotten
    throttle.failed("10.0.0.3", now=201.0)
    assert len(throttle._failures) == 2  # bounded


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

    _write(config, f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n  dave: '{CAROL_HASH}'\n", 3)
    clock.now += 2
    assert watcher.current().config.users == ("carol", "dave")


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
    _write(config, "http_server_config: {}\n", 4)
    clock.now += 2
    assert watcher.current().limiter is None


def test_watcher_start_with_a_bad_file_raises(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("nope: 1\n")
    with pytest.raises(WebConfigError, match="unknown key 'nope'"):
        ConfigWatcher(str(config))


# -- a reload never weakens security silently (issue 13) ---------------------------------------------

AUTH = f"basic_auth_users:\n  carol: '{CAROL_HASH}'\n"
WEAKER = {
    "truncated": "",
    "comment only": "# basic_auth_users removed for debugging\n",
    "users key without users": "basic_auth_users:\n",
    "users emptied": "basic_auth_users: {}\n",
    "another section only": "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    "unparseable": "basic_auth_users: [\n",
    "not UTF-8": b"basic_auth_users:\n  carol: \xff\n",
}


@pytest.mark.parametrize("name", sorted(WEAKER))
def test_a_reload_that_removes_basic_auth_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    clock = FakeClock()
    config = tmp_path / "web.yml"
    _write(config, AUTH, 1)
    watcher = ConfigWatcher(str(config), check_interval=1.0, clock=clock)
    good = watcher.current()
    text = WEAKER[name]
    if isinstance(text, bytes):
        config.write_bytes(text)
        os.utime(config, ns=(2 * 10**9, 2 * 10**9))
    else:
        _write(config, text, 2)
    clock.now += 2
    assert watcher.current() is good
    assert watcher.last_reload_successful is False
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    # A good change afterwards reloads, and the state says so.
    _write(config, AUTH + f"  dave: '{CAROL_HASH}'\n", 3)
    clock.now += 2
    assert watcher.current().config.users == ("carol", "dave")
    assert watcher.last_reload_successful is True


def _tls(pki_dir: Path, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {pki_dir}/server.pem\n  key_file: {pki_dir}/server.key\n{extra}"


TLS_WEAKER = {
    "client certificate no longer required": (
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n",
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {ca}\n",
    ),
    "client certificates switched off": (
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n",
        "",
    ),
    "SAN allowlist removed": (
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"
        "  client_allowed_sans: [client.example]\n",
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n",
    ),
}


@pytest.mark.parametrize("name", sorted(TLS_WEAKER))
def test_a_reload_that_weakens_tls_client_authentication_is_refused(tmp_path: Path, pki: Pki, name: str) -> None:
    for source, target in ((pki.server.cert, "server.pem"), (pki.server.key, "server.key")):
        (tmp_path / target).write_bytes(source.read_bytes())
    before, after = (t.format(ca=pki.ca.cert) for t in TLS_WEAKER[name])
    clock = FakeClock()
    config = tmp_path / "web.yml"
    _write(config, _tls(tmp_path, before), 1)
    watcher = ConfigWatcher(str(config), check_interval=1.0, clock=clock)
    good = watcher.current()
    _write(config, _tls(tmp_path, after), 2)
    clock.now += 2
    assert watcher.current() is good and watcher.last_reload_successful is False
    _write(config, "", 3)  # TLS off altogether: refused as well
    clock.now += 2
    assert watcher.current() is good and watcher.last_reload_successful is False

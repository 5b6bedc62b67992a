"""Backfill: objects of another bucket are copied into the inbox (originals untouched) and routed by the inbox's
own notifications; objects already in the inbox get the reconciler's notification; a rate limit paces both.
"""

from __future__ import annotations

import io

import pytest

from breedfilter import backfill as bf
from breedfilter.reconcile_cli import resolve_target
from tests.images import image_bytes
from tests.support import assert_routed_once, lose_notifications, queued_bodies

LIBRARY = "photo-library"


class FakeClock:
    """Time that passes only when slept: the limiter's pacing counted, never timed."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def library(harness):
    """A photo library bucket beside the stack: two photos under 2024/, a folder marker, one elsewhere."""
    s3 = harness.s3
    s3.create_bucket(Bucket=LIBRARY)
    photos = {"2024/red one.jpg": image_bytes("red"), "2024/trip/blue.png": image_bytes("blue", "PNG")}
    for key, body in photos.items():
        s3.put_object(Bucket=LIBRARY, Key=key, Body=body)
    s3.put_object(Bucket=LIBRARY, Key="2024/empty-folder/", Body=b"")
    s3.put_object(Bucket=LIBRARY, Key="2023/green.jpg", Body=image_bytes("green"))
    return {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=LIBRARY)["Contents"]}


def target():
    return resolve_target(None)  # the twin, from the environment the harness exported


def library_now(harness) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for o in harness.s3.list_objects_v2(Bucket=LIBRARY)["Contents"]}


def test_another_bucket_is_copied_into_the_inbox_and_routed_originals_untouched(harness, library):
    report = bf.backfill(target(), f"s3://{LIBRARY}/2024/", progress=False)
    assert report.mode == "copy" and report.done == 2 and report.folder_markers == 1 and report.failed == []
    assert harness.keys(harness.inbox) == ["2024/red one.jpg", "2024/trip/blue.png"]
    # the inbox's own notifications name the inbox, never the library
    assert {b["Records"][0]["s3"]["bucket"]["name"] for b in queued_bodies(harness)} == {harness.inbox}
    harness.drain()
    assert_routed_once(harness, {"2024/red one.jpg": "red", "2024/trip/blue.png": "blue"})
    assert library_now(harness) == library  # every original still there, unchanged


def test_into_puts_the_copies_below_a_prefix(harness, library):
    report = bf.backfill(target(), f"s3://{LIBRARY}/2024/trip", into="library/", progress=False)
    assert report.done == 1
    assert f"into s3://{harness.inbox}/library/ " in bf.render(report, "the twin")
    assert harness.keys(harness.inbox) == ["library/2024/trip/blue.png"]
    harness.drain()
    assert_routed_once(harness, {"library/2024/trip/blue.png": "blue"})
    assert library_now(harness) == library


def test_inbox_objects_are_sent_as_notifications(harness):
    harness.put("old/a.jpg", image_bytes("red"))
    harness.put("old/b.jpg", image_bytes("green"))
    harness.put("new/c.jpg", image_bytes("blue"))
    lose_notifications(harness)
    report = bf.backfill(target(), f"s3://{harness.inbox}/old/", progress=False)
    assert report.mode == "notify" and report.done == 2 and report.queue_url == harness.stack.queue_url
    bodies = queued_bodies(harness)
    assert [b["breedfilter"]["origin"] for b in bodies] == ["backfill", "backfill"]
    harness.drain()
    assert harness.keys(harness.sorted) == ["green/old/b.jpg", "red/old/a.jpg"]
    assert harness.keys(harness.inbox) == ["new/c.jpg"]  # outside the prefix: left alone


def test_into_makes_no_sense_for_inbox_objects(harness):
    with pytest.raises(bf.BackfillError, match="already there"):
        bf.backfill(target(), f"s3://{harness.inbox}/x/", into="y/", progress=False)


def test_dry_run_copies_and_sends_nothing(harness, library, capsys):
    assert bf.main([f"s3://{LIBRARY}/2024/", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"copy s3://{LIBRARY}/2024/red one.jpg -> s3://{harness.inbox}/2024/red one.jpg" in out
    assert f"would copy into the inbox 2 objects from s3://{LIBRARY}/2024/" in out
    assert harness.keys(harness.inbox) == [] and harness.queue_depth() == 0

    harness.put("stays.jpg", image_bytes("red"))
    lose_notifications(harness)
    assert bf.main([f"s3://{harness.inbox}/", "--dry-run"]) == 0
    assert f"notify s3://{harness.inbox}/stays.jpg (version " in capsys.readouterr().out
    assert harness.queue_depth() == 0


def test_rate_limit_is_honoured(harness, library):
    fake = FakeClock()
    limiter = bf.RateLimiter(4.0, clock=fake.clock, sleep=fake.sleep)
    for i in range(6):
        harness.s3.put_object(Bucket=LIBRARY, Key=f"burst/{i}.jpg", Body=image_bytes("red"))
    report = bf.backfill(target(), f"s3://{LIBRARY}/burst/", limiter=limiter, progress=False)
    assert report.done == 6
    assert len(fake.sleeps) == report.rate_waits == 5  # every object after the first waited its turn
    assert fake.now - 100.0 == pytest.approx(5 / 4.0)  # 6 objects at 4/s span 1.25 s


def test_rate_limiter_spaces_calls_and_does_not_bank_idle_time():
    fake = FakeClock()
    limiter = bf.RateLimiter(2.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire()
    assert fake.sleeps == [0.5, 0.5]
    fake.now += 10.0  # idle for a while: no burst allowed afterwards beyond the rate
    limiter.acquire()
    limiter.acquire()
    assert fake.sleeps == [0.5, 0.5, 0.5]
    unlimited = bf.RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        unlimited.acquire()
    assert unlimited.waits == 0


def test_progress_lines_without_a_terminal():
    stream = io.StringIO()
    progress = bf.Progress(False, "backfill s3://x/", every=2, stream=stream)
    for _ in range(5):
        progress.update(failed=0)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "backfill s3://x/: 2 objects (0 failed)",
        "backfill s3://x/: 4 objects (0 failed)",
    ]


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = bf.Progress(True, "backfill", stream=stream)
    progress.update(failed=0)
    progress.close()
    assert "1obj" in stream.getvalue().replace(" ", "")  # tqdm's counter


def test_cli_copies_resumes_after_a_key_and_reports_failures(harness, library, capsys):
    assert bf.main([f"s3://{LIBRARY}/2024/", "--start-after", "2024/red one.jpg", "--rate", "1000"]) == 0
    out = capsys.readouterr().out
    assert f"copied 1 objects from s3://{LIBRARY}/2024/ into s3://{harness.inbox}/" in out
    assert "last key: 2024/trip/blue.png" in out
    assert harness.keys(harness.inbox) == ["2024/trip/blue.png"]

    assert bf.main(["s3://no-such-library/x/"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err
    assert bf.main(["photos/"]) == 2
    assert bf.main([f"s3://{LIBRARY}/", "--rate", "0"]) == 2


def test_a_failed_copy_is_reported_and_the_rest_go_on(harness, library, monkeypatch):
    real_copy = bf.copy_into_inbox

    def flaky(s3, bucket, work, inbox, into):
        if "red" in work.key:
            raise RuntimeError("AccessDenied on this one")
        return real_copy(s3, bucket, work, inbox, into)

    monkeypatch.setattr(bf, "copy_into_inbox", flaky)
    report = bf.backfill(target(), f"s3://{LIBRARY}/2024/", progress=False)
    assert report.done == 1 and report.failed == [("2024/red one.jpg", "AccessDenied on this one")]
    assert "1 failed" in bf.render(report, "here")


def test_ctrl_c_says_where_to_resume(harness, library, monkeypatch, capsys):
    real_copy = bf.copy_into_inbox
    copied = []

    def interrupted_on_the_second(s3, bucket, work, inbox, into):
        if copied:
            raise KeyboardInterrupt
        copied.append(work.key)
        return real_copy(s3, bucket, work, inbox, into)

    monkeypatch.setattr(bf, "copy_into_inbox", interrupted_on_the_second)
    assert bf.main([f"s3://{LIBRARY}/2024/"]) == 130
    out = capsys.readouterr().out
    assert "interrupted after '2024/red one.jpg': resume with --start-after '2024/red one.jpg'" in out
    monkeypatch.setattr(bf, "copy_into_inbox", real_copy)
    assert bf.main([f"s3://{LIBRARY}/2024/", "--start-after", "2024/red one.jpg"]) == 0
    assert harness.keys(harness.inbox) == ["2024/red one.jpg", "2024/trip/blue.png"]

"""The job runner: every notice arrives, but only the newest preview waits for a busy GUI thread."""

import threading
import time

import pytest

from editor.jobs import JobKind, JobRunner


@pytest.mark.parametrize("with_preview_thread", [False, True])
def test_a_busy_gui_gets_the_newest_preview_and_every_step(qtbot, with_preview_thread):
    prepared_on = []

    def prepare(payload):
        prepared_on.append(threading.current_thread().name)
        return payload * 10

    runner = JobRunner("test", prepare=prepare if with_preview_thread else None)
    notices, newest, finished = [], [], []
    runner.notice.connect(lambda job_id, payload: notices.append(payload))
    runner.newest.connect(lambda job_id, payload: newest.append(payload))
    runner.finished.connect(lambda job, result: finished.append(result))
    done = threading.Event()

    def work(context):
        for step in range(1, 31):
            context.notify(step)
            context.hand_over(step)
            time.sleep(0.002)
        time.sleep(0.2)  # the preview thread catches up with the last one
        done.set()
        return "ok"

    runner.submit(JobKind.GENERATE, work)
    assert done.wait(10)  # the GUI thread is busy the whole time: it handles no event until the job is over
    qtbot.waitUntil(lambda: finished == ["ok"], timeout=10000)
    assert notices == list(range(1, 31))  # the progress hears of every step, in order
    expected = 300 if with_preview_thread else 30
    assert newest == [expected]  # 29 older previews were dropped, not queued
    if with_preview_thread:
        assert set(prepared_on) == {"sandcastle-test-hand-over"}  # made on the preview thread, not the worker or GUI thread
    assert runner.shutdown(10000)


def test_previews_of_a_cancelled_job_are_not_shown(qtbot):
    runner = JobRunner("test", prepare=lambda payload: payload)
    newest, cancelled = [], []
    runner.newest.connect(lambda job_id, payload: newest.append(payload))
    runner.cancelled.connect(cancelled.append)
    started = threading.Event()

    def work(context):
        started.set()
        while not context.token.cancelled:
            context.hand_over("late")
            time.sleep(0.005)
        context.token.raise_if_cancelled()

    job = runner.submit(JobKind.GENERATE, work)
    assert started.wait(10)
    runner.cancel()
    qtbot.waitUntil(lambda: cancelled == [job], timeout=10000)
    qtbot.wait(50)
    count = len(newest)
    qtbot.wait(100)
    assert len(newest) == count  # nothing arrives for it any more
    assert runner.shutdown(10000)

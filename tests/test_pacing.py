"""The pacer (tcpchat.pacing): file data is let onto a connection only while what is queued stays under ~100 ms of
what the link carries, measured from how fast the peer acknowledges."""

import socket

from tcpchat import pacing
from tcpchat.pacing import FLOOR, MIN_CHUNK, TARGET, Pacer


def run_link(pacer, rate, seconds, step=0.01, chunk=65536):
    """A simulated link of ``rate`` bytes/s fed by the pacer; the most queued at any time."""
    acked = queued = 0.0
    worst = 0.0
    t = 0.0
    for _ in range(int(seconds / step)):
        pacer.sample(t, int(acked), int(queued))
        room = pacer.room(int(queued))
        while room > 0:
            size = pacer.chunk(chunk)
            queued += size
            room -= size
        worst = max(worst, queued / rate)
        moved = min(queued, rate * step)
        queued -= moved
        acked += moved
        t += step
    return worst


def test_on_a_slow_link_the_queue_stays_near_a_tenth_of_a_second():
    pacer = Pacer()
    run_link(pacer, 125_000, 3.0)  # 1 Mbit/s: learn it
    assert 0.7 * 125_000 < pacer.rate < 1.3 * 125_000
    worst = run_link(pacer, 125_000, 3.0)
    assert worst < 2.5 * TARGET  # a chat frame waits ~0.1-0.25 s at most, not the seconds a 64 KiB frame would
    assert pacer.chunk(65536) < 65536  # and data frames shrink to fit


def test_on_a_fast_link_the_budget_grows_out_of_the_way():
    pacer = Pacer()
    run_link(pacer, 500e6, 1.0, step=0.001)
    assert pacer.budget > 10 * 65536 and pacer.chunk(65536) == 65536


def test_idle_time_does_not_look_like_a_slow_link():
    pacer = Pacer()
    run_link(pacer, 10e6, 1.0)
    learned = pacer.rate
    for t in range(100):  # nothing to send for a second
        pacer.sample(10 + t * 0.01, 10**9, 0)
    assert pacer.rate >= 0.9 * learned
    assert pacer.budget >= FLOOR and pacer.chunk(65536) >= MIN_CHUNK


def test_the_kernel_is_asked_what_is_queued():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    try:
        sender.setblocking(False)
        sent = 0
        try:
            for _ in range(1000):  # until the receiver's window and our send buffer are full
                sent += sender.send(b"x" * 65536)
        except BlockingIOError:
            pass
        acked, queued = pacing.link_state(sender)
        assert queued > 0 and acked + queued >= sent  # (the SYN counts one)
    finally:
        for s in (sender, receiver, listener):
            s.close()

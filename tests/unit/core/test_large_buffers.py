"""Password hashes run on one thread per process (``idp.crypto._Lane``): four request
threads checking passwords never hash side by side nor hold a buffer each (9 MiB by default);
a served worker (``give_back_large_buffers``) keeps none after the checks."""

from __future__ import annotations

import subprocess
import sys
import threading

from idp.crypto import Passwords

SCRIPT = """
import sys, threading
from idp.crypto import Passwords
from idp.wsgi_server import give_back_large_buffers
if sys.argv[1] == "served":
    give_back_large_buffers()
passwords = Passwords(time_cost=4, memory_kib=9216, parallelism=1)
stored = passwords.hash("correct horse battery")
if sys.argv[1] == "direct":  # each thread hashing for itself, as without the lane
    verify = lambda: passwords._hasher.verify(stored, "correct horse battery")
else:
    verify = lambda: passwords.verify(stored, "correct horse battery")
def rss():
    line = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
    return int(line.split()[1]) // 1024
before = rss()
def check():
    for _ in range(5):
        verify()
threads = [threading.Thread(target=check) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(rss() - before)
"""


def growth(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_four_threads_checking_passwords_keep_one_buffer_or_none():
    assert growth("direct") >= 20  # what the lane is for: a buffer per thread
    assert growth("lane") < 4  # its one buffer, resident since the first hash, is all
    assert growth("served") < 4  # mapped for each hash, returned after it


def test_hashes_run_one_at_a_time_on_one_thread():
    passwords = Passwords(time_cost=1, memory_kib=64, parallelism=1)
    stored = passwords.hash("pw")
    seen, running, most = set(), [0], [0]
    guard = threading.Lock()
    original = passwords._hasher

    class Watched:
        def verify(self, *args):
            with guard:
                running[0] += 1
                most[0] = max(most[0], running[0])
                seen.add(threading.get_ident())
            try:
                return original.verify(*args)
            finally:
                with guard:
                    running[0] -= 1

    passwords._hasher = Watched()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(passwords.verify(stored, "pw")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert most[0] == 1
    assert passwords.verify(stored, "wrong") is False
    assert passwords.verify("not a hash", "pw") is False
    assert passwords.verify(None, "pw") is False

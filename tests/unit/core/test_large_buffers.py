"""A worker gives argon2's memory back after each password check (``give_back_large_buffers``):
without it, glibc keeps about 9 MiB resident per thread that ever checked a password."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, threading
from idp.wsgi_server import give_back_large_buffers
if sys.argv[1] == "fixed":
    give_back_large_buffers()
from idp.crypto import Passwords
passwords = Passwords(time_cost=4, memory_kib=9216, parallelism=1)
stored = passwords.hash("correct horse battery")
def rss():
    line = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
    return int(line.split()[1]) // 1024
before = rss()
def check():
    for _ in range(5):
        passwords.verify(stored, "correct horse battery")
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


def test_four_threads_checking_passwords_keep_nothing_resident():
    assert growth("default") >= 20  # what the fix is for: glibc kept the buffers
    assert growth("fixed") < 8

#!/usr/bin/env python3
"""Prints a loopback TCP port that is free now, for a test's own server
(tests/db/pg.sh's PostgreSQL, scripts/redis-test.sh's Redis).

With PARLEY_TEST_PORTS=LO-HI (a shared machine's allowance for one test run,
as tests/e2e/node/harness.mjs reads it) the port is one of that range, tried
from a random place in it so that concurrent callers rarely pick the same
one; without it, any free port. Exits 1 when the whole range is busy. The
port is only free when checked: callers retry with another when their
server cannot bind it.
"""
import os
import random
import re
import socket
import sys


def bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()


def main():
    spec = os.environ.get("PARLEY_TEST_PORTS", "")
    m = re.fullmatch(r"(\d+)-(\d+)", spec)
    if not m or int(m[1]) > int(m[2]):
        print(bindable(0))
        return 0
    lo, hi = int(m[1]), int(m[2])
    n = hi - lo + 1
    start = random.randrange(n)
    for i in range(n):
        port = bindable(lo + (start + i) % n)
        if port:
            print(port)
            return 0
    print(f"free-port: no free port in PARLEY_TEST_PORTS={spec}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

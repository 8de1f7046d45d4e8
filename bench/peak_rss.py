"""``python bench/peak_rss.py ARGS``: run ``gateway ARGS``, then print its peak RSS on stderr.

The last line on stderr is ``peak-rss-kib N``: VmHWM, the peak the kernel counted for this
program, which exec resets (``ru_maxrss`` would also hold the forking parent's own peak). Used by
``bench_client_memory.py`` and by the client's memory test in ``tests/test_cli.py``.
"""

import sys

from gateway.__main__ import main

code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print("peak-rss-kib", hwm, file=sys.stderr)
sys.exit(code)

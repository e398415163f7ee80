"""``metarobust`` on the command line, with this rank's gloo worker threads demoted just
before the run's last collective: moved to SCHED_IDLE on one CPU (where busy loops run),
so a worker is likely to be preempted between completing that collective and dropping its
work. That is the window in which a process group left alive past teardown aborts the
interpreter's finalization ("terminate called without an active exception").

::

    torchrun --standalone --nproc_per_node=2 experiments/scripts/starved_gloo_cli.py CPU train ...

The thread name is torch's; where it differs, the run is merely unaided.
"""

import glob
import os
import sys

from metarobust import distributed
from metarobust.cli import main

CPU = int(sys.argv[1])
run_on_main = distributed.Distributed.run_on_main


def demoted(self, fn):
    for task in glob.glob("/proc/self/task/*"):
        try:  # a thread may end meanwhile
            with open(task + "/comm") as f:
                if f.read().strip() != "pt_gloo_runloop":
                    continue
            tid = int(os.path.basename(task))
            os.sched_setaffinity(tid, {CPU})
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    return run_on_main(self, fn)


distributed.Distributed.run_on_main = demoted
sys.exit(main(sys.argv[2:]))

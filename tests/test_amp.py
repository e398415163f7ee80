"""metarobust._amp: autocast state is read per thread and re-entered in worker threads."""

from __future__ import annotations

import threading

import torch

from metarobust import _amp


def test_state_inside_and_outside_autocast():
    assert _amp.autocast_dtype("cpu") is None and _amp.current_autocast() == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _amp.autocast_dtype("cpu") is torch.bfloat16
        assert _amp.current_autocast() == {"cpu": torch.bfloat16}
    assert _amp.autocast_dtype("cpu") is None


def test_a_worker_thread_enters_the_callers_autocast():
    seen = {}

    def work(state):
        seen["before"] = _amp.autocast_dtype("cpu")  # thread-local: off in a new thread
        with _amp.entered(state):
            seen["inside"] = _amp.autocast_dtype("cpu")
            seen["matmul"] = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype

    with torch.autocast("cpu", dtype=torch.bfloat16):
        t = threading.Thread(target=work, args=(_amp.current_autocast(),))
        t.start()
        t.join()
    assert seen == {"before": None, "inside": torch.bfloat16, "matmul": torch.bfloat16}

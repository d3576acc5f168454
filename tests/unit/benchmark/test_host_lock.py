"""One sweep at a time per host: a sweep waits for the host's other sweep and for its validations, validations
run beside each other, and a lock whose holder dies is released by the kernel."""

import subprocess
import sys
import threading

from tasks.benchmark import host_lock


def _start(lock, entered: threading.Event, release: threading.Event) -> threading.Thread:
    def hold():
        with lock():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_a_sweep_waits_for_the_hosts_other_sweep_and_validations_share():
    first_in, first_out = threading.Event(), threading.Event()
    first = _start(host_lock.sweep, first_in, first_out)
    assert first_in.wait(10)
    second_in, second_out = threading.Event(), threading.Event()
    second = _start(host_lock.sweep, second_in, second_out)
    validation_in, validation_out = threading.Event(), threading.Event()
    validation = _start(host_lock.beside_others, validation_in, validation_out)
    assert not second_in.wait(0.3) and not validation_in.wait(0.1)  # the host is measuring
    first_out.set()
    first.join(10)
    assert second_in.wait(10) or validation_in.wait(10)  # one of them takes the host next
    second_out.set()
    validation_out.set()
    second.join(10)
    validation.join(10)

    # validations share the host with each other
    a_in, a_out, b_in, b_out = (threading.Event() for _ in range(4))
    a, b = _start(host_lock.beside_others, a_in, a_out), _start(host_lock.beside_others, b_in, b_out)
    assert a_in.wait(10) and b_in.wait(10)
    a_out.set()
    b_out.set()
    a.join(10)
    b.join(10)


def test_a_lock_whose_holder_died_is_free():
    holder = subprocess.Popen(
        [sys.executable, "-c", "from tasks.benchmark import host_lock; import os\n"
         "with host_lock.sweep():\n    os._exit(9)"],  # dies holding the host
    )  # fmt: skip
    assert holder.wait(60) == 9
    with host_lock.sweep() as waited:
        assert waited >= 0

"""malloc_tuning, read back from the process's own memory map in a child process: with return_large_buffers a
1 MiB buffer gets a mapping of its own (unmapped when freed), also after glibc would have raised its threshold;
with keep_message_buffers (and glibc's default after a first free) it is carved from the heap."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

CHILD = r"""
import json, sys
import numpy as np
from h1_training import malloc_tuning
applied = {"return": malloc_tuning.return_large_buffers, "keep": malloc_tuning.keep_message_buffers,
           "default": lambda: True}[sys.argv[1]]()
def heap_range():
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                return lo, hi
    return 0, 0
warm = np.ones(1 << 20, np.uint8); del warm  # glibc's default raises its mmap threshold on this free
block = np.ones(1 << 20, np.uint8)
lo, hi = heap_range()
print(json.dumps({"applied": applied, "from_heap": lo <= block.ctypes.data < hi}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings apply to glibc only")
def test_return_large_buffers_maps_each_large_block_and_unmaps_it_when_freed():
    got = _run("return")
    assert got == {"applied": True, "from_heap": False}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings apply to glibc only")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_otherwise_a_large_block_comes_from_the_heap(mode):
    got = _run(mode)
    assert got == {"applied": True, "from_heap": True}

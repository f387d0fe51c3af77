"""glibc malloc settings of a whole process (no rclpy): the one place that calls ``mallopt``.

Two of our processes move megabytes per message (3 camera images in, or out, of every inference) and want opposite
things from the allocator:

- the policy server wants speed: :func:`keep_message_buffers` keeps freed message buffers for the next message;
- the HIL session wants a flat memory line over a day of episodes: :func:`return_large_buffers` hands every large
  buffer back to the kernel when it is freed.

Hand-written because it is two ``mallopt`` calls; nothing here changes a process whose C library is not glibc.
"""

from __future__ import annotations

import ctypes
import platform

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BUFFERS_BELOW = 64 * 1024 * 1024    # messages up to this size reuse heap memory instead of fresh mmaps
KEEP_FREE_HEAP = 256 * 1024 * 1024       # freed heap kept for the next message (not returned to the kernel)
OWN_MAPPING_FROM = 256 * 1024            # return_large_buffers: blocks from this size get a mapping of their own


def _mallopt(*settings: tuple[int, int]) -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return all(libc.mallopt(param, value) for param, value in settings)
    except (OSError, AttributeError):
        return False


def keep_message_buffers() -> bool:
    """Make glibc keep the memory of freed message buffers for the next message (the policy server).

    Every inference receives a 0.5-3 MB frame that websockets and msgpack copy three or four times; with glibc's
    defaults those buffers are fresh ``mmap``s (or heap that is trimmed back to the kernel) and every 4 KiB page
    of every copy faults in again on the next message. Measured on the policy-loop bench (3 x 224x224, 2 cores):
    the server's system CPU per request 560 -> 160 us. Costs up to ``KEEP_FREE_HEAP`` of freed heap kept
    around. Returns False (and changes nothing) where the C library is not glibc."""
    return _mallopt((M_MMAP_THRESHOLD, KEEP_BUFFERS_BELOW), (M_TRIM_THRESHOLD, KEEP_FREE_HEAP))


def return_large_buffers() -> bool:
    """Give every block of ``OWN_MAPPING_FROM`` or more a mapping of its own, unmapped when freed (the session).

    glibc's default threshold for that moves up to 32 MB once a large block is freed, after which decoded images
    (0.9 MB each) and observation frames (2.7 MB) are carved from the threads' malloc arenas, where a long-lived
    small block can pin the freed space around it. Measured in the soak (``h1-training bench soak``, 3 x 640x480,
    no faults): hil_session's RSS rose 183 -> 240 MB in 12 minutes, one thread arena filled to 62 of its 64 MB.
    Costs the page faults of touching each such buffer anew (a few ms per inference at 640x480, on the
    inference thread, off the 50 Hz control thread). Returns False (and changes nothing) where the C library is not
    glibc."""
    return _mallopt((M_MMAP_THRESHOLD, OWN_MAPPING_FROM))

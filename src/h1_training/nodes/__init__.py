"""The ROS 2 nodes (thin adapters over the plain-Python logic).

Importing this package sets one process-wide DDS default before any participant exists: Fast DDS's built-in
transports are UDPv4 only (``FASTDDS_BUILTIN_TRANSPORTS``, kept when already set). With its default shared-memory
transport, a subscriber killed with SIGKILL and restarted can stay matched yet get no more large messages from a
publisher that outlived it (eProsima/Fast-DDS#5469, #5053, #2811): seen here as a recorder restarted after a
kill -9 that never received a camera frame again (run 5 and run 9 of two `bench recorder-kill --runs 20` series),
i.e. every episode after a recorder crash recorded with placeholder images. Loopback UDP carries the three
camera streams (~5 MB/s) without trouble.
"""

import os

os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")

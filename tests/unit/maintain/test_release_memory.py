from __future__ import annotations

import numpy as np
import psutil
import pyarrow as pa

from lakehouse.maintain.runner import release_memory


def test_memory_a_pass_freed_goes_back_to_the_system():
    """A pass that built ~400 MiB of Arrow data in many chunks (as a compaction does)
    and freed it leaves the process about where it started once memory is released:
    the allocator's freed pages do not stay resident for the life of the loop."""
    process = psutil.Process()
    release_memory()
    start = process.memory_info().rss
    chunks = [pa.table({"value": pa.array(np.random.rand(250_000))}) for _ in range(200)]
    whole = pa.concat_tables(chunks).combine_chunks()
    assert process.memory_info().rss - start > 300 * 2**20
    del chunks, whole
    release_memory()
    assert process.memory_info().rss - start < 64 * 2**20

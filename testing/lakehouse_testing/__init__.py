"""What the tests and the benchmarks share: the gateway as a process, a bronze writer,
readings envelopes, the dashboards' names and the build of the deploy tests' tools.

Installed by `make setup` (`pip install -e ./testing`) and never shipped: neither the
`lakehouse` distribution nor its image contains it, and lakehouse imports none of it.
"""

"""Day-two maintenance: compaction, Nessie-safe garbage collection and retention."""

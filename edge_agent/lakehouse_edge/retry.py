"""One retry policy, in seconds: exponential backoff with jitter, capped, reset on success.

Worked example with the defaults (initial 1 s, multiplier 2, cap 60 s, jitter 20 %):
failures wait about 1, 2, 4, 8, 16, 32, 60, 60, … seconds (each ±20 %); a 429 or 503
with `Retry-After: 30` waits at least 30 s; the first success resets the next wait
to 1 s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class RetryPolicy:
    initial: float = 1.0
    multiplier: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2
    _failures: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after one more failure."""
        base = min(self.cap, self.initial * self.multiplier**self._failures)
        self._failures += 1
        delay = base * (1 + self._rng.uniform(-self.jitter, self.jitter))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, max(self.cap, retry_after or 0.0))

    def succeeded(self) -> None:
        self._failures = 0

"""Send queued batches to the gateway: gzip, idempotency key, retries with backoff.

What the gateway refuses for good is parked as failed with its reason, and only that:
a batch too large for one message is split and sent again; a batch with a refused
reading fails that reading and sends the others again under a new batch id (the
gateway accepted none of them). A fresh queue is anchored first: its seqs follow the
highest one the gateway accepted from the device."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

from lakehouse_edge.queue import Batch, DurableQueue
from lakehouse_edge.retry import RetryPolicy

log = logging.getLogger(__name__)

# Answers that a retry cannot change: the batch is kept as failed, not resent.
PERMANENT = {400, 403, 409, 413, 415}


class Uploader:
    def __init__(self, queue: DurableQueue, gateway: str, token: str, *, batch_size: int,
                 compress: bool = True, timeout: float = 30.0) -> None:  # fmt: skip
        self.queue = queue
        self.url = gateway.rstrip("/") + "/v1/readings"
        self.sequence_url = gateway.rstrip("/") + "/v1/sequence"
        self.token = token
        self.batch_size = batch_size
        self.compress = compress
        self.timeout = timeout
        self.retry = RetryPolicy()
        self.failing_since: Optional[float] = None

    def send_one(self) -> Optional[float]:
        """Upload one batch. Returns seconds to wait before the next try (None: go on)."""
        if not self.queue.anchored:
            delay = self._anchor()
            if delay is not None:
                return delay
        batch = self.queue.next_batch(self.batch_size)
        if batch is None:
            return 1.0
        status, retry_after, problem = self._post(batch)
        if status in (200, 202):
            self.queue.ack(batch)
            self.retry.succeeded()
            if self.failing_since is not None:
                log.info(
                    "gateway reachable again after %.0f s", time.monotonic() - self.failing_since
                )
                self.failing_since = None
            return None
        if isinstance(status, int) and status in PERMANENT:
            self._refused(batch, status, problem)
            return None
        self.queue.release(batch)
        delay = self.retry.next_delay(retry_after)
        # One line when uploads start failing, not one per retry.
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("upload failed (%s); retrying with backoff, readings kept", status)
        else:
            log.debug("upload failed (%s); retrying in %.1f s", status, delay)
        return delay

    def _anchor(self) -> Optional[float]:
        """Ask the gateway where this device's seqs stand; None once anchored."""
        request = urllib.request.Request(
            self.sequence_url, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                max_seq = json.loads(response.read(1 << 16)).get("max_seq")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                wait = _retry_after(exc.headers.get("Retry-After"))
                return self._unreachable(f"HTTP {exc.code}", wait)
            # A gateway without the endpoint keeps no floor: number from 1.
            max_seq = None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return self._unreachable(f"network: {exc}", None)
        shift = self.queue.anchor(max_seq if isinstance(max_seq, int) else None)
        if shift:
            log.warning("the gateway has readings of this device up to seq %d: the queued "
                        "readings were renumbered to follow them", shift)  # fmt: skip
        return None

    def _unreachable(self, status: str, retry_after: Optional[float]) -> float:
        delay = self.retry.next_delay(retry_after)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("gateway unreachable (%s); retrying with backoff, readings kept", status)
        return delay

    def _refused(self, batch: Batch, status: int, problem: Dict[str, Any]) -> None:
        code = str(problem.get("type", "")).rsplit("/", 1)[-1] or f"http_{status}"
        if status == 413 and len(batch.seqs) > 1:
            self.batch_size = max(1, len(batch.seqs) // 2)
            log.warning("gateway: batch of %d readings too large (%s); sending batches of "
                        "at most %d", len(batch.seqs), code, self.batch_size)  # fmt: skip
            self.queue.refuse(batch, {})
            return
        errors = problem.get("errors") if status == 400 else None
        if isinstance(errors, list) and errors:
            bad: Dict[int, str] = {}
            for error in errors:
                index = error.get("index") if isinstance(error, dict) else None
                if isinstance(index, int) and 0 <= index < len(batch.seqs):
                    bad[batch.seqs[index]] = str(error.get("reason") or code)
            if bad and len(bad) == len(errors):
                self.queue.refuse(batch, bad)
                log.error("gateway refused %d reading(s) of batch %s (%s); sending the "
                          "other %d again", len(bad), batch.batch_id,
                          ", ".join(sorted(set(bad.values()))),
                          len(batch.seqs) - len(bad))  # fmt: skip
                return
        log.error("gateway refused batch %s for good (HTTP %s, %s)", batch.batch_id, status, code)
        self.queue.fail(batch, code)

    def _post(self, batch: Batch) -> "Tuple[int | str, Optional[float], Dict[str, Any]]":
        body = json.dumps(batch.readings, separators=(",", ":")).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": batch.batch_id,
        }
        if self.compress:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, None, {}
        except urllib.error.HTTPError as exc:
            return exc.code, _retry_after(exc.headers.get("Retry-After")), _problem(exc)
        except (urllib.error.URLError, OSError) as exc:
            return f"network: {exc}", None, {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delay = self.send_one()
            except Exception:  # the thread must outlive any one failure (a locked queue, …)
                log.exception("uploader error; retrying")
                delay = self.retry.next_delay(None)
            if delay:
                stop.wait(delay)

    def drain(self) -> int:
        """Send until nothing is ready; returns how many batches failed for good."""
        while True:
            counts = self.queue.counts()
            if counts["ready"] == 0 and counts["inflight"] == 0:
                return counts["failed"]
            delay = self.send_one()
            if delay:
                threading.Event().wait(delay)


def _problem(error: urllib.error.HTTPError) -> Dict[str, Any]:
    """The problem+json body of a refusal ({} when there is none)."""
    try:
        body = json.loads(error.read(1 << 20) or b"{}")
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value else None
    except ValueError:
        return None

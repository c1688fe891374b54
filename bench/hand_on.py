"""A queue sender for planning benchmarks: plan messages stay in the process (the next invocation's input),
batch messages go on to Azurite. Imported inside the child processes that measure planning."""

from __future__ import annotations

from shared.store import QueueSender


class HandOnInProcess(QueueSender):
    """Plan messages stay here (the next invocation's input); batch messages go to Azurite."""

    def __init__(self, inner: QueueSender) -> None:
        self.inner, self.plans = inner, []

    def send(self, queue_name: str, body: str, *, delay_seconds: float = 0) -> None:
        if '"kind":"plan"' in body:
            self.plans.append(body)
        else:
            self.inner.send(queue_name, body, delay_seconds=delay_seconds)

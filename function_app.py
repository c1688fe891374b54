"""Azure Functions entry point (Python v2 model): triggers and bindings only.

Each function hands its message to one handler in `shared.steps.handlers` with the worker's clients and
the current time. Queue names come from app settings (`%SUBMIT_QUEUE%`: the users' inbox of job
messages; `%WORK_QUEUE%`: the app's own batch and plan messages; `%POLL_QUEUE%`); the connection is the
Functions storage account (`AzureWebJobsStorage`). Each invocation runs in a span of its own, which also records
the message's age at pickup (`shared.telemetry`, docs/observability.md).

No trigger reads the `<queue>-poison` queues: they are almost always empty, and an idle queue trigger
still polls twice a second. The `sweep` timer drains them (`shared.steps.poison`, docs/performance.md).
"""

from datetime import UTC, datetime

import azure.functions as func

from shared.services import services_from_env
from shared.steps.handlers import (
    handle_blob_event,
    handle_poll_message,
    handle_submit_message,
    handle_sweep,
    handle_work_message,
)
from shared.telemetry import invocation

app = func.FunctionApp()

STORAGE = "AzureWebJobsStorage"


@app.function_name("submit")
@app.queue_trigger(arg_name="msg", queue_name="%SUBMIT_QUEUE%", connection=STORAGE)
def submit(msg: func.QueueMessage) -> None:
    services, now = services_from_env(), datetime.now(UTC)
    with invocation("submit", queue=services.settings.submit_queue, inserted=msg.insertion_time, now=now):
        handle_submit_message(msg.get_body(), message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1,
                              services=services, now=now)


@app.function_name("work")
@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection=STORAGE)
def work(msg: func.QueueMessage) -> None:
    services, now = services_from_env(), datetime.now(UTC)
    with invocation("work", queue=services.settings.work_queue, inserted=msg.insertion_time, now=now):
        handle_work_message(msg.get_body(), message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1,
                            services=services, now=now)


@app.function_name("poll")
@app.queue_trigger(arg_name="msg", queue_name="%POLL_QUEUE%", connection=STORAGE)
def poll(msg: func.QueueMessage) -> None:
    services, now = services_from_env(), datetime.now(UTC)
    with invocation("poll", queue=services.settings.poll_queue, inserted=msg.insertion_time, now=now):
        handle_poll_message(msg.get_body(), dequeue_count=msg.dequeue_count or 1,
                            services=services, now=now)


@app.function_name("blob_created")
@app.queue_trigger(arg_name="msg", queue_name="%DROP_EVENTS_QUEUE%", connection=STORAGE)
def blob_created(msg: func.QueueMessage) -> None:
    """Event Grid delivers the drop container's BlobCreated events here (docs/uploads.md)."""
    services, now = services_from_env(), datetime.now(UTC)
    with invocation("blob_created", queue=services.settings.drop_events_queue, inserted=msg.insertion_time, now=now):
        handle_blob_event(msg.get_body(), dequeue_count=msg.dequeue_count or 1,
                          services=services, now=now)


@app.function_name("sweep")
@app.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep(timer: func.TimerRequest) -> None:
    """Drains the poison queues and settles jobs and batches that no message will settle any more (docs/reliability.md)."""
    with invocation("sweep"):
        handle_sweep(services=services_from_env(), now=datetime.now(UTC))

"""Azure Functions entry point (Python v2 model): triggers and bindings only.

Each function hands its message to one handler in `shared.steps.handlers` with the worker's clients and
the current time. Queue names come from app settings (`%SUBMIT_QUEUE%`: the users' inbox of job
messages; `%WORK_QUEUE%`: the app's own batch and plan messages; `%POLL_QUEUE%`); the connection is the
Functions storage account (`AzureWebJobsStorage`).
"""

from datetime import UTC, datetime

import azure.functions as func

from shared.services import services_from_env
from shared.steps.handlers import (
    handle_blob_event,
    handle_poison_message,
    handle_poll_message,
    handle_submit_message,
    handle_sweep,
    handle_work_message,
)

app = func.FunctionApp()

STORAGE = "AzureWebJobsStorage"


@app.function_name("submit")
@app.queue_trigger(arg_name="msg", queue_name="%SUBMIT_QUEUE%", connection=STORAGE)
def submit(msg: func.QueueMessage) -> None:
    handle_submit_message(msg.get_body(), message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1,
                          services=services_from_env(), now=datetime.now(UTC))


@app.function_name("work")
@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection=STORAGE)
def work(msg: func.QueueMessage) -> None:
    handle_work_message(msg.get_body(), message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1,
                        services=services_from_env(), now=datetime.now(UTC))


@app.function_name("poll")
@app.queue_trigger(arg_name="msg", queue_name="%POLL_QUEUE%", connection=STORAGE)
def poll(msg: func.QueueMessage) -> None:
    handle_poll_message(msg.get_body(), dequeue_count=msg.dequeue_count or 1,
                        services=services_from_env(), now=datetime.now(UTC))


@app.function_name("blob_created")
@app.queue_trigger(arg_name="msg", queue_name="%DROP_EVENTS_QUEUE%", connection=STORAGE)
def blob_created(msg: func.QueueMessage) -> None:
    """Event Grid delivers the drop container's BlobCreated events here (docs/uploads.md)."""
    handle_blob_event(msg.get_body(), dequeue_count=msg.dequeue_count or 1,
                      services=services_from_env(), now=datetime.now(UTC))


@app.function_name("sweep")
@app.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep(timer: func.TimerRequest) -> None:
    """Settles jobs and batches that no message will settle any more (docs/reliability.md)."""
    handle_sweep(services=services_from_env(), now=datetime.now(UTC))


@app.function_name("submit_poison")
@app.queue_trigger(arg_name="msg", queue_name="%SUBMIT_QUEUE%-poison", connection=STORAGE)
def submit_poison(msg: func.QueueMessage) -> None:
    handle_poison_message(msg.get_body(), queue="submit-poison", services=services_from_env(), now=datetime.now(UTC))


@app.function_name("work_poison")
@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%-poison", connection=STORAGE)
def work_poison(msg: func.QueueMessage) -> None:
    handle_poison_message(msg.get_body(), queue="work-poison", services=services_from_env(), now=datetime.now(UTC))


@app.function_name("poll_poison")
@app.queue_trigger(arg_name="msg", queue_name="%POLL_QUEUE%-poison", connection=STORAGE)
def poll_poison(msg: func.QueueMessage) -> None:
    handle_poison_message(msg.get_body(), queue="poll-poison", services=services_from_env(), now=datetime.now(UTC))


@app.function_name("blob_created_poison")
@app.queue_trigger(arg_name="msg", queue_name="%DROP_EVENTS_QUEUE%-poison", connection=STORAGE)
def blob_created_poison(msg: func.QueueMessage) -> None:
    handle_poison_message(msg.get_body(), queue="drop-events-poison", services=services_from_env(),
                          now=datetime.now(UTC))

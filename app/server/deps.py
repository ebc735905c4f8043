"""Process-wide dependencies every domain may ask for by name."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar_saq.config import TaskQueues
from saq import Queue

from app.lib.runtime import QUEUE_NAME, Runtime
from app.lib.settings import Settings


def provide_runtime(state: State) -> Runtime:
    runtime: NamedDependency[Runtime] = state.runtime
    return runtime


def provide_settings(state: State) -> Settings:
    runtime: NamedDependency[Runtime] = state.runtime
    return runtime.settings


def provide_queue(task_queues: NamedDependency[TaskQueues]) -> Queue:
    return task_queues.get(QUEUE_NAME)

"""Tasks (synthetic and real math data from local files) and prompt templates.

`math_files` is not imported here because it pulls in `datasets`; import it where it is used.
"""

from prl_jax.data.registry import TASKS, Task, get_task
from prl_jax.data.templates import get_template, render

__all__ = ["TASKS", "Task", "get_task", "get_template", "render"]

"""Run logs for files and pipes as readable as on a terminal: one record, one line.

Kedro's default logging writes through rich, which lays every record out to the console's width.
When output is not a terminal (CI, ``nohup``, ``kedro run > run.log``, a Dask worker) rich cannot
ask for a width and takes 80 columns: node names, dataset names and our own messages break over
several lines, with the source path squeezed in beside them, and a demo run prints thousands of
fragments that ``grep`` cannot find. :func:`plain_lines_when_not_a_terminal` switches Kedro's
logging configuration to a plain handler (time, level, message, logger) on the same stream; a
terminal and Jupyter keep rich.

It edits the configuration Kedro keeps (``kedro.framework.project.LOGGING``), not the live
handlers, because Kedro applies that configuration again after the project's settings are read
and hands it to every ParallelRunner worker. Only handlers of Kedro's ``RichHandler``
class are replaced; any other handler of a user's own configuration (``KEDRO_LOGGING_CONFIG``,
``conf/logging.yml``) is left as it is.
"""

from __future__ import annotations

import copy
from typing import Any

RICH_HANDLER = "kedro.logging.RichHandler"
PLAIN_FORMAT = "[%(asctime)s] %(levelname)-8s %(message)s  (%(name)s)"
DATE_FORMAT = "%m/%d/%y %H:%M:%S"


def plain_log_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """``config`` (a ``logging.config.dictConfig`` mapping) with every Kedro rich handler replaced by
    a ``StreamHandler`` on standard output with :data:`PLAIN_FORMAT`, keeping its level and filters;
    None when it has no rich handler (nothing to change).
    """
    handlers = config.get("handlers", {})
    rich = [name for name, spec in handlers.items() if spec.get("class") == RICH_HANDLER]
    if not rich:
        return None
    plain = copy.deepcopy(config)
    plain.setdefault("formatters", {})["tpir_plain"] = {"format": PLAIN_FORMAT, "datefmt": DATE_FORMAT}
    for name in rich:
        kept = {key: handlers[name][key] for key in ("level", "filters") if key in handlers[name]}
        plain["handlers"][name] = {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",  # where rich's console writes
            "formatter": "tpir_plain",
            **kept,
        }
    return plain


def output_is_a_terminal() -> bool:
    """Rich's own answer (it honours ``FORCE_TERMINAL`` / ``TTY_COMPATIBLE``), Jupyter counting as one."""
    from rich.console import Console

    console = Console()
    return console.is_terminal or console.is_jupyter


def plain_lines_when_not_a_terminal() -> bool:
    """Switch Kedro's logging to plain lines when output is not a terminal; True when it did."""
    from kedro.framework.project import LOGGING

    if output_is_a_terminal():
        return False
    plain = plain_log_config(dict(LOGGING.data))
    if plain is None:
        return False
    LOGGING.configure(plain)
    return True

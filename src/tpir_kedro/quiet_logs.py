"""Third-party messages a user of this project cannot act on, silenced where they come from.

A demo ``kedro run`` should show Kedro's node progress, the training progress bars and the warnings
a user can act on. Each entry below says why its message is not one of those; everything else
(our own warnings, any new third-party warning) still shows. :func:`quiet_third_party_logs` is
called from ``settings.py``, so it is in place before Kedro loads the configuration, and again by
the training code for runs outside Kedro (benchmarks, notebooks); calling it twice adds nothing.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

# (message regex, warning category, why it is noise here)
NOISY_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        Warning,
        "Lightning 2.6 calling a torch pytree API that torch deprecated; nothing in this project calls it",
    ),
    (
        r"register_new_resolver\(\) is deprecated",
        UserWarning,
        "Kedro's OmegaConfigLoader registering its resolvers through the deprecated OmegaConf call",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        UserWarning,
        "a run folder is keyed by the run's fingerprint: a resumed run finds its own last.ckpt there by design",
    ),
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        UserWarning,
        "scVI on a small fold logs less often than every epoch; the losses are still recorded",
    ),
    (
        r"One or more dataset names contain '\.' characters",
        UserWarning,
        "the grid's gatherers read each cell's tables by their namespaced names (<cell>.probe_metrics): by design",
    ),
)

# Warnings that arrive through Kedro's log (``logging.captureWarnings``) from code that resets the
# warning filters around itself, so only a filter on the ``py.warnings`` logger reaches them.
NOISY_CAPTURED_WARNINGS = re.compile(
    # MLflow judging kedro-mlflow's model class on import, at every kedro command (under
    # ``warnings.simplefilter("once")``); this project logs no MLflow model.
    r"Add type hints to the `predict` method"
)

# Lightning's INFO lines, per run: the accelerator summary (our own log line says what trained where),
# an advertisement, and its stop reason (our log line gives the steps).
NOISY_INFO = re.compile(
    r"^(💡 Tip:|GPU available:|TPU available:|HPU available:|`Trainer.fit` stopped:|Seed set to)"
)
_LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)


class _DropNoisyInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and NOISY_INFO.match(record.getMessage()))


class _DropNoisyCapturedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISY_CAPTURED_WARNINGS.search(record.getMessage())


_FILTER = _DropNoisyInfo()
_WARNINGS_FILTER = _DropNoisyCapturedWarnings()


def quiet_third_party_logs() -> None:
    """Install the warning filters and the Lightning log filter (idempotent)."""
    for pattern, category, _why in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}", category=category)
    # A filter on the emitting loggers themselves: Lightning resets its loggers' levels on import,
    # not their filters, and the records never reach a handler.
    for name in _LIGHTNING_LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
    captured = logging.getLogger("py.warnings")
    if _WARNINGS_FILTER not in captured.filters:
        captured.addFilter(_WARNINGS_FILTER)


def quiet_scvi() -> None:
    """scvi-tools' INFO lines ("Input AnnData not setup with scvi-tools", "Training for N epochs"):
    its own bookkeeping. Its import sets its logger to INFO, so this runs after importing it.
    """
    import scvi

    scvi.settings.verbosity = logging.WARNING


def short_input_error_hook(previous):
    """An ``sys.excepthook`` that shows bad input -- :class:`~tpir_kedro.cohort.errors.CohortInputError`,
    whose message names the file and the section -- as the project's own frames and that message,
    last; every other exception goes to ``previous`` (Kedro's rich traceback) unchanged. Why: the
    full traceback of a bad counts file runs through Kedro's CLI, session, runner and thread pool
    (some 400 lines), burying the one line a user needs.
    """
    import traceback
    from pathlib import Path

    from tpir_kedro.cohort.errors import CohortInputError

    package = Path(__file__).resolve().parent

    def hook(exc_type, exc, tb):
        if not isinstance(exc, CohortInputError):
            return previous(exc_type, exc, tb)
        frames = [(Path(f.filename).resolve(), f) for f in traceback.extract_tb(tb)]
        ours = [(path, f) for path, f in frames if package in path.parents]
        lines = [
            "",
            "The run stopped on bad input; earlier outputs are kept (every output is versioned). Read at:",
        ]
        lines += [f"  {path.relative_to(package.parent)}:{f.lineno} in {f.name}" for path, f in ours]
        if exc.__cause__ is not None:
            lines.append(f"  caused by {type(exc.__cause__).__name__}: {exc.__cause__}")
        lines.append(f"{exc_type.__name__}: {exc}")
        print("\n".join(lines), file=sys.stderr)

    hook.shows_input_errors_short = True
    return hook


def install_short_input_errors() -> None:
    """Wrap the current ``sys.excepthook`` with :func:`short_input_error_hook` (once)."""
    if not getattr(sys.excepthook, "shows_input_errors_short", False):
        sys.excepthook = short_input_error_hook(sys.excepthook)

"""The console: every progress and warning line of fedqdnn goes through :mod:`logging`.

One logger hierarchy under :data:`ROOT` ("fedqdnn"). Modules of the ``fedqdnn`` package call
``logging.getLogger(__name__)`` (their names already start with "fedqdnn."); modules of
``strategies/``, ``simulations/`` and ``benchmarks/`` call :func:`logger` with ``__name__``,
which puts them under the root too (``fedqdnn.simulations.compare``). Nothing here imports
Flower or Ray.

An entry point (the CLI) calls :func:`setup_console` once: one handler on stderr, message
only, INFO and above. Flower's and Ray's own loggers stay silent unless ``verbose``. A
supervised simulation child sends its records to the CLI over a pipe
(:mod:`fedqdnn.federated.supervisor`), where this handler prints them.
"""

from __future__ import annotations

import logging
import sys

ROOT = "fedqdnn"
ENGINE_LOGGERS = ("flwr", "ray")  # Flower's and Ray's: shown only with --verbose
SILENT = logging.CRITICAL + 1


def logger(name: str) -> logging.Logger:
    """The logger of module ``name`` under :data:`ROOT` (``__name__`` of any module)."""
    inside = name == ROOT or name.startswith(ROOT + ".")
    return logging.getLogger(name if inside else f"{ROOT}.{name}")


class ConsoleHandler(logging.StreamHandler):
    """Writes each record's message to the *current* ``sys.stderr`` (tests and tools swap
    it; a handler that kept the stream it started with would write to a stale one)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 (whatever sys.stderr is)
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ sets it: ignored
        pass


def setup_console(verbose: bool = False) -> logging.Logger:
    """fedqdnn's lines on stderr at INFO (once per process, however often called); Flower's
    and Ray's loggers silenced unless ``verbose``. Returns the root logger of fedqdnn."""
    root = logging.getLogger(ROOT)
    root.setLevel(logging.INFO)
    if not any(isinstance(h, ConsoleHandler) for h in root.handlers):
        root.addHandler(ConsoleHandler())
    quiet_engines(verbose)
    return root


def quiet_engines(verbose: bool) -> None:
    """Silence Flower's and Ray's loggers unless ``verbose`` (then they keep their own levels
    and handlers). Call it after importing Flower: importing ``flwr`` resets its level."""
    if not verbose:
        for name in ENGINE_LOGGERS:
            logging.getLogger(name).setLevel(SILENT)

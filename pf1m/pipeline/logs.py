"""Where a run's output goes. The terminal shows pf1m's own lines (start-up steps, progress,
warnings that need action, the summary, and the cause of an error that ends the run).
Everything else goes to OUT/logs/: each Ray worker's stdout and stderr (vLLM engine logs,
torch and transformers warnings; an engine's processes inherit them) to `worker-PID.log`, and
the driver's own library logs (Ray's) and tracebacks to `driver.log`. `--verbose` shows it
all live instead.

Worker output is redirected by a Ray `worker_process_setup_hook`, so only for the local Ray
a run starts itself and a local OUT; on a cluster it stays in Ray's log directory on each
node (`ray logs`, the dashboard).
"""

import logging
import os
import sys
import traceback

from pf1m.pipeline.storage import is_local

LOGS = "logs"
DIR_ENV = "PF1M_LOG_DIR"  # set in the workers' environment: where their output goes
ON_CLUSTER = "Ray's log directory on each node (`ray logs`, the dashboard)"
LIBRARY_LOGGERS = ("ray", "py.warnings")


def log_dir(output: str) -> str | None:
    """OUT/logs for a local OUT; None for an object store (workers cannot write there)."""
    if not is_local(output):
        return None
    return os.path.join(output.removeprefix("file://"), LOGS)


def redirect_worker_output() -> None:
    """Ray's worker_process_setup_hook: this worker's stdout and stderr, and those of the
    processes it starts, go to DIR/worker-PID.log from now on."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"worker-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class _FileHandler(logging.FileHandler):
    """Creates its folder and file on the first record only: a run that logs nothing leaves
    no empty folder behind."""

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()


class RunLogs:
    """Context manager for one run in the driver: unless verbose, Ray's driver-side logs and
    Python warnings go to OUT/logs/driver.log while the run lasts."""

    def __init__(self, output: str, verbose: bool) -> None:
        self.verbose = verbose
        self.dir = log_dir(output)
        self.workers_here = False  # worker output redirected to `dir` (a local Ray of ours)
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        self._handler: logging.Handler | None = None

    @property
    def where(self) -> str:
        """What the terminal names as the place of the worker and engine logs."""
        return self.dir if self.workers_here else ON_CLUSTER

    def worker_env(self) -> dict:
        """The runtime_env that sends a local Ray's worker output to OUT/logs."""
        if self.verbose or self.dir is None:
            return {}
        self.workers_here = True
        return {
            "worker_process_setup_hook": f"{__name__}.redirect_worker_output",
            "env_vars": {DIR_ENV: self.dir},
        }

    def traceback(self, exc: BaseException) -> None:
        """A run-ending error's traceback: on the terminal when verbose, else in driver.log."""
        text = "".join(traceback.format_exception(exc))
        if self.verbose or self._handler is None:
            print(text, file=sys.stderr, end="", flush=True)
        else:
            logging.getLogger("pf1m").error("the run broke:\n%s", text)

    def __enter__(self) -> "RunLogs":
        if self.verbose or self.dir is None:
            return self
        self._handler = _FileHandler(os.path.join(self.dir, "driver.log"), delay=True)
        form = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._handler.setFormatter(form)
        for name in (*LIBRARY_LOGGERS, "pf1m"):
            logger = logging.getLogger(name)
            self._saved.append((logger, list(logger.handlers), logger.propagate))
            logger.handlers = [self._handler]
            logger.propagate = False
        logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger -> driver.log
        return self

    def __exit__(self, *exc: object) -> None:
        for logger, handlers, propagate in self._saved:
            logger.handlers, logger.propagate = handlers, propagate
        self._saved.clear()
        if self._handler is not None:
            logging.captureWarnings(False)
            self._handler.close()
            self._handler = None

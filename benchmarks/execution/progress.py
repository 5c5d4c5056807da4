"""Progress of `depthbench run`: a bar on a terminal, one line per run start and finish elsewhere."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A tqdm bar on a terminal; elsewhere (tox, CI logs, `| tee`) one flushed line per run start and finish, with
    the elapsed time, the runs left and an ETA from the mean pace so far, since a bar redrawn with carriage returns
    shows nothing through a pipe until it ends."""

    def __init__(self, total: int, to_run: int, desc: str, enabled: bool) -> None:
        self.lines = enabled and not getattr(sys.stderr, "isatty", lambda: False)()
        self.bar = tqdm(total=total, desc=desc, disable=not enabled or self.lines, unit="run")
        self.to_run, self.begun, self.finished, self.started = to_run, 0, 0, time.monotonic()
        self.last_line = self.started

    def say(self, text: str) -> None:
        self.last_line = time.monotonic()
        if self.bar.disable:
            print(f"depthbench: {text}", file=sys.stderr, flush=True)
        else:
            tqdm.write(f"depthbench: {text}", file=sys.stderr)

    def skip(self) -> None:
        self.bar.update()

    def start(self, label: str) -> None:
        self.begun += 1
        self.bar.set_postfix_str(label)
        if self.lines:
            self.say(f"run {self.begun}/{self.to_run} started: {label} "
                     f"({_duration(time.monotonic() - self.started)} elapsed)")

    def epoch(self, label: str, epoch: dict[str, float]) -> None:
        text = f"{label} epoch {epoch['epoch']} val {epoch['val']:.4g}"
        self.bar.set_postfix_str(text)
        if self.lines and time.monotonic() - self.last_line > 30:  # a sign of life in long runs, not every epoch
            self.say(f"  {text}")

    def finish(self, label: str, status: str, error: str | None, seconds: float) -> None:
        self.finished += 1
        self.bar.update()
        if status == "failed":
            self.say(f"FAILED {label}: {error}")
        if self.lines:
            elapsed, left = time.monotonic() - self.started, self.to_run - self.finished
            eta = f", about {_duration(elapsed / self.finished * left)} to go" if left else ""
            self.say(f"run {self.finished}/{self.to_run} {'failed' if status == 'failed' else 'done'}: {label} in "
                     f"{_duration(seconds)} ({_duration(elapsed)} elapsed, {left} runs left{eta})")

    def close(self) -> None:
        self.bar.close()

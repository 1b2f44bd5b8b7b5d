"""Progress of a training stage: a live display on a terminal, periodic lines in a log.

When stderr is not a terminal (CI, nohup, a log file) a line is printed every ``every_steps``
steps (a tenth of the stage by default) or ``every_seconds``, whichever comes first, so a long
stage is never silent.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StageProgress:
    """``with StageProgress(...) as tick: tick(step, loss, mfu=...)`` after each optimizer step."""

    def __init__(self, label: str, total: int, done: int, *, tokens_per_step: int,
                 lr_of: Callable[[int], float], stream: TextIO | None = None,
                 every_seconds: float = 30.0, every_steps: int | None = None, live: bool | None = None,
                 quiet: bool = False):
        self.label, self.total, self.start = label, total, done
        self.tokens_per_step, self.lr_of = tokens_per_step, lr_of
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = not quiet and (self.stream.isatty() if live is None else live)
        self.every_seconds = every_seconds
        self.every_steps = every_steps or max(1, total // 10)
        self._bar = None

    def __enter__(self) -> Callable[[int, float], None]:
        self.t0 = self.last_line = time.perf_counter()
        if self.live:
            self._bar = _live_bar(self.label, self.total, self.start, self.stream)
            self._bar.__enter__()
        return self.tick

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def figures(self, step: int, loss: float) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        per_step = elapsed / max(1, step - self.start)
        return {"step": step, "loss": loss, "lr": self.lr_of(step - 1), "elapsed": elapsed,
                "tokens_per_second": self.tokens_per_step / per_step if per_step else 0.0,
                "eta": per_step * (self.total - step)}

    def tick(self, step: int, loss: float, mfu: float | None = None) -> None:
        if self.quiet:
            return
        f = self.figures(step, loss)
        text = (f"loss {loss:.3f} lr {f['lr']:.2e} {f['tokens_per_second']:,.0f} tok/s "
                + (f"MFU {mfu:.1%} " if mfu is not None else "") + f"eta {_clock(f['eta'])}")
        if self._bar is not None:
            self._bar.update(step, text)
            return
        now = time.perf_counter()
        if step == self.total or step % self.every_steps == 0 or now - self.last_line >= self.every_seconds:
            self.last_line = now
            print(f"{self.label}: step {step}/{self.total} ({100 * step // self.total}%) {text} "
                  f"elapsed {_clock(f['elapsed'])}", file=self.stream, flush=True)


class _live_bar:
    """rich's progress display where rich is installed, else click's bar."""

    def __init__(self, label: str, total: int, done: int, stream: TextIO):
        self.label, self.total, self.done, self.stream = label, total, done, stream

    def __enter__(self):
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            import click

            self._click = click.progressbar(length=self.total, label=self.label, file=self.stream, show_pos=True,
                                            item_show_func=lambda text: text or "")
            self._click.__enter__()
            self._click.update(self.done)
            self._rich = None
            return self
        self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TextColumn("{task.fields[text]}"),
                              console=Console(file=self.stream), transient=False)
        self._rich.__enter__()
        self._task = self._rich.add_task(self.label, total=self.total, completed=self.done, text="")
        return self

    def update(self, step: int, text: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=step, text=text)
        else:
            self._click.update(step - self._click.pos, text)

    def __exit__(self, *exc) -> None:
        (self._rich or self._click).__exit__(*exc)

"""One progress bar for long work (rich), silent when asked to be."""

from __future__ import annotations


class bar:  # noqa: N801 (used like a function: `with bar(...) as tick`)
    """A rich progress bar as a context manager yielding a `tick(n=1)` callback.

    `with bar(quiet, "label", total) as tick: ... tick()` draws nothing when `quiet`.
    """

    def __init__(self, quiet: bool, label: str, total: int):
        self.quiet, self.label, self.total = quiet, label, total

    def __enter__(self):
        if self.quiet:
            return lambda n=1: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.progress.__enter__()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda n=1: self.progress.update(task, advance=n)

    def __exit__(self, *exc):
        if not self.quiet:
            self.progress.__exit__(*exc)
        return False

"""Progress of a grid: cells done / total with an ETA (tqdm), resumed cells counted as done.

The ETA is tqdm's, from the rate of the cells finished in this run only: cells skipped on a
resume start the bar (``initial``) without making the rate look faster than it is.
"""

from __future__ import annotations

from types import TracebackType

from tqdm.auto import tqdm


class GridProgress:
    """``with GridProgress(total, done, desc) as bar: ... bar.cell_done()``."""

    def __init__(self, total: int, done: int = 0, desc: str = "cells", *,
                 enabled: bool = True) -> None:
        self.total, self.done = total, done
        self._bar = tqdm(total=total, initial=done, desc=desc, unit="cell",
                         disable=not enabled, dynamic_ncols=True)

    def cell_done(self) -> None:
        self.done += 1
        self._bar.update(1)

    def __enter__(self) -> GridProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.close()

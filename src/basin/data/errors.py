"""The one exception the data layer raises for missing, corrupt or unexpected files."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset file is missing, unreadable, corrupt or not what the loader expects.

    The message always names the file (or the dataset, when no file is involved yet) and
    what was wrong with it, so that ``basin data verify`` can print it as it is.
    """

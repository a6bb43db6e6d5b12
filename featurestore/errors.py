"""Expected errors become one clear line for the user, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's own errors (and bad values) into click's one-line errors."""
    from featurestore.extractor import ExtractorError
    from featurestore.lock import StoreLockedError
    from featurestore.sources import SourceError
    from featurestore.store import StoreError
    from featurestore.weights import WeightsError

    try:
        yield
    except (StoreError, StoreLockedError, SourceError, WeightsError, ExtractorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # a full disk, a permission problem: name the file and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None

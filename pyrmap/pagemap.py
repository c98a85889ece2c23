"""Page lock and reference helpers every part of the engine uses (linux/pagemap.h)."""

from __future__ import annotations

from .mm_types import PG, Page


def lock_page(page: Page) -> None:
    """Sleep until PG_locked is ours."""
    page.lock.acquire()
    page.set(PG.locked)


def trylock_page(page: Page) -> bool:
    """TestSetPageLocked inverted: True when we took the lock."""
    if page.lock.trylock():
        page.set(PG.locked)
        return True
    return False


def unlock_page(page: Page) -> None:
    if not page.lock.held_by_me():
        raise AssertionError(f"unlock_page of a page this thread does not hold: {page!r}")
    page.clear(PG.locked)
    page.lock.release()


def PageLocked(page: Page) -> bool:
    return page.test(PG.locked)


def get_page(page: Page) -> None:
    page.kernel.get_page(page)


def page_cache_release(page: Page) -> None:
    page.kernel.put_page(page)


put_page = page_cache_release

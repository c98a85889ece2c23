"""Kernel profiles: which later upstream fixes the engine carries.

The engine is the seed (mm/rmap.c and the mmu-notifier core of mid-2008) plus, by default,
the upstream fixes that later closed its races.  Each fix is a quirk switch of
:class:`pyrmap.kernel.Quirks` declared with the fix's commit (``_undoes``): the switch on is
the 2008 code, off is the fix.  That declaration is the one registry; this module only reads it.

Profiles
--------
``2008``
    The seed exactly: every fix's quirk on.
``fixed`` (the default)
    Every fix, in the order it landed upstream: 479db0bf408e, d9d332e0874f, 3ad3d901bbcf,
    1cf35d47712d, 5df397dec7c4.

A run's quirks are its profile's plus the ones switched on by name (``--quirk``), so
``--kernel fixed --quirk zap_rmap_before_flush`` is the fixed kernel with one fix undone.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Iterable

from .kernel import Quirks

__all__ = ["Fix", "Profile", "FIXES", "PROFILES", "DEFAULT_PROFILE", "get_profile",
           "profile_quirks", "kernel_quirks", "profile_arg", "add_kernel_argument",
           "describe"]


@dataclasses.dataclass(frozen=True)
class Fix:
    """One upstream fix and the quirk that undoes it.

    Attributes
    ----------
    commit : str
        The upstream commit id (12 hex digits).
    title : str
        Its subject line.
    quirk : str
        The :class:`~pyrmap.kernel.Quirks` field that restores the 2008 code.
    """
    commit: str
    title: str
    quirk: str


def _fixes() -> dict[str, Fix]:
    return {f.metadata["fix"]: Fix(f.metadata["fix"], f.metadata["title"], f.name)
            for f in dataclasses.fields(Quirks) if "fix" in f.metadata}


#: commit -> :class:`Fix`, in the order the fixes landed upstream (the order of the fields).
FIXES: dict[str, Fix] = _fixes()


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named set of fixes.

    Attributes
    ----------
    name : str
    summary : str
    fixes : tuple of str
        Commit ids of :data:`FIXES` the profile carries; every other fix's quirk is on.
    """
    name: str
    summary: str
    fixes: tuple

    def quirks(self) -> list[str]:
        """The quirk switches on in this profile: one per fix it does not carry."""
        return [fix.quirk for commit, fix in FIXES.items() if commit not in self.fixes]

    def describe(self) -> str:
        """``"fixed (fixes 479db0bf408e, ...)"`` or ``"2008 (the seed, no later fix)"``."""
        if not self.fixes:
            return f"{self.name} (the seed, no later fix)"
        return f"{self.name} (fixes {', '.join(self.fixes)})"

    def as_dict(self) -> dict:
        """What a JSON report says about the kernel."""
        return {"profile": self.name, "fixes": list(self.fixes), "quirks": self.quirks()}


#: The profiles, by name.
PROFILES: dict[str, Profile] = {
    "2008": Profile("2008", "the seed exactly: mm/rmap.c and the mmu-notifier core of mid-2008, "
                            "every later fix off", ()),
    "fixed": Profile("fixed", "the seed with the later upstream fixes of its races",
                     tuple(FIXES)),
}
#: The profile every command runs unless told otherwise.
DEFAULT_PROFILE = "fixed"


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a profile (the message names the known ones).
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kernel profile {name!r}; known: "
                         f"{', '.join(PROFILES)}") from None


def profile_quirks(name: str) -> list[str]:
    """The quirks on in profile ``name`` (:meth:`Profile.quirks`)."""
    return get_profile(name).quirks()


def kernel_quirks(profile: str = DEFAULT_PROFILE, extra: Iterable[str] = ()) -> Quirks:
    """The :class:`Quirks` of a run: the profile's, and every name in ``extra`` on.

    Raises
    ------
    ValueError
        An unknown profile or quirk name (the message names the known ones).
    """
    names = profile_quirks(profile) + list(extra)
    known = [f.name for f in dataclasses.fields(Quirks)]
    for name in names:
        if name not in known:
            raise ValueError(f"unknown quirk {name!r}; known: {', '.join(known)}")
    return Quirks(**{name: True for name in names})


def describe(name: str) -> str:
    """One line naming profile ``name`` and its fixes (:meth:`Profile.describe`)."""
    return get_profile(name).describe()


def profile_arg(text: str) -> str:
    """argparse ``type=`` for ``--kernel``: a profile name."""
    try:
        return get_profile(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


profile_arg.__name__ = "profile"


def add_kernel_argument(parser) -> None:
    """Add ``--kernel 2008|fixed`` (default ``fixed``) to an argparse parser."""
    parser.add_argument(
        "--kernel", type=profile_arg, default=DEFAULT_PROFILE, metavar="|".join(PROFILES),
        help="kernel profile: " + "; ".join(f"{p.name}: {p.summary}"
                                            + (f" ({', '.join(p.fixes)})" if p.fixes else "")
                                            for p in PROFILES.values())
             + " (default %(default)s)")

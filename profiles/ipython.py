"""The ``deepspm`` IPython profile: its startup file, installed once per package version, and
what that file gives the user (`populate`): ``RE``, ``catalog``, ``stm`` and the plans.

The startup file only calls `populate`, so a new package version changes the session without
touching the file; the file itself is replaced only when the version changes, and a copy the
user edited is kept beside it first (``00-deepspm.py.<version>.bak``, never run by IPython).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
from collections.abc import Callable, MutableMapping
from importlib import resources
from pathlib import Path

from deepspm_bluesky import __version__

STARTUP_NAME = "00-deepspm.py"
_STAMP = "# deepspm-bluesky {version} sha256:{digest} (edit freely: a changed file is kept)\n"
_STAMP_PATTERN = re.compile(r"# deepspm-bluesky (\S+) sha256:([0-9a-f]{64})")


def install_profile(ipython_dir: str | os.PathLike | None = None, *,
                    echo: Callable[[str], None] = print) -> Path:
    """Install or update the ``profile_deepspm`` startup file; return the profile directory.

    Written when missing; replaced when the package version changed, after a backup if the
    user edited it; left alone otherwise.
    """
    if ipython_dir is None:
        from IPython.paths import get_ipython_dir

        ipython_dir = get_ipython_dir()
    target = Path(ipython_dir) / "profile_deepspm" / "startup" / STARTUP_NAME
    shipped = _stamped(resources.files("deepspm_bluesky.profiles")
                       .joinpath("profile_deepspm", "startup", STARTUP_NAME).read_text())
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(shipped)
        return target.parent.parent
    current = target.read_text()
    version, edited = _installed(current)
    if version == __version__:
        return target.parent.parent
    if edited:
        backup = _free_name(target, version or "old")
        backup.write_text(current)
        echo(f"deepspm profile: updated {target.name} to {__version__}; "
             f"your edited copy is kept as {backup}")
    target.write_text(shipped)
    return target.parent.parent


def _stamped(body: str) -> str:
    return _STAMP.format(version=__version__, digest=_digest(body)) + body


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _installed(text: str) -> tuple[str | None, bool]:
    """The version that installed `text`, and whether the user changed it since."""
    first, _, body = text.partition("\n")
    match = _STAMP_PATTERN.match(first)
    if match is None:
        return None, True  # not ours, or from before the stamp: keep a copy
    return match[1], _digest(body) != match[2]


def _free_name(target: Path, version: str) -> Path:
    backup = target.with_name(f"{target.name}.{version}.bak")
    number = 1
    while backup.exists():
        number += 1
        backup = target.with_name(f"{target.name}.{version}.{number}.bak")
    return backup


def populate(namespace: MutableMapping, *, echo: Callable[[str], None] = print) -> None:
    """Put ``RE``, ``catalog``, ``stm``, ``connect_stm`` and the plans into `namespace`.

    The catalog is ``$DEEPSPM_CATALOG`` (folder or URI, with ``$DEEPSPM_API_KEY``) or the
    per-user default; the STM comes from ``$DEEPSPM_BACKEND`` and friends
    (`deepspm_bluesky.session.InstrumentSettings.from_environment`). A setting that is missing
    or an instrument that does not answer leaves ``stm`` None and says so in one line; the
    rest is defined all the same, and ``connect_stm()`` tries again.
    """
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp

    from deepspm_bluesky import plans
    from deepspm_bluesky.data import ENV_VAR
    from deepspm_bluesky.session import (
        API_KEY_VAR,
        InstrumentSettings,
        SessionError,
        describe_stm,
        make_stm,
        open_session,
    )

    namespace.update(bp=bp, bps=bps, RE=None, catalog=None, stm=None)
    namespace["autonomous_survey"] = _bound(plans.autonomous_survey, namespace)

    def connect_stm():
        """The STM of the current ``DEEPSPM_*`` settings, bound as ``stm`` (None if it fails)."""
        try:
            namespace["stm"] = make_stm(InstrumentSettings.from_environment())
        except SessionError as error:
            namespace["stm"] = None
            echo(f"deepspm profile: no stm: {error}; fix it, then run connect_stm()")
        return namespace["stm"]

    namespace["connect_stm"] = connect_stm
    problems = []
    try:
        settings = InstrumentSettings.from_environment()
    except SessionError as error:
        settings = None
        problems.append(str(error))
    try:
        session = open_session(settings, os.environ.get(ENV_VAR) or None,
                               api_key=os.environ.get(API_KEY_VAR) or None, stm_required=False)
    except SessionError as error:
        echo(f"deepspm profile: no catalog, so RE is None: {error}")
        return
    namespace.update(RE=session.engine, catalog=session.catalog, stm=session.stm)
    for problem in problems + session.problems:
        echo(f"deepspm profile: no stm: {problem}; fix it, then run connect_stm()")
    where = "none" if session.stm is None else describe_stm(session.stm)
    echo(f"deepspm profile: stm: {where}; catalog {session.location}; "
         "try RE(autonomous_survey(max_images=20))")

def _bound(plan, namespace: MutableMapping):
    """`plan` with its first argument, the STM, taken from ``namespace["stm"]`` at each call."""
    signature = inspect.signature(plan)

    @functools.wraps(plan)
    def bound(*args, **kwargs):
        stm = namespace.get("stm")
        if stm is None:
            raise RuntimeError("no stm in this session (see the message at start); "
                               "fix the DEEPSPM_* settings and run connect_stm()")
        return plan(stm, *args, **kwargs)

    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound

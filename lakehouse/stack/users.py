"""The unprivileged OS user that runs every server and service when started as root."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.errors import PrerequisiteError

if TYPE_CHECKING:
    from lakehouse.config import Settings


def service_user(settings: Settings) -> str | None:
    """The user processes run as: `settings.os_user` under root, else the current user."""
    return settings.os_user if os.geteuid() == 0 else None


def ensure_os_user(user: str) -> pwd.struct_passwd:
    """The system user `user`, created (no home, no login shell) if it does not exist."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PrerequisiteError(
            f"the stack runs its processes as {user!r}, which does not exist",
            fix=f"create it (useradd --system {user}) or run the stack as a normal user",
        )
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home",
         "--shell", "/usr/sbin/nologin", user],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(user)


def check_traversable(path: Path, user: str) -> None:
    """Refuse early when `user` could not reach `path` through its parents."""
    uid = pwd.getpwnam(user).pw_uid
    for parent in path.resolve().parents:
        info = parent.stat()
        if not (
            info.st_mode & stat.S_IXOTH or (info.st_uid == uid and info.st_mode & stat.S_IXUSR)
        ):
            raise PrerequisiteError(
                f"the stack's processes run as {user!r}, who cannot enter {parent}",
                fix=f"chmod o+x {parent}, or move LAKEHOUSE_HOME / LAKEHOUSE_CACHE_DIR "
                "to a directory other users can traverse",
            )


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give `path` and everything below it to uid:gid (entries already theirs are skipped)."""
    for root, dirs, files in os.walk(path):
        for entry in [root, *(os.path.join(root, name) for name in dirs + files)]:
            info = os.lstat(entry)
            if info.st_uid != uid or info.st_gid != gid:
                os.lchown(entry, uid, gid)


def secure_home(settings: Settings) -> None:
    """The home directory 0700; under root it and the credentials belong to the user."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    user = service_user(settings)
    if user is None:
        return
    owner = ensure_os_user(user)
    check_traversable(home, user)
    check_traversable(settings.cache_dir, user)
    os.chown(home, owner.pw_uid, owner.pw_gid)
    credentials = home / "credentials.json"
    if credentials.exists():
        os.chown(credentials, owner.pw_uid, owner.pw_gid)
        credentials.chmod(0o600)


def prepare_state_dir(state_dir: Path, user: str | None) -> None:
    """Create a service's state directory, owned by the user it runs as."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        owner = ensure_os_user(user)
        chown_tree(state_dir, owner.pw_uid, owner.pw_gid)

"""What a build step adds to an image, as a tree of its own whose times do not depend on the build's clock.

    layer.py capture OUT --since FILE ROOT...
                                   copy into OUT every file, link and directory under the ROOTs whose
                                   inode changed after FILE was written (what a step installed), with the
                                   owner and mode of each directory above them, then clamp OUT
    layer.py clamp DIR             no modification time under DIR (DIR included) later than
                                   SOURCE_DATE_EPOCH

The images' own layers come only from `COPY --from=<stage> /out/ /` of such trees: BuildKit before 0.11
(Docker 20.10) stamps a RUN's mount points, its deletions and the directories it touches after the command
ends, with the build's time, where no command can reach them; a COPY keeps the times of what it copies.
Standard library only: it runs with the image's own Python.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from pathlib import Path


def epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value.isdigit():
        sys.exit("layer.py: SOURCE_DATE_EPOCH is not set to a number of seconds")
    return int(value)


def clamp(top: Path, limit: int) -> int:
    """Set every time later than `limit` to `limit` (links themselves, never their targets); how many moved."""
    moved = 0
    paths = [top]
    for directory, dirs, files in os.walk(top):
        paths += [Path(directory, name) for name in dirs + files]
    # Deepest first: a directory's time is set after everything inside it.
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        info = path.lstat()
        if info.st_mtime > limit or info.st_atime > limit:
            os.utime(path, (min(info.st_atime, limit), min(info.st_mtime, limit)), follow_symlinks=False)
            moved += 1
    return moved


def _copy_entry(source: Path, target: Path) -> None:
    info = source.lstat()
    if stat.S_ISDIR(info.st_mode):
        target.mkdir(exist_ok=True)
    elif stat.S_ISLNK(info.st_mode):
        target.symlink_to(os.readlink(source))
    else:
        shutil.copyfile(source, target, follow_symlinks=False)
    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def capture(out: Path, since_ns: int, roots: list[Path]) -> int:
    """Copy what changed after `since_ns` under `roots` into `out`; the number of entries copied."""
    out.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for root in roots:
        device = root.lstat().st_dev
        for directory, dirs, files in os.walk(root):
            # What the build mounts (BuildKit's hosts and resolv.conf, caches, secrets) is no part of the step.
            dirs[:] = [name for name in dirs if Path(directory, name).lstat().st_dev == device]
            for name in dirs + files:
                path = Path(directory, name)
                info = path.lstat()
                if info.st_dev == device and info.st_ctime_ns >= since_ns:
                    changed.append(path)
    wanted = set(changed)
    for path in changed:  # the directories above, so the copy sets their owner and mode as they are
        wanted.update(parent for parent in path.parents if parent != Path("/"))
    for path in sorted(wanted, key=lambda p: (len(p.parts), str(p))):
        _copy_entry(path, out / path.relative_to("/"))
    # Directories were created before their contents: their times again, now that nothing is added.
    for path in sorted(wanted, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            info = path.lstat()
            os.utime(out / path.relative_to("/"), ns=(info.st_atime_ns, info.st_mtime_ns))
    return len(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("capture")
    take.add_argument("out", type=Path)
    take.add_argument("--since", type=Path, required=True)
    take.add_argument("roots", type=Path, nargs="+")
    flat = sub.add_parser("clamp")
    flat.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    limit = epoch()
    if args.command == "capture":
        capture(args.out, args.since.stat().st_mtime_ns, args.roots)
        clamp(args.out, limit)
    else:
        clamp(args.dir, limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

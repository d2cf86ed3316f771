"""The Python image's root filesystem: dpkg's path filters and what is pruned before the import."""

from __future__ import annotations

from pathlib import Path

from ingestion_factory.engine import python_image


def test_the_filters_leave_out_documentation_but_keep_copyright_notices():
    text = python_image.dpkg_filters()
    lines = text.splitlines()
    # dpkg applies the last matching rule: the include has to come after the exclude it narrows.
    assert lines.index("path-include=/usr/share/doc/*/copyright") > lines.index("path-exclude=/usr/share/doc/*")
    assert all(line.startswith(("path-exclude=/", "path-include=/")) for line in lines)
    assert python_image.filtered_out("/usr/share/doc/bash/README.gz")
    assert python_image.filtered_out("/usr/share/doc/bash/examples/loadables/Makefile")
    assert not python_image.filtered_out("/usr/share/doc/bash/copyright")
    assert python_image.filtered_out("/usr/share/man/man1/bash.1.gz")
    assert python_image.filtered_out("/usr/share/locale/de/LC_MESSAGES/apt.mo")
    assert python_image.filtered_out("/usr/share/zoneinfo/right/Europe/Paris")
    assert not python_image.filtered_out("/usr/share/zoneinfo/Europe/Paris")
    assert not python_image.filtered_out("/usr/lib/python3.11/os.py")
    assert not python_image.filtered_out("/usr/share/docs/kept")


def _touch(root: Path, relative: str, text: str = "x") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pruning_removes_what_the_filters_exclude_and_the_build_leftovers(tmp_path):
    rootfs = tmp_path / "rootfs"
    kept = ["usr/share/doc/bash/copyright", "usr/share/zoneinfo/UTC", "usr/bin/python3", "var/lib/dpkg/status",
            "var/cache/debconf/templates.dat", "var/log/faillog", "usr/share/doc/libc6/copyright"]
    gone = ["usr/share/doc/bash/README.gz", "usr/share/doc/bash/examples/functions/fn", "usr/share/man/man1/ls.1.gz",
            "usr/share/info/dir", "usr/share/locale/fr/LC_MESSAGES/dpkg.mo", "usr/share/zoneinfo/right/UTC",
            "var/cache/debconf/templates.dat-old", "var/lib/dpkg/status-old", "var/log/dpkg.log",
            "var/log/apt/history.log", "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "var/cache/apt/archives/bash_5.2.15-2+b7_amd64.deb",
            # what mmdebstrap copies from the machine it runs on, and its own apt source
            "etc/resolv.conf", "etc/hostname", "etc/apt/sources.list", "var/cache/ldconfig/aux-cache"]
    for relative in kept + gone:
        _touch(rootfs, relative)
    # Debian links the doc directories of related packages; the link's own path is excluded (dpkg does the same).
    (rootfs / "usr/share/doc/libpython3.11").symlink_to("libc6")
    python_image._prune_and_link(rootfs)
    assert [relative for relative in kept if not (rootfs / relative).exists()] == []
    assert [relative for relative in gone if (rootfs / relative).exists()] == []
    assert not (rootfs / "usr/share/doc/libpython3.11").is_symlink()
    assert not (rootfs / "usr/share/doc/bash/examples").exists()  # emptied directories go too
    assert (rootfs / "usr/share/man").is_dir() and (rootfs / "var/lib/apt/lists").is_dir()
    assert (rootfs / "usr/local/bin/python").is_symlink()

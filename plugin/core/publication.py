"""Outputs that appear whole or not at all, and never over what must be kept.

A file is written under a hidden partial name beside its target, then renamed onto it in one
step (without ``overwrite``, a rename that never replaces a file). Shared by classify's rasters
and manifest and by the training job's model and reports.
"""
import os
import re
import tempfile

from .errors import OutputError


def check_output_path(path, overwrite, inputs=()):
    """Fail early, before any work, when the output cannot be written. An input is never
    written over, whatever ``overwrite`` says."""
    if not path:
        raise OutputError("No output file was given.")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"The output folder {folder!r} does not exist.")
    for source in inputs:
        if same_file(path, source):
            raise OutputError(f"{path!r} is one of the inputs; an input is never overwritten. "
                              "Choose another output name.")
    check_writable_folder(folder)
    check_pam()
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path!r} already exists; choose another name or allow overwriting "
                          "(OVERWRITE=true in Processing, --overwrite on the command line).")


def check_writable_folder(folder):
    """An OutputError unless a file can be created in ``folder``: os.access trusts the
    permission bits, which some folders (/proc, read-only mounts) contradict."""
    if not os.access(folder, os.W_OK):
        raise OutputError(f"The output folder {folder!r} is not writable.")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".urban_functions_probe_")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"Cannot write into the output folder {folder!r} ({exc.strerror}); "
                          "choose another folder.") from None


def check_pam():
    """Maps keep their class names in a .aux.xml sidecar (GDAL's PAM): with PAM switched off
    in the environment the map cannot be completed, so say so before any work."""
    from osgeo import gdal
    if (gdal.GetConfigOption("GDAL_PAM_ENABLED") or "YES").strip().upper() in (
            "NO", "FALSE", "OFF", "0"):
        raise OutputError("GDAL_PAM_ENABLED is set to NO in this environment: a map keeps its "
                          "class names in its .aux.xml sidecar, which GDAL then cannot write. "
                          "Unset GDAL_PAM_ENABLED (or set it to YES) and run again.")


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name the same file (links and case folding included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_geotiff_path(path):
    if not path.lower().endswith((".tif", ".tiff")):
        raise OutputError(f"{path!r}: the output must be a GeoTIFF (.tif).")


# --- partial files -------------------------------------------------------------------------
# A file being written is hidden beside its target as .<name>.<pid>-<random>.partial<ext>; the
# pid lets a later run recognise the partial file of a run that was killed (SIGKILL, a crash,
# power loss: nothing can clean up then) and remove it, while a run still writing keeps its own.
_PARTIAL = re.compile(r"^(\d+)-[^.]+\.partial")


def partial_file(path, suffix):
    """A new, empty hidden partial file beside ``path`` (0666 minus the umask, as a plain file
    would be; mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-",
                               suffix=".partial" + suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def _pid_alive(pid):
    if os.name == "nt":  # os.kill would terminate it; keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(path, say=None):
    """Remove partial files of ``path`` left by runs that no longer exist; returns their names."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _PARTIAL.match(name[len(prefix):]) if name.startswith(prefix) else None
        if not m or _pid_alive(int(m.group(1))):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    if removed and say:
        say(f"Removed {len(removed)} partial file(s) beside {os.path.basename(path)} left by an "
            f"interrupted run: {', '.join(sorted(removed))}.")
    return removed


def publish(tmp, path, overwrite):
    """Move ``tmp`` onto ``path`` in one step. Without ``overwrite`` the move never replaces a
    file, even one that appeared while this run was working (a second run writing the same
    output): that run's file is kept and this one is refused."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails when the target exists
    except FileExistsError as exc:
        raise OutputError(f"{path!r} appeared while this run was writing it (another run with "
                          "the same output?); it was left as it is.") from exc
    except OSError:  # a file system without hard links (FAT, some shares)
        if os.path.exists(path):
            raise OutputError(f"{path!r} appeared while this run was writing it (another run "
                              "with the same output?); it was left as it is.")
        os.replace(tmp, path)
        return
    os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stage_text(path, text):
    """``text`` written and synced to a hidden partial file beside ``path``; returns its path."""
    tmp = partial_file(path, os.path.splitext(path)[1])
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"Cannot write {path!r}: {exc.strerror}. Nothing was written "
                              "under that name.") from exc
        raise
    return tmp

"""``make zip``: the plugin zip for the QGIS plugin repository, checked the way the repository
checks uploads before it is kept.

The zip holds the files git knows (tracked, or new and not ignored) under PATHS: the runtime
code with the training code (users train on their own labels), the models and resources; no
tests, scripts or build output. metadata.txt gets the maintainer's e-mail, which the repository
requires and which this project does not invent: ``PLUGIN_EMAIL=you@domain make zip`` (default:
``git config user.email``). Placeholder addresses are refused.

The checks follow the upload validator of plugins.qgis.org (size at most 25 MB, an intact zip,
no path tricks, no compiled files or __pycache__/.git/__MACOSX folders, one top-level folder with
a valid name holding __init__.py, metadata.txt and LICENSE, the required metadata, author without
slashes, well-formed URLs, the icon inside the zip). It does not fetch the URLs (the repository
does). A zip that fails is deleted and the reasons are printed.

Usage: python scripts/plugin_zip.py [--out DIR] [--email ADDRESS]
       python scripts/plugin_zip.py --check ZIP
"""
import argparse
import configparser
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from urllib.parse import urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "urban_functions"      # the folder name QGIS installs it under
PATHS = ("metadata.txt", "__init__.py", "LICENSE", "README.md", "plugin/__init__.py",
         "plugin/qgis_plugin.py", "plugin/core", "plugin/samplecity", "plugin/gui",
         "plugin/qgis_common", "plugin/processing_provider", "plugin/validation", "plugin/lcz",
         "plugin/learning", "models", "resources")
MAX_BYTES = 25_000_000
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
            "tracker", "repository")
BOOLEANS = ("experimental", "deprecated", "server")
PLACEHOLDER_EMAIL = re.compile(
    r"(@|\.)(example|invalid|test|localhost)(\.[a-z]+)?$|@example\.(com|org|net)$|"
    r"noreply|no-reply|^you@|^user@|^me@", re.I)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def shipped_files(root=ROOT):
    """Files under PATHS that git knows of (tracked, or new and not ignored), sorted."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
                          *PATHS], cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"make zip needs a git checkout: {out.stderr.strip()}")
    names = sorted(set(out.stdout.split()))
    return [n for n in names if os.path.isfile(os.path.join(root, n))]


def email_problem(email):
    if not email:
        return ("metadata.txt needs the maintainer's e-mail (the repository requires one): "
                "run PLUGIN_EMAIL=you@your.domain make zip")
    if not EMAIL.match(email):
        return f"'{email}' is not an e-mail address"
    if PLACEHOLDER_EMAIL.search(email):
        return (f"'{email}' is a placeholder address: give the maintainer's real one with "
                "PLUGIN_EMAIL=you@your.domain make zip")
    return ""


def stamped_metadata(text, email):
    """metadata.txt with ``email=`` set (the line is added when the file has none)."""
    if re.search(r"^email=.*$", text, re.M):
        return re.sub(r"^email=.*$", f"email={email}", text, count=1, flags=re.M)
    return re.sub(r"^(author=.*)$", rf"\1\nemail={email}", text, count=1, flags=re.M)


def build(path, email, root=ROOT):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in shipped_files(root):
            arcname = f"{PACKAGE}/{name}"
            if name == "metadata.txt":
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    zf.writestr(arcname, stamped_metadata(f.read(), email))
            else:
                zf.write(os.path.join(root, name), arcname)


def check(path):
    """The reasons the plugin repository (and we) would refuse this zip; [] when none."""
    problems = []
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        problems.append(f"the zip is {size / 1e6:.1f} MB; the repository takes at most "
                        f"{MAX_BYTES / 1e6:.0f} MB")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        return problems + [f"not a readable zip: {exc}"]
    with zf:
        names = zf.namelist()
        bad = zf.testzip()
        if bad:
            problems.append(f"damaged member (CRC): {bad}")
        for name in names:
            parts = name.split("/")
            if ".." in parts or name.startswith("/"):
                problems.append(f"path information in a member name: {name}")
            if name.endswith((".pyc", ".pyo")) or ".pyc" in name:
                problems.append(f"compiled Python file: {name}")
            for folder in ("__pycache__", ".git", "__MACOSX"):
                if folder in parts:
                    problems.append(f"forbidden folder {folder}: {name}")
            if len(parts) > 1 and parts[1] in ("tests", "build", "dist", ".venv", ".profile"):
                problems.append(f"development files: {name}")
        tops = sorted({n.split("/")[0] for n in names})
        if len(tops) != 1:
            problems.append(f"the zip must hold one top-level folder, not {tops}")
            return problems
        top = tops[0]
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]+$", top):
            problems.append(f"top-level folder name '{top}' must be ASCII letters, digits, - or _")
        for needed in ("__init__.py", "metadata.txt", "LICENSE"):
            if f"{top}/{needed}" not in names:
                problems.append(f"{needed} is missing at the plugin's root")
        if f"{top}/metadata.txt" not in names:
            return problems
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        try:
            parser.read_file(io.StringIO(zf.read(f"{top}/metadata.txt").decode("utf-8")))
        except (configparser.Error, UnicodeDecodeError) as exc:
            return problems + [f"metadata.txt cannot be parsed: {exc}"]
        if not parser.has_section("general"):
            return problems + ["metadata.txt has no [general] section"]
        meta = dict(parser.items("general"))
        missing = [k for k in REQUIRED if not meta.get(k, "").strip()]
        if missing:
            problems.append(f"metadata.txt lacks {', '.join(missing)}")
        if "/" in meta.get("author", ""):
            problems.append("the author must not contain slashes")
        problem = email_problem(meta.get("email", "").strip())
        if meta.get("email") and problem:
            problems.append(problem)
        for key in ("tracker", "repository", "homepage"):
            url = meta.get(key, "").strip()
            if url:
                parsed = urlparse(url)
                if not (parsed.scheme in ("http", "https") and parsed.netloc):
                    problems.append(f"{key} is not a web address: {url}")
        if not re.match(r"^\d+\.\d+(\.\d+)?$", meta.get("qgisMinimumVersion", "")):
            problems.append("qgisMinimumVersion must look like 3.22")
        if not re.match(r"^\d+(\.\d+){1,3}([-.]?\w+)?$", meta.get("version", "")):
            problems.append(f"version '{meta.get('version')}' is not a version number")
        for flag in BOOLEANS:
            if flag in meta and meta[flag].strip().lower() not in ("true", "false", "1", "0"):
                problems.append(f"{flag} must be True or False")
        icon = meta.get("icon", "").strip()
        if icon and f"{top}/{icon.lstrip('./')}" not in names:
            problems.append(f"the icon {icon} is not in the zip")
        if "changelog" in meta and meta["version"].strip() not in meta["changelog"]:
            problems.append(f"the changelog has no entry for version {meta['version']}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--email", default=None,
                        help="maintainer e-mail (default: $PLUGIN_EMAIL, else git config)")
    parser.add_argument("--check", metavar="ZIP", help="only check an existing zip")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.check)
        for p in problems:
            print(f"  - {p}")
        print(f"{args.check}: {'refused' if problems else 'accepted'} by the repository's checks")
        return 1 if problems else 0
    email = args.email or os.environ.get("PLUGIN_EMAIL", "").strip()
    if not email:
        email = subprocess.run(["git", "config", "user.email"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    problem = email_problem(email)
    if problem:
        print(f"make zip: {problem}", file=sys.stderr)
        return 2
    with open(os.path.join(ROOT, "metadata.txt"), encoding="utf-8") as f:
        version = re.search(r"^version=(.*)$", f.read(), re.M).group(1).strip()
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, f"{PACKAGE}-{version}.zip")
    fd, partial = tempfile.mkstemp(prefix=f".{PACKAGE}-", suffix=".partial.zip", dir=args.out)
    os.close(fd)
    try:
        build(partial, email)
        problems = check(partial)
        if problems:
            print("make zip: the plugin repository would refuse this zip, so it was not kept:",
                  file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            return 1
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"{target} ({os.path.getsize(target) / 1e6:.1f} MB), e-mail {email}: passes the "
          "plugin repository's upload checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

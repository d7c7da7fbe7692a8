"""The plugin zip ships what users run: the training code (Train on my area) and its class
maps included, no tests or build output."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _zip_paths():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import plugin_zip
    finally:
        sys.path.pop(0)
    return list(plugin_zip.PATHS)


def test_zip_lists_the_learning_package_and_class_maps():
    paths = _zip_paths()
    for needed in ("plugin/learning", "plugin/qgis_common", "resources", "models",
                   "plugin/processing_provider", "plugin/gui", "plugin/core"):
        assert needed in paths, needed
    assert not [p for p in paths if p.startswith(("tests", "build", "scripts"))]
    assert os.path.isfile(os.path.join(ROOT, "resources", "class_maps", "default.csv"))


def test_zip_holds_the_training_code():
    """What make zip archives under its paths (the tracked and new files of this tree)."""
    res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--"]
                         + _zip_paths(), cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        import pytest
        pytest.skip("not a git checkout")
    names = set(res.stdout.split())
    for needed in ("plugin/learning/user_training.py", "plugin/learning/fusion/net.py",
                   "plugin/processing_provider/train_algorithm.py",
                   "plugin/gui/train_dialog.py", "resources/class_maps/default.csv"):
        assert needed in names, needed
    assert not [n for n in names if n.endswith(".pyc") or n.startswith("tests/")]


# --- make zip: checked the way plugins.qgis.org checks an upload ---------------------------------
# an address for the test zips only (make zip refuses placeholders such as example.org)
TEST_EMAIL = "release-test@urban-functions-plugin.eu"


def _plugin_zip():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import plugin_zip
    finally:
        sys.path.pop(0)
    return plugin_zip


def _run_make_zip(out, email):
    env = dict(os.environ, PLUGIN_EMAIL=email)
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plugin_zip.py"),
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          cwd=ROOT)


def test_make_zip_passes_the_repository_checks(tmp_path):
    import configparser
    import zipfile
    pz = _plugin_zip()
    res = _run_make_zip(tmp_path, TEST_EMAIL)
    assert res.returncode == 0, res.stdout + res.stderr
    zips = list(tmp_path.glob("urban_functions-*.zip"))
    assert len(zips) == 1 and "passes the plugin repository's upload checks" in res.stdout
    assert pz.check(str(zips[0])) == []
    with zipfile.ZipFile(zips[0]) as zf:
        names = zf.namelist()
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(zf.read("urban_functions/metadata.txt").decode())
    assert "urban_functions/LICENSE" in names and "urban_functions/__init__.py" in names
    assert "urban_functions/plugin/learning/user_training.py" in names
    assert not [n for n in names if "/tests/" in n or n.endswith(".pyc") or "__pycache__" in n]
    assert meta["general"]["email"] == TEST_EMAIL
    # the repository's metadata.txt holds no invented address
    with open(os.path.join(ROOT, "metadata.txt"), encoding="utf-8") as f:
        text = f.read()
    assert "example.org" not in text and "example.com" not in text
    # a real changelog entry for this version, and the cell sizes the models write
    version = meta["general"]["version"]
    assert version in meta["general"]["changelog"]
    for size in ("10 m", "30 m", "100 m"):
        assert size in meta["general"]["about"]


def test_make_zip_refuses_a_placeholder_email_and_keeps_nothing(tmp_path):
    for email in ("maintainers@users.noreply.h-seed.example", "someone@example.org",
                  "not-an-address"):
        res = _run_make_zip(tmp_path, email)
        assert res.returncode != 0, email
        assert "PLUGIN_EMAIL" in res.stderr or "not an e-mail" in res.stderr, res.stderr
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".zip"]


def test_zip_checks_catch_what_the_repository_refuses(tmp_path):
    import zipfile
    pz = _plugin_zip()
    good = tmp_path / "good.zip"
    pz.build(str(good), TEST_EMAIL)
    assert pz.check(str(good)) == []

    def variant(name, drop=(), add=(), meta=None):
        path = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for item in src.infolist():
                if item.filename in drop:
                    continue
                data = src.read(item.filename)
                if meta and item.filename.endswith("/metadata.txt"):
                    data = meta(data.decode()).encode()
                dst.writestr(item, data)
            for arcname, data in add:
                dst.writestr(arcname, data)
        return pz.check(str(path))

    assert any("LICENSE" in p for p in variant("nolicence.zip", drop={"urban_functions/LICENSE"}))
    assert any("compiled" in p for p in variant(
        "pyc.zip", add=[("urban_functions/plugin/x.pyc", b"\0")]))
    assert any("__pycache__" in p for p in variant(
        "cache.zip", add=[("urban_functions/plugin/__pycache__/a.py", b"")]))
    assert any("placeholder" in p for p in variant(
        "email.zip", meta=lambda t: t.replace(f"email={TEST_EMAIL}", "email=a@example.org")))
    assert any("lacks" in p and "tracker" in p for p in variant(
        "meta.zip", meta=lambda t: "\n".join(line for line in t.splitlines()
                                             if not line.startswith("tracker="))))
    assert any("top-level" in p for p in variant("two.zip", add=[("other/readme.txt", b"x")]))
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("urban_functions/blob.bin", os.urandom(pz.MAX_BYTES + 1))
    assert any("at most 25 MB" in p for p in pz.check(str(big)))

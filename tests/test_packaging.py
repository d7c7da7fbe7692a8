"""The plugin zip ships what users run: the training code (Train on my area) and its class
maps included, no tests or build output."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _zip_paths():
    text = open(os.path.join(ROOT, "scripts", "make_zip.sh"), encoding="utf-8").read()
    body = re.search(r"HEAD \\\n(.*?)\necho", text, re.S).group(1)
    return body.replace("\\\n", " ").split()


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

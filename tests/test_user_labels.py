"""Training on the user's labels, the pure parts: the class map, rasterising polygon and point
labels in another CRS, the spatial-block split with its buffer, and the one data path (training
windows are the engine's inference feeds). Real GDAL/OGR rasters and vectors; no qgis."""
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from plugin.core.errors import InputError
from plugin.core.grid import Grid
from plugin.learning.blocks import split_blocks
from plugin.learning.class_map import DEFAULT_CLASS_MAP, load_class_map
from plugin.learning.labels import KEYS, UNLABELLED, rasterise, read_label_file

gdal.UseExceptions()


def _srs(epsg):
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def write_labels(path, features, epsg=32633, field="fclass"):
    """A GeoPackage of (geometry WKT in EPSG:32633, value) features, stored in ``epsg``."""
    drv = ogr.GetDriverByName("GPKG")
    ds = drv.CreateDataSource(str(path))
    dst = _srs(epsg)
    lyr = ds.CreateLayer("labels", srs=dst, geom_type=ogr.wkbUnknown)
    lyr.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    ct = osr.CoordinateTransformation(_srs(32633), dst)
    for wkt, value in features:
        f = ogr.Feature(lyr.GetLayerDefn())
        g = ogr.CreateGeometryFromWkt(wkt)
        g.Transform(ct)
        f.SetGeometry(g)
        if value is None:
            f.SetFieldNull(field)
        else:
            f.SetField(field, value)
        lyr.CreateFeature(f)
    ds = None
    return str(path)


GRID = Grid(_srs(32633).ExportToWkt(), 330000.0, 5822000.0, 10.0, 40, 30)


def box(x0, y0, x1, y1):
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def test_bundled_class_map_covers_osm_and_our_classes():
    cm = load_class_map()
    assert cm.path == DEFAULT_CLASS_MAP and os.path.isfile(cm.path)
    for value, key in (("residential", "residential"), ("Forest", "green_space"),
                       ("landuse=farmland", "agricultural_undeveloped"), ("meadow",
                       "agricultural_undeveloped"), ("natural=water", "water"),
                       ("leisure=park", "green_space"), ("amenity=school", "public_services"),
                       ("retail", "commercial"), ("railway", "transportation"),
                       ("industrial", "industrial"), ("3", "industrial"), (3, "industrial"),
                       ("Public services", "public_services"), ("construction", "ignore")):
        assert cm.lookup(value) == key, value


def test_unknown_values_are_listed_with_the_file_to_edit():
    cm = load_class_map()
    with pytest.raises(InputError) as err:
        cm.resolve(["forest", "moon_base", "tiefgarage"])
    msg = str(err.value)
    assert "'moon_base'" in msg and "'tiefgarage'" in msg and "forest" not in msg.split(":")[1]
    assert DEFAULT_CLASS_MAP in msg and "CLASS_MAP" in msg


def test_a_field_of_names_is_questioned_and_empty_labels_are_not_unknown(tmp_path):
    """Most values unknown (a name or id field picked by mistake): the message asks whether it
    is the field of classes. NULL or blank values are features without a label: not used, not
    'unknown'."""
    cm = load_class_map()
    with pytest.raises(InputError) as err:
        cm.resolve(["Bohnenlaender See", "Gutspark", "forest"], field="name")
    assert "'name'" in str(err.value) and "fclass" in str(err.value)
    with pytest.raises(InputError) as err:
        cm.resolve(["forest", "meadow", "moon_base"], field="fclass")
    assert "is it the field" not in str(err.value)      # one typo, not the wrong field
    path = write_labels(tmp_path / "gaps.gpkg", [
        (box(330000, 5821700, 330200, 5821900), "forest"),
        (box(330200, 5821700, 330390, 5821900), None),
        (box(330000, 5821500, 330200, 5821690), "  ")])
    ras = rasterise(read_label_file(path, "fclass"), cm, GRID, KEYS)
    assert ras.empty_features == 2 and ras.counts["green_space"] > 0
    assert sum(ras.counts.values()) == ras.counts["green_space"]


def test_own_class_map_file_and_its_errors(tmp_path):
    good = tmp_path / "zoning.csv"
    good.write_text("value,function\nWR,residential\nGE,industrial\nX,ignore\n")
    cm = load_class_map(str(good))
    assert cm.lookup("wr") == "residential" and cm.lookup("X") == "ignore"
    assert cm.lookup("forest") is None          # only the user's table (and our own names)
    bad = tmp_path / "bad.csv"
    bad.write_text("value,function\nWR,housing\n")
    with pytest.raises(InputError, match="'housing'"):
        load_class_map(str(bad))


def test_class_map_errors_name_the_file_lines(tmp_path):
    # comments and blank lines count as lines: the numbers are the ones an editor shows
    twice = tmp_path / "twice.csv"
    twice.write_text("# zoning\nvalue,function\nWR,residential\n\nwr ,industrial\n")
    with pytest.raises(InputError, match="'wr ' is mapped twice.*line 3.*line 5"):
        load_class_map(str(twice))
    same = tmp_path / "same.csv"    # the same mapping twice is harmless
    same.write_text("value,function\nWR,residential\nwr,residential\n")
    assert load_class_map(str(same)).lookup("WR") == "residential"
    typo = tmp_path / "typo.csv"
    typo.write_text("# a comment\nvalue,function\nWR,residential\n\nGE,industy\n")
    with pytest.raises(InputError, match="line 5 maps 'GE' to 'industy'"):
        load_class_map(str(typo))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("value,function\nGewässer,water\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8.*Save it as UTF-8"):
        load_class_map(str(latin))


def test_an_invalid_polygon_is_made_valid_and_counted(tmp_path):
    # a bow-tie over 200 m x 200 m: unrepaired, its edges and interior burn wrong cells
    x0, y0 = 330000.0, 5821700.0
    bowtie = (f"POLYGON(({x0} {y0},{x0 + 200} {y0 + 200},{x0 + 200} {y0},{x0} {y0 + 200},"
              f"{x0} {y0}))")
    path = write_labels(tmp_path / "bowtie.gpkg", [(bowtie, "forest"),
                                                   (box(330250, 5821750, 330350, 5821850),
                                                    "water")])
    ras = rasterise(read_label_file(path, "fclass"), load_class_map(), GRID, KEYS)
    assert ras.repaired_features == 1
    green = np.argwhere(ras.labels == KEYS.index("green_space"))
    assert len(green) > 0
    # every labelled cell lies inside one of the two triangles of the bow-tie (|dx| >= |dy|
    # from its centre), none in the notches above and below the crossing point
    cx, cy = x0 + 100, y0 + 100
    for r, c in green:
        x, y = GRID.left + (c + 0.5) * 10, GRID.top - (r + 0.5) * 10
        assert abs(x - cx) >= abs(y - cy), (r, c)
    assert 64 <= ras.counts["water"] <= 100     # the valid square is untouched


def test_polygons_label_cells_fully_inside_in_another_crs(tmp_path):
    # a 100 m x 100 m square on the 10 m grid, offset by 5 m: 9 x 9 cells fully inside
    x0, y0 = 330105.0, 5821695.0
    path = write_labels(tmp_path / "poly.gpkg", [(box(x0, y0, x0 + 100, y0 + 100), "forest")],
                        epsg=4326)
    ls = read_label_file(path, "fclass")
    assert ls.kind == "polygons" and ls.count == 1 and len(ls.sha256) == 64
    ras = rasterise(ls, load_class_map(), GRID, KEYS)
    green = KEYS.index("green_space")
    n = int((ras.labels == green).sum())
    # reprojected through WGS 84 the square stays a square to well under a cell
    assert 64 <= n <= 81, n
    assert ras.counts["green_space"] == n and (ras.labels[ras.labels != UNLABELLED] == green).all()
    # no labelled cell is cut by the polygon's edge
    rows, cols = np.nonzero(ras.labels == green)
    assert cols.min() * 10 + GRID.left >= x0 - 1 and (cols.max() + 1) * 10 + GRID.left <= x0 + 101


def test_points_label_the_cell_under_them_and_conflicts_are_dropped(tmp_path):
    pts = [("POINT(330015 5821985)", "residential"),    # cell (row 1, col 1)
           ("POINT(330205 5821905)", "water"),          # cell (9, 20)
           ("POINT(330207 5821907)", "farmland")]       # same cell, another class: conflict
    path = write_labels(tmp_path / "pts.gpkg", pts, epsg=3857)
    ls = read_label_file(path, "fclass")
    assert ls.kind == "points"
    ras = rasterise(ls, load_class_map(), GRID, KEYS)
    assert ras.labels[1, 1] == KEYS.index("residential")
    assert ras.labels[9, 20] == UNLABELLED and ras.conflict_cells == 1
    assert (ras.labels != UNLABELLED).sum() == 1


def test_ignored_values_and_wrong_field(tmp_path):
    path = write_labels(tmp_path / "l.gpkg", [(box(330000, 5821700, 330200, 5821900),
                                                "construction")])
    ras = rasterise(read_label_file(path, "fclass"), load_class_map(), GRID, KEYS)
    assert ras.ignored_features == 1 and (ras.labels == UNLABELLED).all()
    with pytest.raises(InputError, match="no field 'landuse'.*fclass"):
        read_label_file(path, "landuse")


def test_block_split_holds_out_whole_blocks_with_a_buffer():
    labels = np.full((100, 100), UNLABELLED, np.int16)
    labels[::2, ::2] = (np.arange(50)[:, None] // 10 + np.zeros(50, int)[None]) % 4
    split = split_blocks(labels, block_cells=20, buffer_cells=5, share=0.2, seed=3)
    held = split.validation != UNLABELLED
    assert held.any() and (split.train != UNLABELLED).any()
    # held-out cells come in whole 20-cell blocks
    for by in range(5):
        for bx in range(5):
            blk = held[by * 20:(by + 1) * 20, bx * 20:(bx + 1) * 20]
            lab = labels[by * 20:(by + 1) * 20, bx * 20:(bx + 1) * 20] != UNLABELLED
            assert (blk == lab).all() or not blk.any()
    # no training cell within 5 cells (Chebyshev) of a held-out cell
    ty, tx = np.nonzero(split.train != UNLABELLED)
    hy, hx = np.nonzero(held)
    d = np.maximum(np.abs(ty[:, None] - hy[None]), np.abs(tx[:, None] - hx[None])).min(axis=1)
    assert d.min() > 5
    # every class that occurs in two blocks or more is validated
    assert set(np.unique(split.validation[held])) == set(np.unique(labels[labels >= 0]))
    share = held.sum() / (labels != UNLABELLED).sum()
    assert 0.15 <= share <= 0.45
    again = split_blocks(labels, 20, 5, 0.2, seed=3)
    assert (again.validation == split.validation).all()     # seeded


def test_training_windows_equal_the_inference_feeds(sample_city):
    """One data path: windows cut from the training arrays are what the engine's FeedReader
    feeds the network for the same cells."""
    from plugin.core.feeds import FeedReader
    from plugin.core.grid import plan_grid
    from plugin.core.model_card import parse_card, read_card
    from plugin.learning.grid_feeds import read_grid_feeds
    from plugin.learning.user_training import BASE_DEFAULT, training_card
    inputs = {m: p for m, p in sample_city.inputs.items() if m in ("vhr", "ntl", "s2_summer")}
    card = parse_card(training_card(read_card(BASE_DEFAULT), set(inputs)))
    grid = plan_grid(card, inputs)
    feeds = read_grid_feeds(card, inputs, grid, tile=64)
    assert set(feeds.arrays) == {"vhr", "ntl", "s2_summer"}
    with FeedReader(card, inputs, grid) as reader:
        for col, row, w, h in ((0, 0, 64, 64), (40, 72, 48, 32), (grid.width - 56, 8, 56, 96)):
            feed, _ = reader.read(col, row, w, h)
            win, mask = feeds.window(col, row, w, h)
            for name, arr in win.items():
                assert np.array_equal(arr, feed[name][0]), (name, col, row)
            assert np.array_equal(mask, feed[card.mask_input][0])


def test_without_torch_training_says_how_to_install_it_and_classify_still_works(
        sample_city, tmp_path):
    """Torch is only for training: with it missing (blocked in a fresh interpreter), training
    stops with a clear message and classify runs as before."""
    import subprocess
    import sys
    script = f"""
import sys
sys.modules["torch"] = None          # as if PyTorch were not installed
sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.errors import ModelError
from plugin.learning.labels import LabelSet
from plugin.learning.user_training import TrainRequest, run_training
labels = LabelSet("l", "", [(b"", "forest")], "f", "0" * 64)
try:
    run_training(TrainRequest(inputs={{"s2_summer": {sample_city.inputs['s2_summer']!r}}},
                              labels=labels, output_path={str(tmp_path / 'm.onnx')!r}))
except ModelError as exc:
    print("TRAIN:", exc)
res = run_classification(ClassifyRequest(
    inputs={{"s2_summer": {sample_city.inputs['s2_summer']!r}}},
    model_path={os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'models', 'sample_city_fusion.onnx')!r},
    output_path={str(tmp_path / 'map.tif')!r}))
print("CLASSIFY:", res.output_path, "torch" in sys.modules and sys.modules["torch"] is None)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TRAIN: Training needs PyTorch" in out.stdout
    assert "Install dependencies" in out.stdout and "Also PyTorch" in out.stdout
    assert "Classify works without it" in out.stdout
    assert f"CLASSIFY: {tmp_path / 'map.tif'} True" in out.stdout
    assert not (tmp_path / "m.onnx").exists()


def test_switched_off_classes_get_probability_zero_and_the_rest_is_unchanged():
    """Classes the training labels never showed are switched off in the exported model: the
    others keep their relative probabilities (renormalised), whatever the network says."""
    torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")
    from plugin.learning.fusion.subset import SubsetFusionModel
    from plugin.learning.fusion.net import UrbanFusionNet
    from plugin.learning.user_export import example_inputs
    torch.manual_seed(0)
    net = UrbanFusionNet().eval()
    on = SubsetFusionModel(net, ("s2_summer",)).eval()
    off = SubsetFusionModel(net, ("s2_summer",), off_classes=(1, 4)).eval()
    x = example_inputs(on, 1, 16, 16, seed=3)
    with torch.no_grad():
        p_on, p_off = on(*x)[0], off(*x)[0]
    assert float(p_off[:, [1, 4]].max()) == 0.0
    assert torch.allclose(p_off.sum(1), torch.ones_like(p_off.sum(1)), atol=1e-5)
    kept = [0, 2, 3, 5, 6, 7]
    expected = p_on[:, kept] / p_on[:, kept].sum(1, keepdim=True)
    assert torch.allclose(p_off[:, kept], expected, atol=1e-5)
    with pytest.raises(ValueError):
        SubsetFusionModel(net, ("s2_summer",), off_classes=range(8))


def test_the_split_must_train_two_classes_and_validate_a_trained_one():
    """One class left for training is refused; held-out ground holding only classes training
    never sees is refused (its figures would measure nothing learnt, OA 0); a class partly
    lost to the hold-out is named in a warning."""
    from plugin.learning.blocks import BlockSplit
    from plugin.learning.user_training import check_split_classes, holds_up
    res, water, green, farm = (KEYS.index(k) for k in ("residential", "water", "green_space",
                                                        "agricultural_undeveloped"))

    def split(train_classes, held_classes):
        train = np.full((4, 8), UNLABELLED, np.int16)
        held = np.full((4, 8), UNLABELLED, np.int16)
        for i, c in enumerate(train_classes):
            train[0, i] = c
        for i, c in enumerate(held_classes):
            held[3, i] = c
        return BlockSplit(train, held, 4, 1, 2, 1, 0)

    said = []
    with pytest.raises(InputError, match=r"Only one class has training cells \(water\).*"
                                         "green_space all lie in the held-out blocks"):
        check_split_classes(split([water], [green]), None, said.append)
    with pytest.raises(InputError, match="hold only green_space, which training never sees"):
        check_split_classes(split([water, farm], [green]), None, said.append)
    assert not said
    check_split_classes(split([water, farm], [green, water]), None, said.append)
    assert len(said) == 1 and said[0].startswith("Warning: every label of green_space")
    check_split_classes(split([water, res], [water, res]), None, said.append)
    assert len(said) == 1
    # a model that is right nowhere never holds up, even against a comparison as bad
    zero = {"overall_accuracy": 0.0}
    assert not holds_up(zero, {"untrained_base": zero})
    assert not holds_up({"overall_accuracy": 0.9}, {})            # compared with nothing
    assert holds_up({"overall_accuracy": 0.9}, {"random_forest": {"overall_accuracy": 0.9}})

"""Small georeferenced test rasters in different CRSs (real GeoTIFFs written with GDAL)."""
import numpy as np
from osgeo import gdal, osr

X0, Y0 = 370000.0, 5806000.0  # UTM 33N, near Potsdam


def write_raster(path, arr, epsg, geotransform, dtype, nodata=None, descriptions=None):
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    b, h, w = arr.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, b, dtype, ["TILED=YES"])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform(geotransform)
    for i in range(b):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[i])
    ds = None
    return str(path)


def make_scene(folder, size_m=800, seed=0, vhr_bands=3):
    """VHR (EPSG:25833, 0.8 m), S2 (EPSG:32633, 10 m, offset grid) and NTL (EPSG:4326)."""
    rng = np.random.default_rng(seed)
    n = int(size_m / 0.8)
    vhr = rng.integers(1, 255, (vhr_bands, n, n)).astype(np.uint8)
    s2n = int(size_m / 10) + 10
    s2 = rng.integers(1, 4000, (10, s2n, s2n)).astype(np.uint16)
    ntl = (rng.random((1, 20, 25)) * 50).astype(np.float32)
    return {
        "vhr": write_raster(f"{folder}/vhr.tif", vhr, 25833, (X0, 0.8, 0, Y0, 0, -0.8), gdal.GDT_Byte, 0),
        "s2_summer": write_raster(f"{folder}/s2.tif", s2, 32633, (X0 - 45, 10, 0, Y0 + 55, 0, -10),
                                  gdal.GDT_UInt16, 0),
        "ntl": write_raster(f"{folder}/ntl.tif", ntl, 4326, (13.08, 0.001, 0, 52.395, 0, -0.001),
                            gdal.GDT_Float32),
    }


def read(path, band=1):
    ds = gdal.Open(str(path))
    try:
        return ds.GetRasterBand(band).ReadAsArray()
    finally:
        ds = None

"""Map validation (pure Python: numpy + GDAL/OGR; never imports qgis, Qt, torch or scipy).

Good practice after Olofsson et al. (2014), "Good practices for estimating area and assessing
accuracy of land change", Remote Sensing of Environment 148:42-57, with the general stratified
estimators of Stehman (2014), "Estimating area and map accuracy for stratified random sampling
when the strata are different from the map classes", Int. J. Remote Sensing 35:4923-4939.

* :mod:`.sample_size` -- sample size for a target standard error of overall accuracy and the
  allocation of a sample to strata (proportional, equal, Neyman, with a minimum per stratum).
* :mod:`.sampling` -- stratified random, simple random and systematic samples drawn from per-class
  pixel counts (two block-wise passes over the raster, no rejection over the extent).
* :mod:`.accuracy` -- error matrix, area-proportion matrix, overall / user's / producer's accuracy
  and area estimates with standard errors and confidence intervals.
* :mod:`.report` -- self-contained HTML report (inline SVG), CSV and JSON.
* :mod:`.labelling` -- automatic labelling from a reference raster (tests, demos) and reading /
  writing point files with OGR.
"""
from .accuracy import Assessment, assess  # noqa: F401
from .sample_size import allocate, expected_oa_se, sample_size_for_oa  # noqa: F401
from .sampling import ALLOCATIONS, DESIGNS, SamplePoint, SampleResult, draw_sample  # noqa: F401
